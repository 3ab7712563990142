"""Celery workers: the app factory, queues, thin tasks, per-process runtime and Slack delivery.

Importing this package is cheap: heavy modules (tasks, runtime) are imported by the
worker entry point only, so the bot can use :mod:`workers.client` alone.
"""
