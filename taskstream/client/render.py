"""How the CLI shows things, in three modes: ``rich`` (a terminal: live progress bars,
tables), ``plain`` (not a terminal: one stable line per item, for logs and ``grep``) and
``json`` (one JSON object per line, for scripts). Plain and JSON output bypass rich, so
they are never wrapped, coloured or truncated."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from taskstream.client.models import BatchState, BatchUpload, Event, Task, TaskType, Upload

Mode = Literal["rich", "plain", "json"]

STATUS_STYLE = {"pending": "cyan", "running": "blue", "completed": "green",
                "failed": "red", "cancelled": "yellow"}
MARK = {"completed": "✔", "failed": "✘", "cancelled": "■"}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def pct(progress: float) -> str:
    """``    0%``, `` 33.3%``, ``  100%``: six wide, a decimal only when there is one."""
    text = f"{progress:.0f}%" if progress == int(progress) else f"{progress:.1f}%"
    return text.rjust(6)


def when(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts else ""


def outcome_text(event: Event) -> str:
    if event.status == "completed":
        return f"result: {compact(event.result)}"
    if event.status in ("failed", "cancelled"):
        return f"error: {event.error or event.message or event.status}"
    return event.message or ""


def event_line(event: Event) -> str:
    """The plain one-line form of an event."""
    text = outcome_text(event) if event.terminal else (event.message or "")
    if event.type == "partial" and event.data is not None:
        text = f"{text} {compact(event.data)}".strip()
    line = (f"{event.task_id}  #{event.seq:<4} {event.type:<10} {event.status:<9} "
            f"{pct(event.progress)}")
    return f"{line}  {text}" if text else line


class EventView(Protocol):
    def __enter__(self) -> EventView: ...
    def __exit__(self, *exc: object) -> None: ...
    def event(self, event: Event) -> None: ...


class JsonEvents:
    def __enter__(self) -> JsonEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def event(self, event: Event) -> None:
        out(event.model_dump_json())


class PlainEvents(JsonEvents):
    def event(self, event: Event) -> None:
        out(event_line(event))


class RichEvents:
    """A live bar per task with its status and current message; notable events (logs,
    retries, the ending) are printed above the bars and stay in the scrollback."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[short]}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
        )
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, event: Event) -> None:
        tid = event.task_id
        if tid not in self.bars:
            self.bars[tid] = self.progress.add_task("", total=100, short=tid[:8],
                                                    status="")
        bar = self.bars[tid]
        style = STATUS_STYLE.get(event.status, "")
        fields: dict[str, Any] = {"status": f"[{style}]{event.status}[/]"}
        if event.message and not event.terminal:
            fields["description"] = escape(event.message)
        self.progress.update(bar, completed=event.progress, **fields)
        if event.type in ("log", "retrying", "requeued", "cancel_requested", "waiting"):
            self.progress.console.print(
                f"[dim]{tid[:8]}[/] {event.type}: {escape(event.message or '')}")
        if event.terminal:
            self.progress.update(bar, description="")  # the line above says how it ended
            self.progress.stop_task(bar)
            mark = MARK.get(event.status, "•")
            self.progress.console.print(
                f"[{style}]{mark} {tid} {event.status}[/]  {escape(outcome_text(event))}")


def task_outcome(task: Task) -> str:
    if task.status == "completed":
        return f"result: {compact(task.result)}"
    return f"error: {task.error or task.message or task.status}"


def batch_summary(state: BatchState) -> str:
    """``7/10 ended: 6 completed, 1 failed``."""
    ended = sum(state.counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
    parts = [f"{state.counts[s]} {s}" for s in ("completed", "failed", "cancelled", "running")
             if state.counts.get(s)]
    return f"{ended}/{state.total} ended" + (": " + ", ".join(parts) if parts else "")


class BatchView(Protocol):
    """How a followed batch is shown: its aggregate, and a line per child that ended."""

    def __enter__(self) -> BatchView: ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, state: BatchState) -> None: ...
    def finished(self, child: Task, name: str) -> None: ...


class PlainBatch:
    def __enter__(self) -> PlainBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, state: BatchState) -> None:
        if state.terminal:
            out(f"{state.task_id}  batch {state.status:<9} {pct(state.percent)}  "
                f"{batch_summary(state)}")

    def finished(self, child: Task, name: str) -> None:
        out(f"{child.task_id}  {child.status:<9} {name}  {task_outcome(child)}")


class JsonBatch(PlainBatch):
    def update(self, state: BatchState) -> None:
        out(state.model_dump_json())

    def finished(self, child: Task, name: str) -> None:
        out(child.model_dump_json())


class RichBatch:
    """ONE bar for the whole batch (percent weighted by each child's own progress, the
    counts beside it); each file that ends prints a line above the bar."""

    def __init__(self, console: Console, label: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
        )
        self.bar = self.progress.add_task("", total=100, label=escape(label), status="")

    def __enter__(self) -> RichBatch:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, state: BatchState) -> None:
        style = STATUS_STYLE.get(state.status, "")
        self.progress.update(self.bar, completed=state.percent,
                             status=f"[{style}]{state.status}[/]",
                             description=escape(batch_summary(state)))
        if state.terminal:
            self.progress.stop_task(self.bar)
            self.progress.console.print(
                f"[{style}]{MARK.get(state.status, '•')} batch {state.task_id} "
                f"{state.status}[/]  {escape(batch_summary(state))}")

    def finished(self, child: Task, name: str) -> None:
        style = STATUS_STYLE.get(child.status, "")
        self.progress.console.print(
            f"[{style}]{MARK.get(child.status, '•')} {escape(name)}[/] {child.status}  "
            f"[dim]{escape(task_outcome(child))}[/]")


def batch_view(mode: Mode, console: Console, label: str) -> BatchView:
    if mode == "json":
        return JsonBatch()
    if mode == "plain":
        return PlainBatch()
    return RichBatch(console, label)


def batch_accepted(batch: BatchUpload, mode: Mode, console: Console) -> None:
    """What ``upload`` prints for several files: a line per file, then the batch."""
    if mode == "json":
        out(batch.model_dump_json())
        return
    for c in batch.children:
        if mode == "plain":
            out(f"{c.task_id}\t{c.filename}\t{c.size}")
        else:
            console.print(f"uploaded {escape(c.filename)} ({c.size} bytes) "
                          f"[bold]{c.task_id}[/]")
    if mode == "plain":
        out(f"{batch.task_id}\tbatch\t{len(batch.children)}")
    else:
        console.print(f"batch of {len(batch.children)} files [bold]{batch.task_id}[/] "
                      f"({batch.status})")


def event_view(mode: Mode, console: Console) -> EventView:
    if mode == "json":
        return JsonEvents()
    if mode == "plain":
        return PlainEvents()
    return RichEvents(console)


TASK_FIELDS = ("task_id", "type", "status", "progress", "message", "attempts", "max_attempts",
               "failures", "failure_reason", "created_at", "started_at", "finished_at",
               "params", "result", "error")


def task_rows(task: Task) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name in TASK_FIELDS:
        value: Any = getattr(task, name)
        if name == "progress":
            text = pct(value).strip()
        elif isinstance(value, datetime):
            text = when(value)
        elif name in ("params", "result"):
            text = "" if value is None else compact(value)
        else:
            text = "" if value is None else str(value)
        rows.append((name, text))
    return rows


def show_task(task: Task, mode: Mode, console: Console) -> None:
    if mode == "json":
        out(task.model_dump_json())
    elif mode == "plain":
        for name, text in task_rows(task):
            out(f"{name:<15}{text}".rstrip())
    else:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for name, text in task_rows(task):
            if name == "status":
                text = f"[{STATUS_STYLE.get(text, '')}]{text}[/]"
            else:
                text = escape(text)
            table.add_row(name, text)
        console.print(table)


def task_list(tasks: list[Task], mode: Mode, console: Console) -> None:
    if mode == "json":
        for t in tasks:
            out(t.model_dump_json())
        return
    if mode == "plain":
        for t in tasks:
            out("\t".join((t.task_id, t.type, t.status, pct(t.progress).strip(),
                           when(t.created_at), t.message or "")))
        return
    table = Table("task", "type", "status", "progress", "created", "message",
                  box=None, header_style="bold")
    for t in tasks:
        style = STATUS_STYLE.get(t.status, "")
        table.add_row(t.task_id, t.type, f"[{style}]{t.status}[/]", pct(t.progress),
                      when(t.created_at), escape(t.message or t.error or ""))
    console.print(table)
    if not tasks:
        console.print("[dim]no tasks[/]")


def type_list(types: list[TaskType], mode: Mode, console: Console) -> None:
    if mode == "json":
        for t in types:
            out(t.model_dump_json())
        return

    def params(t: TaskType) -> str:
        return " ".join(sorted(t.params_schema.get("properties", {})))

    if mode == "plain":
        for t in types:
            out("\t".join((t.type, params(t), t.description)))
        return
    table = Table("type", "params", "description", box=None, header_style="bold")
    for t in types:
        table.add_row(t.type, params(t), escape(t.description))
    console.print(table)


def accepted(task: Task | Upload, mode: Mode, console: Console, verb: str) -> None:
    """What ``submit``, ``upload`` and ``retry`` print for a task they started."""
    if mode == "json":
        out(task.model_dump_json())
    elif mode == "plain":
        out(f"{task.task_id}\t{task.filename}\t{task.size}" if isinstance(task, Upload)
            else task.task_id)
    else:
        what = f"{task.filename} ({task.size} bytes)" if isinstance(task, Upload) else \
            f"{task.type} task"
        console.print(f"{verb} {escape(what)} [bold]{task.task_id}[/] ({task.status})")
