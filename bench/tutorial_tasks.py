"""The seed tutorial's worker side (long-tasks-minimum-knowledge.md, 4.3 and its complete
example), run from Celery's venv: ``celery -A bench.tutorial_tasks worker --pool=prefork``.

Imports only the standard library, celery and SQLAlchemy. The ``Task`` model is the
tutorial's, in its own table ``tutorial_tasks`` (beside Taskstream's ``tasks``), with
``updated_at`` timezone-aware so that a follower can compute receive time - update time.
Environment: TUTORIAL_DATABASE_URL, TUTORIAL_BROKER (Redis, the baselines' DB index),
TUTORIAL_QUEUE (this run's key prefix, as ``bench.celery_peer``).
"""

import json
import os

from celery import Celery  # type: ignore[import-not-found, unused-ignore]
from sqlalchemy import Column, DateTime, Float, Integer, String, Text, create_engine
from sqlalchemy.orm import declarative_base, sessionmaker
from sqlalchemy.sql import func

DATABASE_URL = os.environ.get("TUTORIAL_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres")
BROKER = os.environ.get("TUTORIAL_BROKER", "redis://127.0.0.1:56379/12")
QUEUE = os.environ.get("TUTORIAL_QUEUE", "bench:tutorial:q")
#: Progress updates per task: one commit each, as the tutorial's steps.
STEPS = 10

# app/core/database.py (not shown in the tutorial): SQLAlchemy's defaults.
engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(bind=engine)
Base = declarative_base()


class Task(Base):  # type: ignore[valid-type, misc]
    """The tutorial's app/models/task.py."""

    __tablename__ = "tutorial_tasks"

    id = Column(Integer, primary_key=True, index=True)
    task_id = Column(String, unique=True, index=True)  # the Celery task id
    task_type = Column(String)
    status = Column(String, default="pending")  # pending, running, completed, failed
    progress = Column(Float, default=0.0)
    result = Column(Text, nullable=True)
    error = Column(Text, nullable=True)
    created_at = Column(DateTime(timezone=True), server_default=func.now())
    updated_at = Column(DateTime(timezone=True), onupdate=func.now())


app = Celery("tasks", broker=BROKER)
# No result backend, as the tutorial (the row is the state); the queue name isolates this run.
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(bind=True, max_retries=3)  # type: ignore[untyped-decorator, unused-ignore]
def process_steps(self, db_task_id: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The tutorial's process_document with STEPS steps of no work: running, a commit per
    progress update, completed; on an exception, failed and ``self.retry``."""
    db = SessionLocal()
    task = db.query(Task).filter(Task.id == db_task_id).first()
    try:
        task.status = "running"
        task.progress = 0.0
        db.commit()
        for i in range(1, STEPS + 1):
            task.progress = 100.0 * i / STEPS
            db.commit()
        task.status = "completed"
        task.result = json.dumps({"steps": STEPS})
        db.commit()
        return {"status": "success"}
    except Exception as e:
        task.status = "failed"
        task.error = str(e)
        db.commit()
        raise self.retry(exc=e) from e
    finally:
        db.close()
