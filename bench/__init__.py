"""Benchmarks: Taskstream against raw arq, Celery, one-by-one writes and the seed's polling.

Run ``python -m bench --quick`` (a few minutes) or ``python -m bench --full``; see
``bench/README.md``. This package imports nothing at import time, so the Celery peer can run
``python -m bench.celery_peer`` from its own virtualenv (``bench.celery_env``).
"""
