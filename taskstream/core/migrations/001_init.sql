-- Taskstream schema v1: tasks, their event log, tenants' event counters, uploads, chunks.

CREATE TABLE tenants (
    owner       text PRIMARY KEY,
    last_seq    bigint NOT NULL DEFAULT 0,  -- tenant-wide event counter (tenant stream cursor)
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    task_id          uuid PRIMARY KEY,
    owner            text NOT NULL REFERENCES tenants (owner),
    task_type        text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    progress         double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    message          text,
    result           jsonb,
    error            text,
    attempts         integer NOT NULL DEFAULT 0,  -- the current attempt; fences older ones
    max_attempts     integer NOT NULL DEFAULT 1,
    last_seq         bigint NOT NULL DEFAULT 0,   -- per-task event counter
    cancel_requested boolean NOT NULL DEFAULT false,
    worker_id        text,
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX tasks_owner_created ON tasks (owner, created_at DESC, task_id DESC);
CREATE INDEX tasks_owner_status ON tasks (owner, status, created_at DESC);
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX tasks_idempotency ON tasks (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_events (
    task_id     uuid NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    owner       text NOT NULL,
    tenant_seq  bigint NOT NULL,
    type        text NOT NULL,
    status      text NOT NULL,
    progress    double precision NOT NULL,
    message     text,
    data        jsonb,
    attempt     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);
CREATE UNIQUE INDEX task_events_tenant ON task_events (owner, tenant_seq);

CREATE TABLE uploads (
    upload_id    uuid PRIMARY KEY,
    owner        text NOT NULL REFERENCES tenants (owner),
    filename     text NOT NULL,      -- sanitized client name, metadata only
    content_type text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE upload_chunks (
    upload_id  uuid NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (upload_id, idx)
);

CREATE TABLE document_chunks (
    task_id     uuid NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    page        integer,
    content     text NOT NULL,
    embedding   real[] NOT NULL,
    PRIMARY KEY (task_id, chunk_index)
);

-- Append a batch of events in one round trip (group commit).
--
-- Each element of evs: {task_id, owner, type, from: [statuses] | null, to: status | null,
--   attempt: int | null, progress: number | null, message, data, result, error}.
-- 'from' is computed by core/states.py, the one place transitions are defined. An event whose
-- task is in another status is refused ('illegal'); one from a superseded attempt is refused
-- ('fenced'); 'started' claims attempt = attempts + 1. Tenant rows are locked first, in
-- order, so concurrent batches cannot deadlock, and tenant_seq follows commit order.
CREATE FUNCTION ts_append_events(evs jsonb)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i integer := 0;
    t record;
    ev_type text;
    new_status text;
    new_progress double precision;
    ev_attempt integer;
    new_seq bigint;
    new_tseq bigint;
BEGIN
    PERFORM 1 FROM tenants
        WHERE owner IN (SELECT DISTINCT x->>'owner' FROM jsonb_array_elements(evs) x)
        ORDER BY owner FOR NO KEY UPDATE;
    FOR e IN SELECT value FROM jsonb_array_elements(evs) LOOP
        i := i + 1;
        idx := i; seq := NULL; tenant_seq := NULL; status := NULL; progress := NULL;
        attempt := NULL; created_at := NULL;
        ev_type := e->>'type';
        SELECT tk.status, tk.progress, tk.attempts, tk.owner INTO t
            FROM tasks tk WHERE tk.task_id = (e->>'task_id')::uuid FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            outcome := 'missing'; RETURN NEXT; CONTINUE;
        END IF;
        status := t.status;
        IF ev_type = 'started' THEN
            ev_attempt := t.attempts + 1;
            IF (e->>'attempt') IS NOT NULL AND (e->>'attempt')::integer <> ev_attempt THEN
                outcome := 'fenced'; RETURN NEXT; CONTINUE;
            END IF;
        ELSE
            ev_attempt := t.attempts;
            IF (e->>'attempt') IS NOT NULL AND (e->>'attempt')::integer <> t.attempts THEN
                outcome := 'fenced'; RETURN NEXT; CONTINUE;
            END IF;
        END IF;
        IF jsonb_typeof(e->'from') = 'array'
           AND NOT (t.status IN (SELECT jsonb_array_elements_text(e->'from'))) THEN
            outcome := 'illegal'; RETURN NEXT; CONTINUE;
        END IF;
        new_status := coalesce(e->>'to', t.status);
        new_progress := coalesce((e->>'progress')::double precision, t.progress);
        IF new_status = 'completed' THEN new_progress := 100; END IF;
        UPDATE tasks tk SET
            status = new_status,
            progress = new_progress,
            message = CASE WHEN ev_type IN ('progress', 'started', 'retrying', 'requeued',
                                            'completed', 'failed', 'cancelled')
                           THEN coalesce(e->>'message', CASE WHEN ev_type = 'progress'
                                                             THEN tk.message END)
                           ELSE tk.message END,
            result = CASE WHEN ev_type = 'completed' THEN e->'result' ELSE tk.result END,
            error = CASE WHEN ev_type IN ('failed', 'cancelled') THEN e->>'error'
                         WHEN ev_type = 'started' THEN NULL ELSE tk.error END,
            attempts = ev_attempt,
            started_at = CASE WHEN ev_type = 'started' THEN coalesce(tk.started_at, now())
                              ELSE tk.started_at END,
            finished_at = CASE WHEN new_status IN ('completed', 'failed', 'cancelled')
                               THEN now() ELSE tk.finished_at END,
            cancel_requested = CASE WHEN ev_type = 'cancel_requested' THEN true
                                    ELSE tk.cancel_requested END,
            worker_id = CASE WHEN ev_type = 'started' THEN e->>'worker_id'
                             WHEN new_status <> 'running' THEN NULL ELSE tk.worker_id END,
            last_seq = tk.last_seq + 1,
            updated_at = now()
        WHERE tk.task_id = (e->>'task_id')::uuid
        RETURNING tk.last_seq INTO new_seq;
        UPDATE tenants tn SET last_seq = tn.last_seq + 1 WHERE tn.owner = t.owner
            RETURNING tn.last_seq INTO new_tseq;
        INSERT INTO task_events AS te (task_id, seq, owner, tenant_seq, type, status, progress,
                                       message, data, attempt)
        VALUES ((e->>'task_id')::uuid, new_seq, t.owner, new_tseq, ev_type, new_status,
                new_progress, coalesce(e->>'message', e->>'error'),
                CASE WHEN ev_type = 'completed' THEN e->'result' ELSE e->'data' END, ev_attempt)
        RETURNING te.created_at INTO created_at;
        outcome := 'ok'; seq := new_seq; tenant_seq := new_tseq; status := new_status;
        progress := new_progress; attempt := ev_attempt;
        RETURN NEXT;
    END LOOP;
END;
$$;
