"""The four Taskmesh services (gateway, scheduler, runner, store) and their shared runtime."""

VERSION = "0.1.0"
