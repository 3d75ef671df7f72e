"""What the two fast-path ASGI layers (``service.fast_submit``, ``service.fast_stream``)
share: how they hand a request to its FastAPI route, and the process's resources.

Each layer answers its route's usual request with the route's own steps; anything else —
something the route would judge, a refusal, a backend briefly away — raises ``Delegate``
(or one of ``DELEGATE``), and the route answers it, so its answers stay the route's."""

from starlette.types import Scope

from service.deps import Resources
from service.errors import BACKEND_DOWN, ApiError


class Delegate(Exception):
    """Not the usual request: the FastAPI route answers it."""


#: Raised by a fast path's steps: the route answers instead (its 4xx, its 503).
DELEGATE: tuple[type[Exception], ...] = (Delegate, ApiError, *BACKEND_DOWN)


def resources(scope: Scope) -> Resources | None:
    """The process's resources (None before the lifespan has opened them)."""
    res: Resources | None = getattr(scope["app"].state, "resources", None)
    return res
