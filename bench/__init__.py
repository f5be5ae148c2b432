"""Benchmarks: the same workloads against Taskmesh and Celery + Redis + Beat, in one run (``python -m bench``).

Nothing here is imported at package import time: ``bench.celery_app`` runs in the Celery venv,
which has none of the project's dependencies.
"""
