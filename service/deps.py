"""Per-process resources, owned by the lifespan, handed to routes as ``Annotated`` aliases."""

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from arq.connections import ArqRedis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from service.hub import Hub
from service.limits import StreamSlots
from service.submissions import Submissions
from taskstream.core.auth import KeyCache
from taskstream.core.eventlog import EventLog
from taskstream.core.settings import Settings
from taskstream.core.tasktypes import Catalogue


@dataclass(slots=True)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    arq: ArqRedis
    hub: Hub
    eventlog: EventLog
    keys: KeyCache
    streams: StreamSlots
    submissions: Submissions
    engine: AsyncEngine  # the SQLModel read side (core.store_read)
    catalogue: Catalogue
    signing_key: bytes = b""


async def _resources(request: Request) -> Resources:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hand-off
    # (and GIL contention) on every request for one attribute read.
    res: Resources = request.app.state.resources
    return res


Res = Annotated[Resources, Depends(_resources)]
