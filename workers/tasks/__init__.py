"""workers.tasks."""
