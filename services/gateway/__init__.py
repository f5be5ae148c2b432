"""The HTTP gateway (aiohttp): the REST API on port 5001, as one NATS client among others."""
