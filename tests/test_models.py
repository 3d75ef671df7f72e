"""core/models.py is the one definition: held here to the migrated database, to the hot path's
JSON (Event.encode, store.Task.to_json) and to the client's light copies."""

import types
import uuid
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin

import asyncpg
import orjson
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql
from sqlmodel import SQLModel

from service import schemas
from service.tasks import task_json, task_read_json
from taskstream import client
from taskstream.core import models, store, store_read
from taskstream.core.db import create_engine
from taskstream.core.events import Event, NewEvent
from taskstream.core.models import EventRead, TaskRead
from taskstream.core.settings import Settings
from taskstream.core.states import EventType

#: Tables in the public schema that hold no product data (the migration runner's ledger).
BOOKKEEPING = {"schema_migrations"}

#: A column type as SQLAlchemy compiles it for PostgreSQL -> information_schema's
#: (data_type, udt_name). A type missing here fails the test: say how it maps.
PG_TYPES = {
    "TEXT": ("text", "text"),
    "UUID": ("uuid", "uuid"),
    "BIGINT": ("bigint", "int8"),
    "INTEGER": ("integer", "int4"),
    "DOUBLE PRECISION": ("double precision", "float8"),
    "BOOLEAN": ("boolean", "bool"),
    "JSONB": ("jsonb", "jsonb"),
    "TIMESTAMP WITH TIME ZONE": ("timestamp with time zone", "timestamptz"),
    "BYTEA": ("bytea", "bytea"),
    "REAL[]": ("ARRAY", "_float4"),
    "VECTOR": ("USER-DEFINED", "vector"),
    "TEXT[]": ("ARRAY", "_text"),
}


# --- the models against the migrated database -------------------------------------------------

async def test_metadata_matches_the_migrated_database(pool: asyncpg.Pool) -> None:
    cols = await pool.fetch(
        """SELECT table_name, column_name, data_type, udt_name, is_nullable = 'YES' AS nullable
           FROM information_schema.columns WHERE table_schema = 'public'""")
    pks = await pool.fetch(
        """SELECT k.table_name, k.column_name FROM information_schema.table_constraints c
           JOIN information_schema.key_column_usage k
             ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema
           WHERE c.table_schema = 'public' AND c.constraint_type = 'PRIMARY KEY'""")
    tables = {r["table_name"] for r in await pool.fetch(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE'""")}
    db: dict[str, dict[str, asyncpg.Record]] = {}
    for r in cols:
        db.setdefault(r["table_name"], {})[r["column_name"]] = r
    db_pk: dict[str, set[str]] = {}
    for r in pks:
        db_pk.setdefault(r["table_name"], set()).add(r["column_name"])

    problems: list[str] = []
    unmodelled = tables - set(SQLModel.metadata.tables) - BOOKKEEPING
    if unmodelled:
        problems.append(f"tables without a model in core/models.py: {sorted(unmodelled)}")
    for name, table in SQLModel.metadata.tables.items():
        if name not in db:
            problems.append(f"{name}: modelled but not in the database")
            continue
        have, want = set(db[name]), {c.name for c in table.columns}
        if have != want:
            problems.append(f"{name}: columns only in the database {sorted(have - want)}, "
                            f"only in the model {sorted(want - have)}")
        for c in table.columns:
            row = db[name].get(c.name)
            if row is None:
                continue
            compiled = c.type.compile(dialect=postgresql.dialect())
            expected = PG_TYPES.get(compiled)
            actual = (row["data_type"], row["udt_name"])
            if expected != actual:
                problems.append(f"{name}.{c.name}: model type {compiled} ({expected}), "
                                f"database {actual}")
            if c.nullable != row["nullable"]:
                problems.append(f"{name}.{c.name}: model nullable={c.nullable}, "
                                f"database nullable={row['nullable']}")
        model_pk = {c.name for c in table.primary_key.columns}
        if model_pk != db_pk.get(name, set()):
            problems.append(f"{name}: primary key {sorted(model_pk)} in the model, "
                            f"{sorted(db_pk.get(name, set()))} in the database")
    assert not problems, "core/models.py differs from the migrations:\n  " + "\n  ".join(problems)


# --- the hot path's JSON against the Read models ---------------------------------------------

def _event(etype: EventType, **kw: Any) -> Event:
    base: dict[str, Any] = dict(task_id=str(uuid.uuid4()), seq=3, tenant_seq=9, type=etype.value,
                                status="running", progress=42.5, message="m", data={"k": [1]},
                                attempt=1, created_at=datetime.now(UTC), owner="o")
    return Event(**{**base, **kw})


def test_event_encode_is_exactly_the_event_read_shape() -> None:
    for ev in (_event(EventType.PROGRESS),
               _event(EventType.COMPLETED, status="completed", progress=100.0, data={"x": 1}),
               _event(EventType.FAILED, status="failed", message="boom", data=None),
               _event(EventType.CREATED, status="pending", message=None, data=None)):
        raw = ev.encode()
        wire = orjson.loads(raw)
        assert set(wire) == set(EventRead.model_fields), ev.type
        read = EventRead.model_validate_json(raw)  # strict enough: an unknown key fails below
        assert read.model_dump(mode="json", exclude={"created_at"}) == \
            {k: v for k, v in wire.items() if k != "created_at"}
        assert read.created_at == ev.created_at
        # and back: what EventRead writes, the hot path's decoder reads as the same event
        assert Event.decode(read.model_dump_json()).to_json() == ev.to_json()


async def test_submit_json_equals_the_sqlmodel_read(pool: asyncpg.Pool,
                                                   settings: Settings) -> None:
    """store.Task.to_json (what POST /tasks answers, on asyncpg) and TaskRead (the read
    routes, on SQLModel) say the same about the same row; so do Event and EventRead."""
    owner = f"models-{uuid.uuid4().hex[:8]}"
    task, created = await store.create_task(pool, owner=owner, task_type="noop",
                                            params={"n": 1}, max_attempts=2)
    assert created is not None
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        read = await store_read.get_task(engine, uuid.UUID(task.task_id), owner)
        events = await store_read.task_events(engine, uuid.UUID(task.task_id), owner, 0, 10)
    finally:
        await engine.dispose()
    assert read is not None and events is not None
    hot = task.to_json()
    assert set(hot) | {"links"} == set(TaskRead.model_fields)
    via_hot = TaskRead.model_validate({**hot, "links": models.Links.of(task.task_id)})
    assert via_hot == read
    assert EventRead.model_validate_json(created.encode()) == events[0]

    (done,) = await store.append_events(pool, [NewEvent(task.task_id, owner, EventType.CANCELLED,
                                                        error="stop")])
    assert done.event is not None
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        events = await store_read.task_events(engine, uuid.UUID(task.task_id), owner, 1, 10)
    finally:
        await engine.dispose()
    assert events == [EventRead.model_validate_json(done.event.encode())]
    assert events[0].error == "stop"


async def test_submit_response_is_the_task_read_json(pool: asyncpg.Pool) -> None:
    """POST /tasks writes its body with task_read_json: the JSON that response_model=TaskRead
    makes of task_json, field for field (a UTC time as "Z", run_at as a datetime)."""
    owner = f"models-{uuid.uuid4().hex[:8]}"
    for options in ({}, {"priority": "high", "run_at": "2031-01-02T03:04:05.5+01:00"},
                    {"run_at": datetime(2031, 1, 2, tzinfo=UTC).isoformat()}):
        task, _ = await store.create_task(pool, owner=owner, task_type="noop",
                                          params={"n": 1.5, "s": "é", "l": [None, True]},
                                          max_attempts=2, options=options)
        fastapi_json = TaskRead.model_validate(task_json(task)).model_dump_json()
        assert task_read_json(task) == fastapi_json.encode()


# --- the client's light copies ---------------------------------------------------------------

def _wire_type(annotation: Any) -> tuple[str, bool]:
    """(type as it travels in JSON, whether None is accepted): a UUID and a StrEnum are
    strings on the wire; the client keeps plain strings on purpose (see client/models.py)."""
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        (annotation,) = args
    if annotation is Any:
        return "Any", True
    if annotation is uuid.UUID or (isinstance(annotation, type) and issubclass(annotation, str)):
        return "str", nullable
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"model {annotation.__name__}", nullable
    return repr(annotation), nullable


def _show(wire: tuple[str, bool]) -> str:
    return f"{wire[0]} | None" if wire[1] else wire[0]


def _drift(theirs: type[BaseModel], ours: type[BaseModel]) -> list[str]:
    mine, defn = theirs.model_fields, ours.model_fields
    out = [f"{theirs.__qualname__}: fields only in the client {sorted(set(mine) - set(defn))}, "
           f"only in {ours.__name__} {sorted(set(defn) - set(mine))}"] \
        if set(mine) != set(defn) else []
    for name in sorted(set(mine) & set(defn)):
        a, b = _wire_type(mine[name].annotation), _wire_type(defn[name].annotation)
        if a != b:
            out.append(f"{theirs.__qualname__}.{name}: client {_show(a)}, "
                       f"{ours.__name__} {_show(b)}")
    return out


def test_client_models_mirror_the_read_models() -> None:
    problems = (_drift(client.models.Task, TaskRead) + _drift(client.models.Event, EventRead)
                + _drift(client.models.Links, models.Links)
                + _drift(client.models.Upload, schemas.UploadOut)
                + _drift(client.models.TaskType, schemas.TaskTypeOut))
    assert not problems, "client/models.py drifted from core/models.py:\n  " + \
        "\n  ".join(problems)
