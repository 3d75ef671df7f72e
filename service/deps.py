"""Per-process resources, owned by the lifespan, handed to routes as ``Annotated`` aliases."""

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request

from core.constants import ANONYMOUS_OWNER
from core.eventlog import EventLog
from core.settings import Settings
from service.hub import Hub


@dataclass(slots=True)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    arq: ArqRedis
    hub: Hub
    eventlog: EventLog


def _resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def _owner(request: Request) -> str:
    """The caller's tenant. Authentication (API keys) replaces this in the security work."""
    return ANONYMOUS_OWNER


Res = Annotated[Resources, Depends(_resources)]
Owner = Annotated[str, Depends(_owner)]
