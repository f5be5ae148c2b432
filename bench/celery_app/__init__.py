"""The Celery + Redis + Beat baseline: task code, Beat scheduler and load driver (run in the Celery venv)."""
