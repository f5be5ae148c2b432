"""Runtime every service shares: settings from env, NATS connection, logging, lifecycle, presence."""
