"""``taskstream``: submit, upload, list, show, follow, cancel and re-drive tasks from the shell.

On a terminal, following draws a live progress bar with the task's current message; piped,
it prints one plain line per event; with ``--json`` one JSON object per line (events when
following, tasks otherwise). The exit code says how a followed task ended (see ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console

from taskstream.client import render
from taskstream.client.api import AsyncClient
from taskstream.client.errors import ApiError, ServerError, TaskstreamError, TransportError
from taskstream.client.models import Event, Task

OK, FAILED, USAGE, CANCELLED, REFUSED, UNAVAILABLE = 0, 1, 2, 3, 4, 5
TIMED_OUT, INTERRUPTED = 124, 130

EXIT_CODES = f"""exit codes:
  {OK:<4} success (when following: the task completed)
  {FAILED:<4} the task failed
  {USAGE:<4} bad command line, or a file that cannot be read
  {CANCELLED:<4} the task was cancelled
  {REFUSED:<4} the service refused the request (not found, conflict, invalid params, auth)
  {UNAVAILABLE:<4} the service is unreachable or failing
  {TIMED_OUT:<4} --timeout elapsed before the task finished
  {INTERRUPTED:<4} interrupted (Ctrl-C): the task keeps running unless --cancel-on-interrupt

environment: TASKSTREAM_URL (default http://127.0.0.1:8000), TASKSTREAM_API_KEY"""

BY_STATUS = {"completed": OK, "failed": FAILED, "cancelled": CANCELLED}


@dataclass
class Session:
    """What the Ctrl-C handler needs to know: the tasks being followed, not yet finished."""

    url: str | None = None
    api_key: str | None = None
    unfinished: list[str] = field(default_factory=list)


def parse_params(pairs: Sequence[str], base: str | None) -> dict[str, Any]:
    """``--params '{json}'`` then each ``--param key=value``; a value is read as JSON when it
    parses (``5``, ``true``, ``[1,2]``, ``"5"``), else taken as a string."""
    params: dict[str, Any] = {}
    if base:
        loaded = json.loads(base)
        if not isinstance(loaded, dict):
            raise ValueError("--params must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--param wants key=value, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="service URL (default: $TASKSTREAM_URL or http://127.0.0.1:8000)")
    common.add_argument("--api-key", default=argparse.SUPPRESS,
                        help="API key (default: $TASKSTREAM_API_KEY)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON, one object per line")

    following = argparse.ArgumentParser(add_help=False)
    following.add_argument("--cancel-on-interrupt", action="store_true",
                           help="on Ctrl-C, cancel the task instead of leaving it running")
    following.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                           help="stop following after this long (exit 124)")

    parser = argparse.ArgumentParser(
        prog="taskstream", parents=[common], description=__doc__,
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                              parents=[common, *parents],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("submit", "start a task of a registered type", following)
    p.add_argument("type", help="a task type (see `taskstream types`)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter; VALUE is JSON when it parses, else a string")
    p.add_argument("--params", metavar="JSON", help="all parameters as one JSON object")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="submitting again with the same key returns the same task")
    p.add_argument("--max-attempts", type=int, metavar="N",
                   help="override the type's retry budget")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="hard time limit: the task is stopped and fails")
    p.add_argument("--soft-time-limit", type=float, metavar="SECONDS",
                   help="soft time limit: the task's code is told to wrap up")
    p.add_argument("--priority", choices=["high", "normal", "low"],
                   help="override the type's priority")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, metavar="SECONDS", help="start no sooner")
    when.add_argument("--run-at", type=datetime.fromisoformat, metavar="ISO8601",
                      help="start no sooner than this time (with its UTC offset)")
    p.add_argument("-f", "--follow", action="store_true", help="follow it to the end")

    p = add("upload", "upload files: one starts a document_process task, several one batch "
            "of them (one bar, a line per finished file)", following)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-f", "--follow", action="store_true", help="follow them to the end")
    p.add_argument("--policy", choices=("all", "any"), default="all",
                   help="several files: the batch fails if all fail (default) or any")

    p = add("tasks", "list your tasks, newest first")
    p.add_argument("-s", "--status", action="append", default=[],
                   help="only these statuses (repeatable, or comma-separated)")
    p.add_argument("-t", "--type", action="append", default=[], help="only these types")
    p.add_argument("-n", "--limit", type=int, default=20, help="at most this many (default 20)")

    p = add("show", "show one task")
    p.add_argument("task_id")

    p = add("tail", "show a task's events so far, then follow it to the end", following)
    p.add_argument("task_id")

    p = add("cancel", "cancel a task (a running one stops shortly after)")
    p.add_argument("task_id")

    p = add("retry", "re-drive a failed or cancelled task", following)
    p.add_argument("task_id")
    p.add_argument("-f", "--follow", action="store_true", help="follow it to the end")

    add("types", "list the task types and their parameters")
    return parser


async def follow(ts: AsyncClient, session: Session, view: render.EventView,
                 starts: dict[str, int | None], limit: float | None) -> int:
    """Show each task's events to its end; the exit code of the worst ending.

    ``starts[task_id]`` is where to begin: an event position, or ``None`` for the recorded
    history first (read in full, so a re-driven task's earlier endings don't stop us).
    """
    endings: dict[str, str] = {}
    session.unfinished = list(starts)

    async def one(tid: str, after: int | None) -> None:
        if after is None:
            after = 0
            last: Event | None = None
            async for event in ts.history(tid):
                view.event(event)
                last = event
            if last is not None:
                after = last.seq
                if last.terminal:
                    endings[tid] = last.status
        if tid not in endings:
            async with ts.events(tid, after=after) as stream:
                async for event in stream:
                    view.event(event)
                    if event.terminal:
                        endings[tid] = event.status
        if tid not in endings:  # the stream said there was nothing more: ask
            endings[tid] = (await ts.get(tid)).status
        session.unfinished.remove(tid)

    with view:
        try:
            async with asyncio.timeout(limit), asyncio.TaskGroup() as group:
                for tid, after in starts.items():
                    group.create_task(one(tid, after))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        except TimeoutError:
            ids = " ".join(session.unfinished)
            warn(f"stopped following after {limit:g}s; still running: {ids}")
            return TIMED_OUT
    codes = [BY_STATUS.get(status, UNAVAILABLE) for status in endings.values()]
    return FAILED if FAILED in codes else max(codes, default=OK)


async def follow_batch(ts: AsyncClient, session: Session, view: render.BatchView,
                       batch_id: str, names: dict[str, str], limit: float | None) -> int:
    """One view of the whole batch, a line per child as it ends; the batch's exit code."""
    session.unfinished = [batch_id]
    status = ""
    with view:
        try:
            async with asyncio.timeout(limit):
                async for state in ts.follow_batch(batch_id):
                    for end in state.finished:
                        view.finished(await ts.get(end.task_id),
                                      names.get(end.task_id, end.task_id))
                    view.update(state)
                    status = state.status
        except TimeoutError:
            warn(f"stopped following after {limit:g}s; still running: {batch_id}")
            return TIMED_OUT
    session.unfinished = []
    return BY_STATUS.get(status or (await ts.get(batch_id)).status, UNAVAILABLE)


def warn(message: str) -> None:
    sys.stderr.write(f"taskstream: {message}\n")
    sys.stderr.flush()


async def run(args: argparse.Namespace, mode: render.Mode, console: Console,
              session: Session) -> int:
    async with AsyncClient(session.url, api_key=session.api_key) as ts:
        cmd = args.command
        if cmd == "submit":
            try:
                params = parse_params(args.param, args.params)
            except ValueError as exc:
                warn(str(exc))
                return USAGE
            task = await ts.submit(args.type, params, idempotency_key=args.idempotency_key,
                                   max_attempts=args.max_attempts, time_limit=args.time_limit,
                                   soft_time_limit=args.soft_time_limit,
                                   priority=args.priority, run_at=args.run_at,
                                   delay=args.delay)
            if not args.follow:
                render.accepted(task, mode, console, "submitted")
                return OK
            if mode == "rich":
                render.accepted(task, mode, console, "submitted")
            return await follow(ts, session, render.event_view(mode, console),
                                {task.task_id: 0}, args.timeout)
        if cmd == "upload" and len(args.files) > 1:
            try:
                batch = await ts.upload_many(args.files, policy=args.policy)
            except OSError as exc:
                warn(f"cannot read {exc.filename or ''}: {exc.strerror or exc}")
                return USAGE
            if not args.follow or mode == "rich":
                render.batch_accepted(batch, mode, console)
            if not args.follow:
                return OK
            names = {c.task_id: c.filename for c in batch.children}
            return await follow_batch(
                ts, session, render.batch_view(mode, console, f"{len(names)} files"),
                batch.task_id, names, args.timeout)
        if cmd == "upload":
            starts: dict[str, int | None] = {}
            for path in args.files:
                try:
                    up = await ts.upload(path)
                except OSError as exc:
                    warn(f"cannot read {path}: {exc.strerror or exc}")
                    return USAGE
                starts[up.task_id] = 0
                if not args.follow or mode == "rich":
                    render.accepted(up, mode, console, "uploaded")
            if not args.follow:
                return OK
            return await follow(ts, session, render.event_view(mode, console), starts,
                                args.timeout)
        if cmd == "tasks":
            statuses = [s for arg in args.status for s in arg.split(",") if s]
            tasks: list[Task] = []
            if args.limit > 0:
                async for t in ts.list_tasks(status=statuses, type=args.type,
                                             page_size=min(args.limit, 200)):
                    tasks.append(t)
                    if len(tasks) >= args.limit:
                        break
            render.task_list(tasks, mode, console)
            return OK
        if cmd == "show":
            render.show_task(await ts.get(args.task_id), mode, console)
            return OK
        if cmd == "tail":
            return await follow(ts, session, render.event_view(mode, console),
                                {args.task_id: None}, args.timeout)
        if cmd == "cancel":
            task = await ts.cancel(args.task_id)
            if mode == "json":
                render.out(task.model_dump_json())
            else:
                state = task.status if task.terminal else \
                    f"cancellation requested ({task.status})"
                (render.out if mode == "plain" else console.print)(f"{task.task_id}  {state}")
            return OK
        if cmd == "retry":
            task = await ts.retry(args.task_id)
            if not args.follow:
                render.accepted(task, mode, console, "re-driven")
                return OK
            if mode == "rich":
                render.accepted(task, mode, console, "re-driven")
            return await follow(ts, session, render.event_view(mode, console),
                                {task.task_id: task.last_event_id}, args.timeout)
        if cmd == "types":
            render.type_list(await ts.task_types(), mode, console)
            return OK
    raise AssertionError(cmd)


def describe(exc: TaskstreamError) -> tuple[str, int]:
    if isinstance(exc, ApiError):
        text = f"{exc.detail} (HTTP {exc.status} {exc.code})"
        if exc.retry_after is not None:
            text += f"; retry after {exc.retry_after:g}s"
        return text, UNAVAILABLE if isinstance(exc, ServerError) else REFUSED
    if isinstance(exc, TransportError):
        return str(exc), UNAVAILABLE
    return str(exc), UNAVAILABLE


async def cancel_all(session: Session) -> None:
    async with AsyncClient(session.url, api_key=session.api_key) as ts:
        for tid in session.unfinished:
            try:
                task = await ts.cancel(tid)
                warn(f"cancel requested: {tid} ({task.status})")
            except TaskstreamError as exc:
                warn(f"could not cancel {tid}: {describe(exc)[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    session = Session(url=getattr(args, "url", None), api_key=getattr(args, "api_key", None))
    console = Console(highlight=False)
    mode: render.Mode = "json" if getattr(args, "json", False) else (
        "rich" if console.is_terminal else "plain")
    try:
        return asyncio.run(run(args, mode, console, session))
    except TaskstreamError as exc:
        text, code = describe(exc)
        warn(text)
        return code
    except BrokenPipeError:  # `taskstream tail ID | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        if session.unfinished and getattr(args, "cancel_on_interrupt", False):
            asyncio.run(cancel_all(session))
        elif session.unfinished:
            ids = " ".join(session.unfinished)
            warn(f"stopped following; still running: {ids} "
                 f"(cancel with: taskstream cancel ID)")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
