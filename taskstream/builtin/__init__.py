"""The built-in task types, declared through the public API like any user's package:
``demo`` and ``noop`` (``demo.py``) and ``document_process`` (``documents.py``).

Importing this package declares them; the service loads it unless
``TASKSTREAM_BUILTIN_TASKS=false``.
"""

from taskstream.builtin import demo, documents

__all__ = ["demo", "documents"]
