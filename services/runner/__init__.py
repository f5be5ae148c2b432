"""The runner: pulls due runs and executes them (HTTP requests, Docker sandboxes); scales out."""
