"""Language models for the built-in ``summarize`` and ``agent`` tasks.

One setting picks the provider (``TASKSTREAM_LLM_PROVIDER``, see ``core.settings``):

* ``openai`` — any OpenAI-compatible chat-completions server, streaming (``openai.py``);
* ``local`` — SmolLM2-135M-Instruct in this process via llama.cpp, offline (``local.py``;
  the ``local-llm`` extra);
* ``extractive`` — not a model: an extractive summarizer, the honest offline default
  (``extractive.py``);
* ``auto`` (default) — ``openai`` when ``TASKSTREAM_LLM_BASE_URL`` is set, else ``local``
  when the extra is installed, else ``extractive``.

A worker builds its provider once (``shared_llm``) and keeps it: the HTTP connection pool,
or the loaded model, serves every task. Nothing here is imported by the web process.
"""

from __future__ import annotations

from typing import Any

from taskstream.builtin.llm.base import (
    LLM,
    Completion,
    LLMError,
    LLMRequestError,
    LLMStreamCut,
    LLMUnavailable,
    Message,
    Usage,
    complete,
)

__all__ = ["LLM", "Completion", "LLMError", "LLMRequestError", "LLMStreamCut",
           "LLMUnavailable", "Message", "Usage", "complete", "make_llm", "resolve_provider",
           "shared_llm"]


def resolve_provider(settings: Any) -> str:
    """What ``llm_provider`` means on this machine ("auto" resolved)."""
    choice: str = settings.llm_provider
    if choice != "auto":
        return choice
    if settings.llm_base_url:
        return "openai"
    from taskstream.builtin.llm import local

    return "local" if local.available() else "extractive"


def make_llm(settings: Any) -> LLM:
    """A new provider as the settings say (the caller closes it)."""
    provider = resolve_provider(settings)
    if provider == "openai":
        if not settings.llm_base_url:
            raise LLMRequestError("TASKSTREAM_LLM_PROVIDER=openai needs TASKSTREAM_LLM_BASE_URL")
        from taskstream.builtin.llm.openai import OpenAICompatible

        return OpenAICompatible(
            settings.llm_base_url, settings.llm_model, settings.llm_api_key,
            connect_timeout=settings.llm_connect_timeout,
            read_timeout=settings.llm_read_timeout, max_retries=settings.llm_max_retries,
            backoff=settings.llm_retry_backoff, max_wait=settings.llm_retry_max_wait)
    if provider == "local":
        from taskstream.builtin.llm.local import LocalLlama

        return LocalLlama(settings.llm_local_model_path or None,
                          threads=settings.llm_local_threads)
    from taskstream.builtin.llm.extractive import ExtractiveSummarizer

    return ExtractiveSummarizer()


_SHARED: dict[tuple[Any, ...], LLM] = {}


def shared_llm(settings: Any) -> LLM:
    """This process's provider for these settings, built on first use and kept."""
    key = (settings.llm_provider, settings.llm_base_url, settings.llm_model,
           settings.llm_api_key, settings.llm_local_model_path)
    llm = _SHARED.get(key)
    if llm is None:
        llm = _SHARED[key] = make_llm(settings)
    return llm
