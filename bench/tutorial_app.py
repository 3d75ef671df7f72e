"""The seed tutorial's web side (long-tasks-minimum-knowledge.md, 4.4 and its complete example),
run from Celery's venv: ``uvicorn bench.tutorial_app:app``.

As the tutorial: ``async def`` endpoints calling a synchronous SQLAlchemy session, POST inserts
the row, commits, ``.delay()``s the Celery task and stores its id with a second commit; the
stream reads the row once a second and sends a ``data:`` snapshot until completed/failed.

Two changes, both needed for the stream to work at all, said here so nobody mistakes them
for optimisations: each poll opens its own session (the tutorial holds one session per
stream: its identity map returns the first-read object unchanged, so the stream would never
see an update, and 100 streams would exhaust the default pool of 5 + 10 connections); and the
snapshot carries ``updated_at`` (as epoch seconds in ``message``, where the bench's SSE reader
takes its stamp) so the follower can measure receive time - update time.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from bench.tutorial_tasks import Base, SessionLocal, Task, engine, process_steps

app = FastAPI()
Base.metadata.create_all(engine)  # its own table, in the bench's database


def _snapshot(task: Task) -> dict[str, Any]:
    stamp = task.updated_at or task.created_at
    return {"task_id": task.task_id, "status": task.status, "progress": task.progress,
            "result": task.result, "message": f"{stamp.timestamp():.6f}"}


@app.post("/tasks", status_code=202)
async def create_task() -> dict[str, str]:
    db = SessionLocal()
    db_task = Task(task_type="bench_steps", status="pending")
    db.add(db_task)
    db.commit()
    db.refresh(db_task)
    celery_result = process_steps.delay(db_task.id)
    db_task.task_id = celery_result.id
    db.commit()
    db.close()
    return {"task_id": celery_result.id, "status": "processing"}


@app.get("/tasks/{task_id}")
async def get_task(task_id: str) -> dict[str, Any]:
    db = SessionLocal()
    try:
        task = db.query(Task).filter(Task.task_id == task_id).first()
        if task is None:
            raise HTTPException(404, "Task not found")
        return _snapshot(task)
    finally:
        db.close()


@app.get("/tasks/{task_id}/stream")
async def stream_progress(task_id: str) -> StreamingResponse:
    async def generate() -> AsyncIterator[str]:
        while True:
            db = SessionLocal()  # per poll: see the module docstring
            try:
                task = db.query(Task).filter(Task.task_id == task_id).first()
                data = _snapshot(task) if task else {"error": "Task not found"}
            finally:
                db.close()
            yield f"data: {json.dumps(data)}\n\n"
            if task is None or task.status in ("completed", "failed"):
                break
            await asyncio.sleep(1)

    return StreamingResponse(generate(), media_type="text/event-stream")
