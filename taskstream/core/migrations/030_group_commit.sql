-- Group commit that scales (measured by `python -m bench`).
--
-- Before: every event-writing transaction locked its tenant's counter row first and held it
-- across client round trips and the commit's WAL fsync, so all writers of one tenant (the web
-- process's POST /tasks and every worker's batches) ran one at a time: ~400 transactions/s on
-- this machine's disk, whatever the batch size. And each event cost four statements in a
-- plpgsql loop. Now:
--
-- 1. ts_append_events is set-based: one UPDATE of the tasks, one UPDATE of the tenant
--    counter and one INSERT of the events per batch (a batch holding several events of one
--    task runs in rounds: the k-th event of every task in round k).
-- 2. Locks are taken tasks first (in task_id order), then tenants (in owner order), and the
--    tenant row only by the statement that allocates the tenant_seq range, just before the
--    commit. Inside a caller's transaction (create_task: defer_tenant_seq), the tenant_seq is
--    allocated at COMMIT by a deferred constraint trigger, so no client round trip happens
--    while the tenant row is locked.
-- 3. The transaction commits asynchronously (synchronous_commit = off, for that transaction
--    only): the tenant row is unlocked as soon as the commit record is written, not after the
--    fsync. Durability is then established by ts_flush(), a synchronous commit of its own,
--    which flushes the WAL past every earlier commit; concurrent flushes share one fsync.
--    core/eventlog.py calls it before it publishes anything or answers any caller, so
--    "persist, then publish" holds: an event reaches Redis only once it is on disk.
--    Whoever appends events outside the EventLog must call EventLog.flush() (or publish())
--    before telling anyone. A reader of the database may see an event a millisecond before
--    it is on disk; a PostgreSQL crash in that millisecond loses it (and it was never
--    published).
-- tenant_seq and seq stay gap-free and in commit order per tenant and per task.

ALTER TABLE tasks SET (fillfactor = 80);  -- room on the page for HOT updates of the row

-- Placeholders for tenant_seq until the deferred trigger assigns it at commit (negative,
-- unique, never visible to another transaction).
CREATE SEQUENCE ts_pending_tenant_seq;

CREATE FUNCTION ts_assign_tenant_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    UPDATE tenants tn SET last_seq = tn.last_seq + 1 WHERE tn.owner = NEW.owner
        RETURNING tn.last_seq INTO s;
    UPDATE task_events te SET tenant_seq = s
        WHERE te.task_id = NEW.task_id AND te.seq = NEW.seq;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER task_events_assign_tenant_seq
    AFTER INSERT ON task_events DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.tenant_seq < 0)
    EXECUTE FUNCTION ts_assign_tenant_seq();

-- Make every commit so far durable; with keys ([[task_id, seq], ...]) also return their
-- tenant_seq (those allocated at commit by the trigger above).
CREATE FUNCTION ts_flush(keys jsonb DEFAULT NULL)
RETURNS TABLE (task_id uuid, seq bigint, tenant_seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    -- A transactional WAL record: this transaction's commit must be flushed, and with it
    -- the WAL before it.
    PERFORM pg_logical_emit_message(true, 'taskstream', 'flush');
    IF keys IS NOT NULL THEN
        RETURN QUERY
            SELECT te.task_id, te.seq, te.tenant_seq
            FROM jsonb_array_elements(keys) k
            JOIN task_events te ON te.task_id = (k->>0)::uuid AND te.seq = (k->>1)::bigint;
    END IF;
END;
$$;

-- Same contract as in 010 (and 001): each element of evs is {task_id, owner, type, from, to,
-- attempt, progress, message, data, result, error, worker_id, lease}; one row per element
-- comes back (in rounds; order by idx).
CREATE FUNCTION ts_append_events(evs jsonb, defer_tenant_seq boolean)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    rounds integer;
    r integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM 1 FROM tasks tk
        WHERE tk.task_id IN (SELECT (x->>'task_id')::uuid FROM jsonb_array_elements(evs) x)
        ORDER BY tk.task_id FOR NO KEY UPDATE;
    IF NOT defer_tenant_seq
       AND (SELECT count(DISTINCT x->>'owner') FROM jsonb_array_elements(evs) x) > 1 THEN
        PERFORM 1 FROM tenants tn
            WHERE tn.owner IN (SELECT x->>'owner' FROM jsonb_array_elements(evs) x)
            ORDER BY tn.owner FOR NO KEY UPDATE;
    END IF;
    SELECT max(c.n) INTO rounds
        FROM (SELECT count(*) AS n FROM jsonb_array_elements(evs) x GROUP BY x->>'task_id') c;
    FOR r IN 1..coalesce(rounds, 0) LOOP
        RETURN QUERY
        WITH ev AS (
            SELECT a.o::integer AS i, a.x AS e, (a.x->>'task_id')::uuid AS tid,
                   a.x->>'type' AS typ, (a.x->>'attempt')::integer AS want,
                   a.x->'data'->>'reason' AS reason
            FROM (SELECT t.x, t.o,
                         row_number() OVER (PARTITION BY t.x->>'task_id' ORDER BY t.o) AS occ
                  FROM jsonb_array_elements(evs) WITH ORDINALITY AS t(x, o)) a
            WHERE a.occ = r
        ), j AS (
            SELECT ev.*, tk.status AS st, tk.progress AS pr, tk.owner AS own,
                   CASE WHEN ev.typ = 'started' THEN tk.attempts + 1 ELSE tk.attempts END
                       AS att,
                   CASE WHEN tk.task_id IS NULL THEN 'missing'
                        WHEN ev.want IS NOT NULL AND ev.want <> CASE WHEN ev.typ = 'started'
                             THEN tk.attempts + 1 ELSE tk.attempts END THEN 'fenced'
                        WHEN jsonb_typeof(ev.e->'from') = 'array'
                             AND NOT (ev.e->'from') ? tk.status THEN 'illegal'
                        ELSE 'ok' END AS res,
                   coalesce(ev.e->>'to', tk.status) AS new_st
            FROM ev LEFT JOIN tasks tk ON tk.task_id = ev.tid
        ), k AS (
            SELECT j.*,
                   CASE WHEN j.new_st = 'completed' THEN 100::double precision
                        WHEN j.typ = 'redriven' THEN 0::double precision
                        ELSE coalesce((j.e->>'progress')::double precision, j.pr) END AS new_pr
            FROM j
        ), upd AS (
            UPDATE tasks tk SET
                status = k.new_st,
                progress = k.new_pr,
                message = CASE WHEN k.typ IN ('progress', 'started', 'retrying', 'requeued',
                                              'completed', 'failed', 'cancelled', 'redriven')
                               THEN coalesce(k.e->>'message', CASE WHEN k.typ = 'progress'
                                                                   THEN tk.message END)
                               ELSE tk.message END,
                result = CASE WHEN k.typ = 'completed' THEN k.e->'result'
                              WHEN k.typ = 'redriven' THEN NULL ELSE tk.result END,
                error = CASE WHEN k.typ IN ('failed', 'cancelled') THEN k.e->>'error'
                             WHEN k.typ IN ('started', 'redriven') THEN NULL
                             WHEN k.typ = 'retrying' THEN k.e->>'error'
                             ELSE tk.error END,
                attempts = k.att,
                failures = CASE WHEN k.typ IN ('retrying', 'failed') THEN tk.failures + 1
                                WHEN k.typ = 'redriven' THEN 0 ELSE tk.failures END,
                crashes = CASE WHEN k.typ IN ('requeued', 'failed')
                                    AND k.reason = 'worker_lost' THEN tk.crashes + 1
                               WHEN k.typ = 'redriven' THEN 0 ELSE tk.crashes END,
                failure_reason = CASE WHEN k.typ = 'failed' THEN coalesce(k.reason, 'error')
                                      WHEN k.typ = 'cancelled' THEN 'cancelled'
                                      WHEN k.typ = 'redriven' THEN NULL
                                      ELSE tk.failure_reason END,
                lease_expires_at = CASE WHEN k.typ = 'started'
                                        THEN now() + make_interval(secs => coalesce(
                                            (k.e->>'lease')::double precision, 60))
                                        WHEN k.new_st <> 'running' THEN NULL
                                        ELSE tk.lease_expires_at END,
                started_at = CASE WHEN k.typ = 'started' THEN coalesce(tk.started_at, now())
                                  ELSE tk.started_at END,
                finished_at = CASE WHEN k.new_st IN ('completed', 'failed', 'cancelled')
                                   THEN now() WHEN k.typ = 'redriven' THEN NULL
                                   ELSE tk.finished_at END,
                cancel_requested = CASE WHEN k.typ = 'cancel_requested' THEN true
                                        WHEN k.typ = 'redriven' THEN false
                                        ELSE tk.cancel_requested END,
                worker_id = CASE WHEN k.typ = 'started' THEN k.e->>'worker_id'
                                 WHEN k.new_st <> 'running' THEN NULL ELSE tk.worker_id END,
                last_seq = tk.last_seq + 1,
                updated_at = now()
            FROM k
            WHERE k.res = 'ok' AND tk.task_id = k.tid
            RETURNING tk.task_id, tk.last_seq
        ), cnt AS (
            SELECT k.own, count(*) AS n FROM k
            WHERE k.res = 'ok' AND NOT defer_tenant_seq GROUP BY k.own
        ), ten AS (
            UPDATE tenants tn SET last_seq = tn.last_seq + cnt.n
            FROM cnt WHERE tn.owner = cnt.own
            RETURNING tn.owner, tn.last_seq - cnt.n AS base
        ), ins AS (
            INSERT INTO task_events AS te (task_id, seq, owner, tenant_seq, type, status,
                                           progress, message, data, attempt)
            SELECT k.tid, upd.last_seq, k.own,
                   CASE WHEN defer_tenant_seq THEN -nextval('ts_pending_tenant_seq')
                        ELSE ten.base + row_number() OVER (PARTITION BY k.own ORDER BY k.i)
                   END,
                   k.typ, k.new_st, k.new_pr, coalesce(k.e->>'message', k.e->>'error'),
                   CASE WHEN k.typ = 'completed' THEN k.e->'result' ELSE k.e->'data' END,
                   k.att
            FROM k JOIN upd ON upd.task_id = k.tid LEFT JOIN ten ON ten.owner = k.own
            WHERE k.res = 'ok'
            RETURNING te.task_id, te.seq, te.tenant_seq, te.created_at
        )
        SELECT k.i::integer, k.res, ins.seq,
               CASE WHEN ins.tenant_seq > 0 THEN ins.tenant_seq END,
               CASE WHEN k.res = 'ok' THEN k.new_st ELSE k.st END,
               CASE WHEN k.res = 'ok' THEN k.new_pr END,
               CASE WHEN k.res = 'ok' THEN k.att END,
               ins.created_at
        FROM k LEFT JOIN ins ON ins.task_id = k.tid;
    END LOOP;
END;
$$;

-- The one-argument form keeps working for any caller that still uses it.
CREATE OR REPLACE FUNCTION ts_append_events(evs jsonb)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz)
LANGUAGE sql AS $$
    SELECT * FROM ts_append_events(evs, false) ORDER BY 1;
$$;
