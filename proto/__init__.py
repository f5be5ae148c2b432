"""The Taskmesh contract: every message, subject, stream, consumer and bucket. No I/O here."""
