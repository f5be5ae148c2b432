"""Operator commands run by hand with the NATS admin user (``python -m services.admin.<command>``)."""
