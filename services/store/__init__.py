"""The store: sole writer of the tasks, runs and logs buckets; answers every query over NATS."""
