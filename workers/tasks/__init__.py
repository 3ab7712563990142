"""Celery tasks, one module per family (answer, ingest, uploads, refresh); each registers
its tasks on the app with ``register(app, settings)``."""
