"""The built-in task types, declared through the public API like any user's package:
``demo`` and ``noop`` (``demo.py``), ``document_process`` (``documents.py``), ``reindex``
(``reindex.py``), and the language-model tasks ``summarize`` (``summarize.py``) and
``agent`` (``agent.py``), whose models live in ``llm/``.

Importing this package declares them; the service loads it unless
``TASKSTREAM_BUILTIN_TASKS=false``.
"""

from taskstream.builtin import agent, demo, documents, reindex, summarize

__all__ = ["agent", "demo", "documents", "reindex", "summarize"]
