"""The built-in task types, declared through the public API like any user's package:
``demo`` and ``noop`` (``demo.py``), ``document_process`` (``documents.py``) and ``reindex``
(``reindex.py``).

Importing this package declares them; the service loads it unless
``TASKSTREAM_BUILTIN_TASKS=false``.
"""

from taskstream.builtin import demo, documents, reindex

__all__ = ["demo", "documents", "reindex"]
