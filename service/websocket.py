"""``/ws``: several tasks' streams (or the tenant's) on one WebSocket, plus commands.

Same streams as SSE (``service.streams.follow``): the same event ids and resume rules, and
the same token frames. JSON text messages, one per WebSocket message.

Client → server (``ref``, any JSON value, is echoed in the reply):

* ``{"op": "subscribe", "task_id": ID, "last_event_id"?: seq, "tokens"?: {stream: [attempt,
  offset]}}`` — one task's events after ``last_event_id`` (default: all of them), with its
  token frames (the texts so far from offset 0, or from the token cursor);
  ``{"op": "subscribe", "tenant": true, "last_event_id"?: tenant_seq}`` — every task of the
  caller (default: from now).
* ``{"op": "unsubscribe", "task_id": ID}`` / ``{"op": "unsubscribe", "tenant": true}``
* ``{"op": "cancel", "task_id": ID}`` — as ``POST /tasks/{id}/cancel``.
* ``{"op": "signal", "task_id": ID, "name": NAME, "payload"?: JSON}`` — as
  ``POST /tasks/{id}/signals/{name}``.

Server → client (``sub`` is the task id, or ``"*"`` for the tenant stream):

* ``{"kind": "subscribed", "sub", "ref"}``
* ``{"kind": "event", "sub", "id", "event": {...}}`` — ``id`` as the SSE ``id:`` (the task's
  ``seq``, or the tenant's ``tenant_seq``); ``event`` is the SSE ``data:``.
* ``{"kind": "token", "sub", "frame": {"task_id", "stream", "attempt", "offset", "delta"}}``
* ``{"kind": "end", "sub", "reason"}`` — ``terminal``: the task finished and everything was
  sent; ``closed``: the server ended the stream (overflow, lifetime, outage, shutdown):
  subscribe again with ``last_event_id`` (and the token cursor) to resume.
* ``{"kind": "result", "op", "ref", ...}`` / ``{"kind": "error", "op", "ref", "error",
  "detail"}`` — the codes of the HTTP API's errors.

Authentication as the streams: ``Authorization: Bearer <key>``, or for a browser
``?ticket=`` from ``POST /stream-tickets``. A ticket is read-only (subscribe/unsubscribe), for
its task or, with ``"*"``, for every task of its tenant; commands need a key.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from service import signals, tasks
from service.auth import ANONYMOUS, verify_key
from service.deps import Resources
from service.errors import ApiError, BadRequest, Forbidden, TooManyRequests, Unavailable
from service.hub import HubUnavailable
from service.streams import Flush, StreamSpec, follow
from taskstream.core import auth
from taskstream.core.auth import KeyRole, Principal
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.events import Event, IdField
from taskstream.core.live import TOKEN_EVENT, TokenFrame

log = logging.getLogger(__name__)

TENANT: Final = "*"
MAX_SUBSCRIPTIONS: Final = 100  # per connection

#: (res, owner, task_id, cursor, tokens) -> spec or None (finished, nothing to send);
#: (res, owner, cursor or None) -> spec. Given by the routes module (the SSE routes' own).
TaskSpec = Callable[[Resources, str, str, int, str | None], Awaitable[StreamSpec | None]]
TenantSpec = Callable[[Resources, str, int | None], Awaitable[StreamSpec]]


class Connection:
    def __init__(self, ws: WebSocket, res: Resources, principal: Principal,
                 ticket_scope: str | None, task_spec: TaskSpec,
                 tenant_spec: TenantSpec) -> None:
        self.ws = ws
        self.res = res
        self.principal = principal
        self.ticket_scope = ticket_scope  # None: a key (or auth off); else read-only
        self._task_spec = task_spec
        self._tenant_spec = tenant_spec
        self._subs: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self.closed = False

    @property
    def owner(self) -> str:
        return self.principal.tenant

    async def send(self, text: str) -> None:
        if self.closed:
            return
        timeout = self.res.settings.stream_send_timeout or None
        async with self._send_lock:
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send_text(text)
            except TimeoutError:
                log.warning("WebSocket client stopped reading for %ss; closing", timeout)
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.ws.close(code=1008, reason="not reading")
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def reply(self, kind: str, op: str | None, ref: Any, **fields: Any) -> None:
        await self.send(orjson.dumps({"kind": kind, "op": op, "ref": ref, **fields}).decode())

    async def run(self) -> None:
        try:
            while not self.closed:
                try:
                    raw = await self.ws.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    return
                await self.command(raw)
        finally:
            self.closed = True
            for t in list(self._subs.values()):
                t.cancel()
            for t in list(self._subs.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def command(self, raw: str) -> None:
        op: str | None = None
        ref: Any = None
        try:
            if len(raw) > self.res.settings.max_json_bytes:
                raise BadRequest("message too large")
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadRequest("a message is one JSON object") from None
            if not isinstance(msg, dict):
                raise BadRequest("a message is one JSON object")
            ref = msg.get("ref")
            op = msg.get("op")
            if op == "subscribe":
                await self.subscribe(msg, ref)
            elif op == "unsubscribe":
                sub = self._sub_id(msg)
                t = self._subs.pop(sub, None)
                if t is not None:
                    t.cancel()
                await self.reply("result", op, ref, sub=sub, subscribed=False)
            elif op == "cancel":
                self._may_write()
                task = await tasks.cancel(self.res, self.owner, _task_id(msg))
                await self.reply("result", op, ref, task=tasks.task_json(task))
            elif op == "signal":
                self._may_write()
                name = msg.get("name")
                if not isinstance(name, str):
                    raise BadRequest("signal needs a name")
                sent = await signals.send_signal(self.res, self.owner, _task_id(msg), name,
                                                 msg.get("payload"))
                await self.reply("result", op, ref, task_id=sent.task_id, name=sent.name,
                                 resumed=sent.resumed)
            else:
                raise BadRequest("op must be subscribe, unsubscribe, cancel or signal")
        except ApiError as exc:
            await self.reply("error", op if isinstance(op, str) else None, ref,
                             error=str(exc.code), detail=exc.detail)
        except TRANSIENT_DB_ERRORS:
            await self.reply("error", op if isinstance(op, str) else None, ref,
                             error="unavailable", detail="database briefly unavailable; retry")

    def _may_write(self) -> None:
        if self.ticket_scope is not None:
            raise Forbidden("a stream ticket only reads; send an API key to give commands")

    def _sub_id(self, msg: dict[str, Any]) -> str:
        if msg.get("tenant") is True:
            return TENANT
        return _task_id(msg)

    async def subscribe(self, msg: dict[str, Any], ref: Any) -> None:
        sub = self._sub_id(msg)
        if self.ticket_scope is not None and self.ticket_scope not in (TENANT, sub):
            raise Forbidden("this ticket is for another task")
        cursor = msg.get("last_event_id")
        if cursor is not None and (not isinstance(cursor, int) or isinstance(cursor, bool)
                                   or not 0 <= cursor < 2**62):
            raise BadRequest("last_event_id must be an event sequence number")
        tokens = msg.get("tokens")
        if tokens is not None and not isinstance(tokens, dict):
            raise BadRequest("tokens must be an object {stream: [attempt, offset]}")
        if sub not in self._subs and len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise TooManyRequests(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        if not self.res.hub.connected:
            raise Unavailable("live updates are briefly unavailable; retry")
        if sub == TENANT:
            spec: StreamSpec | None = await self._tenant_spec(self.res, self.owner, cursor)
            id_field = IdField.TENANT_SEQ
        else:
            spec = await self._task_spec(self.res, self.owner, sub, cursor or 0,
                                         orjson.dumps(tokens).decode() if tokens else None)
            id_field = IdField.SEQ
        self.res.streams.check(self.owner)
        old = self._subs.pop(sub, None)
        if old is not None:
            old.cancel()
        await self.reply("subscribed", "subscribe", ref, sub=sub)
        if spec is None:
            await self.send(_end(sub, "terminal"))
            return
        self._subs[sub] = asyncio.create_task(self._pump(sub, spec, id_field))

    async def _pump(self, sub: str, spec: StreamSpec, id_field: IdField) -> None:
        prefix_event = f'{{"kind":"event","sub":{_q(sub)},"id":'
        prefix_token = f'{{"kind":"{TOKEN_EVENT}","sub":{_q(sub)},"frame":'
        reason = "closed"
        try:
            with self.res.streams.hold(self.owner):
                async for item in follow(self.res.hub, spec):
                    if item is None or isinstance(item, Flush) or self.closed:
                        continue
                    if isinstance(item, TokenFrame):
                        await self.send(prefix_token + item.encode() + "}")
                        continue
                    ev: Event = item
                    await self.send(f'{prefix_event}{ev.position(id_field)},"event":'
                                    f'{ev.encode()}}}')
                    if spec.ends_with(ev):
                        reason = "terminal"
        except HubUnavailable:
            pass  # end: the client subscribes again and resumes
        except TRANSIENT_DB_ERRORS:
            pass
        except asyncio.CancelledError:
            return  # unsubscribed, or the connection ended
        if self._subs.get(sub) is asyncio.current_task():
            del self._subs[sub]
        await self.send(_end(sub, reason))


def _q(s: str) -> str:
    return orjson.dumps(s).decode()


def _end(sub: str, reason: str) -> str:
    return orjson.dumps({"kind": "end", "sub": sub, "reason": reason}).decode()


def _task_id(msg: dict[str, Any]) -> str:
    task_id = msg.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise BadRequest("task_id must be a task id")
    return task_id


async def authenticate(ws: WebSocket, res: Resources) -> tuple[Principal, str | None] | None:
    """The caller (and a ticket's scope), or None after refusing the handshake with 401."""
    if not res.settings.auth:
        return ANONYMOUS, None
    header = ws.headers.get("authorization", "")
    ticket = ws.query_params.get("ticket")
    try:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise BadRequest("send an API key as 'Authorization: Bearer <key>'")
            return await verify_key(res, token.strip()), None
        if ticket:
            claims = auth.verify_ticket(res.signing_key, ticket)
            if claims is None:
                raise BadRequest("invalid or expired stream ticket; mint a new one")
            return Principal(claims[0], KeyRole.USER), claims[1]
        raise BadRequest("send an API key as 'Authorization: Bearer <key>' or a ?ticket=")
    except ApiError as exc:
        await _deny(ws, 401, "unauthorized", exc.detail)
        return None


async def _deny(ws: WebSocket, status: int, code: str, detail: str) -> None:
    if ws.application_state == WebSocketState.CONNECTING:
        try:
            await ws.send_denial_response(JSONResponse({"error": code, "detail": detail},
                                                       status_code=status))
            return
        except RuntimeError:  # the server has no denial-response extension
            pass
    await ws.close(code=4000 + status, reason=detail[:120])
