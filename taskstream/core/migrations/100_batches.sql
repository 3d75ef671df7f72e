-- Batches (issue 12): one parent task with children, and its aggregate kept incrementally.
--
-- A parent is a task of the reserved type 'batch' (core.constants.BATCH_TASK_TYPE): no
-- worker runs it and no job is ever queued for it; the worker's batch driver
-- (worker/batches.py) starts and ends it from its children's counts. Children are ordinary
-- tasks with parent_id set, run, streamed and kept like any other.
--
-- The aggregate is never a query over the children. Each change of a child's status or
-- progress is added, by a row trigger inside the very statement that appends the child's
-- event (ts_append / ts_append_events), to a counter row of its parent: one row per parent
-- *and per PostgreSQL backend* (shard = pg_backend_pid()). A backend runs one transaction at
-- a time, so no two writers ever wait for (or deadlock on) the same counter row, whatever
-- the order in which a batch of events touches the parents; the aggregate is the sum of a
-- parent's few shards (at most one per connection that wrote for it). Shard 0 holds the base
-- written at creation (every child pending). Each child's terminal transition is also noted
-- in batch_ends for the driver, which puts it on the parent's stream and deletes it.

ALTER TABLE tasks ADD COLUMN parent_id uuid;
CREATE INDEX tasks_parent ON tasks (parent_id, status) WHERE parent_id IS NOT NULL;

CREATE TABLE batches (
    batch_id         uuid PRIMARY KEY,          -- the parent task's id
    owner            text NOT NULL,
    total            integer NOT NULL CHECK (total > 0),
    policy           text NOT NULL CHECK (policy IN ('any', 'all', 'threshold')),
    threshold        integer,                   -- policy 'threshold': fail at this many
    cancel_requested boolean NOT NULL DEFAULT false,
    breached         boolean NOT NULL DEFAULT false,  -- policy broken: the rest cancelled
    done             boolean NOT NULL DEFAULT false,  -- the parent ended (until a re-drive)
    emitted          jsonb,                     -- the aggregate last put on the stream
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_open ON batches (created_at) WHERE NOT done;

CREATE TABLE batch_counts (
    batch_id  uuid NOT NULL,
    shard     integer NOT NULL,
    pending   integer NOT NULL DEFAULT 0,
    running   integer NOT NULL DEFAULT 0,
    completed integer NOT NULL DEFAULT 0,
    failed    integer NOT NULL DEFAULT 0,
    cancelled integer NOT NULL DEFAULT 0,
    progress  double precision NOT NULL DEFAULT 0,  -- sum of the children's progress
    PRIMARY KEY (batch_id, shard)
);

CREATE TABLE batch_ends (
    batch_id uuid NOT NULL,
    task_id  uuid NOT NULL,
    seq      bigint NOT NULL,   -- the child's terminal event
    status   text NOT NULL,
    error    text,
    PRIMARY KEY (batch_id, task_id, seq)
);

-- A child's share of its parent's percent: its own progress while it runs, 100 once ended
-- (a failed or cancelled child is done too; the counts say how).
CREATE FUNCTION ts_child_share(st text, pr double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN 100 ELSE pr END
$$;

CREATE FUNCTION ts_batch_delta() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batch_counts AS c (batch_id, shard, pending, running, completed, failed,
                                   cancelled, progress)
    VALUES (NEW.parent_id, pg_backend_pid(),
            (NEW.status = 'pending')::int - (OLD.status = 'pending')::int,
            (NEW.status = 'running')::int - (OLD.status = 'running')::int,
            (NEW.status = 'completed')::int - (OLD.status = 'completed')::int,
            (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
            (NEW.status = 'cancelled')::int - (OLD.status = 'cancelled')::int,
            ts_child_share(NEW.status, NEW.progress) - ts_child_share(OLD.status, OLD.progress))
    ON CONFLICT (batch_id, shard) DO UPDATE SET
        pending = c.pending + excluded.pending, running = c.running + excluded.running,
        completed = c.completed + excluded.completed, failed = c.failed + excluded.failed,
        cancelled = c.cancelled + excluded.cancelled, progress = c.progress + excluded.progress;
    IF NEW.status IN ('completed', 'failed', 'cancelled')
       AND OLD.status NOT IN ('completed', 'failed', 'cancelled') THEN
        INSERT INTO batch_ends (batch_id, task_id, seq, status, error)
        VALUES (NEW.parent_id, NEW.task_id, NEW.last_seq, NEW.status, NEW.error)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

-- UPDATE OF: the hot progress path of a task without a parent pays only the WHEN test.
CREATE TRIGGER tasks_batch_delta
    AFTER UPDATE OF status, progress ON tasks FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL
          AND (NEW.status IS DISTINCT FROM OLD.status
               OR NEW.progress IS DISTINCT FROM OLD.progress))
    EXECUTE FUNCTION ts_batch_delta();

-- ts_create_tasks (040) with a parent per task: a batch's parent (parent NULL) and its
-- children in one statement. The caller runs it inside its own transaction with the batch's
-- rows, so a batch is created whole or not at all.
CREATE FUNCTION ts_create_family(p_ids uuid[], p_parents uuid[], p_owners text[],
                                 p_types text[], p_params jsonb[], p_max_attempts integer[],
                                 p_idem text[], p_hashes text[], p_opts jsonb[])
RETURNS TABLE (task_id uuid, owner text, task_type text, params jsonb, status text,
               progress double precision, message text, result jsonb, error text,
               attempts integer, max_attempts integer, last_seq bigint,
               cancel_requested boolean, created_at timestamptz, updated_at timestamptz,
               started_at timestamptz, finished_at timestamptz, idempotency_key text,
               request_hash text, failures integer, crashes integer, failure_reason text,
               options jsonb, tenant_seq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH ins AS (
        INSERT INTO tasks AS tk (task_id, parent_id, owner, task_type, params, max_attempts,
                                 idempotency_key, request_hash, options, last_seq)
        SELECT u.a, u.p, u.b, u.c, u.d, u.e, u.f, u.g, u.h, 1
        FROM unnest(p_ids, p_parents, p_owners, p_types, p_params, p_max_attempts, p_idem,
                    p_hashes, p_opts)
             WITH ORDINALITY AS u(a, p, b, c, d, e, f, g, h, i)
        ORDER BY u.i
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING tk.*
    ), per_owner AS (
        SELECT ins.owner AS own, count(*) AS c FROM ins GROUP BY ins.owner
    ), ten AS (
        UPDATE tenants tn SET last_seq = tn.last_seq + p.c
        FROM per_owner p WHERE tn.owner = p.own
        RETURNING tn.owner AS own, tn.last_seq - p.c AS base
    ), numbered AS (
        SELECT ins.*, ten.base + row_number() OVER (PARTITION BY ins.owner
                                                     ORDER BY ins.task_id) AS tsq
        FROM ins JOIN ten ON ten.own = ins.owner
    ), ev AS (
        INSERT INTO task_events (task_id, seq, owner, tenant_seq, type, status, progress,
                                 attempt)
        SELECT n.task_id, 1, n.owner, n.tsq, 'created', 'pending', 0, 0 FROM numbered n
    )
    SELECT n.task_id, n.owner, n.task_type, n.params, n.status, n.progress, n.message,
           n.result, n.error, n.attempts, n.max_attempts, n.last_seq, n.cancel_requested,
           n.created_at, n.updated_at, n.started_at, n.finished_at, n.idempotency_key,
           n.request_hash, n.failures, n.crashes, n.failure_reason, n.options, n.tsq
    FROM numbered n;
END;
$$;
