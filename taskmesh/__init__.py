"""The ``taskmesh`` command: local mode and a client for the gateway's API."""
