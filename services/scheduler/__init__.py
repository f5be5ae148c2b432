"""The scheduler: decides when runs are due (immediate, delayed, cron, retries); one leader at a time."""
