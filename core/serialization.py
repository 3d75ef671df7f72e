"""arq job (de)serializers: msgpack, never pickle (arq's default would execute a crafted job)."""

from typing import Any

import msgpack


def serialize(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, datetime=True, default=_default)  # type: ignore[no-any-return]


def deserialize(raw: bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw, timestamp=3, strict_map_key=False)  # type: ignore[no-any-return]


def _default(obj: object) -> object:
    # arq puts only primitives in a job; anything else (an exception it tries to keep as a
    # result) is stored as its text rather than failing the worker.
    return repr(obj)
