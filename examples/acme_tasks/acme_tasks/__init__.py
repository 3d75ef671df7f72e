"""Example task types for Taskstream; the declarations are in ``acme_tasks.tasks``."""
