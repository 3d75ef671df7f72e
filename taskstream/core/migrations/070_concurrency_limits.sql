-- Concurrency limits: at most N running tasks of a type, at most M per concurrency key.
--
-- A slot is a task row in status 'running': nothing else is counted or kept, so a slot
-- cannot leak. A killed worker's task keeps its slot until its lease expires and the sweeper
-- re-queues it (the recovery clock). A start of a limited type goes through
-- ts_start_limited: transaction-scoped advisory locks on its type and key (taken in one
-- global order, so two batches of starts cannot deadlock) serialise the count and the
-- 'started' append, and are held until the row is 'running' and committed.

CREATE INDEX tasks_running_type ON tasks (task_type) WHERE status = 'running';
CREATE INDEX tasks_running_key ON tasks (task_type, (options->>'concurrency_key'))
    WHERE status = 'running';

-- A 'waiting' event (pending -> pending, the task over a limit) sets the task's message too.
CREATE OR REPLACE FUNCTION ts_append_events(evs jsonb, defer_tenant_seq boolean)
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
                                              'completed', 'failed', 'cancelled', 'redriven',
                                              'waiting')
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

-- Starts of limited types, many in one transaction (the worker batches the starts of the
-- jobs it takes together, as the event log batches other events). Each element of reqs is
-- {ev: a 'started' event as for ts_append_events, limit, key, key_limit} (limit NULL: none;
-- key_limit applies to the key's running tasks of the same type). The locks of every type
-- and key in the batch are taken first, in one global order (by lock id), so two batches
-- cannot deadlock; each request is then counted against the running tasks plus those this
-- batch admitted before it, and the admitted ones are appended as ts_append_events(evs,
-- false) does. One row per element: as ts_append_events, or outcome 'limited' with the
-- reason ('limit' or 'key_limit'), how many run, and since when the task waits (its last
-- event's time if that is a 'waiting' event, else NULL).
CREATE FUNCTION ts_start_limited(reqs jsonb)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz,
               reason text, running bigint, waiting_since timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lock_id bigint;
    q record;
    res record;
    n bigint;
    m bigint;
    why text;
    counted jsonb := '{}';  -- 't:<type>' / 'k:<type>:<key>' -> running, with this batch's
    admitted jsonb := '[]';
    admitted_idx integer[] := '{}';
BEGIN
    FOR lock_id IN
        SELECT l.id FROM (
            SELECT hashtextextended('ts-limit:' || tk.task_type, 0) AS id
            FROM jsonb_array_elements(reqs) r
            JOIN tasks tk ON tk.task_id = (r->'ev'->>'task_id')::uuid
            WHERE tk.status = 'pending' AND r->>'limit' IS NOT NULL
            UNION
            SELECT hashtextextended('ts-limit:' || tk.task_type || ':' || (r->>'key'), 0)
            FROM jsonb_array_elements(reqs) r
            JOIN tasks tk ON tk.task_id = (r->'ev'->>'task_id')::uuid
            WHERE tk.status = 'pending' AND r->>'key_limit' IS NOT NULL
              AND r->>'key' IS NOT NULL) l
        ORDER BY l.id
    LOOP
        PERFORM pg_advisory_xact_lock(lock_id);
    END LOOP;
    -- From here each statement sees every start committed before the locks were granted.
    FOR q IN
        SELECT r.o::integer AS i, r.x->'ev' AS ev, (r.x->>'limit')::integer AS lim,
               r.x->>'key' AS ckey, (r.x->>'key_limit')::integer AS klim,
               tk.task_id AS tid, tk.task_type AS typ, tk.status AS st, tk.last_seq AS last
        FROM jsonb_array_elements(reqs) WITH ORDINALITY AS r(x, o)
        LEFT JOIN tasks tk ON tk.task_id = (r.x->'ev'->>'task_id')::uuid
        ORDER BY r.o
    LOOP
        why := NULL;
        n := NULL;
        m := NULL;
        IF q.st = 'pending' AND q.lim IS NOT NULL THEN
            n := (counted->>('t:' || q.typ))::bigint;
            IF n IS NULL THEN
                SELECT count(*) INTO n FROM tasks tk
                    WHERE tk.status = 'running' AND tk.task_type = q.typ;
            END IF;
            IF n >= q.lim THEN why := 'limit'; END IF;
        END IF;
        IF q.st = 'pending' AND q.klim IS NOT NULL AND q.ckey IS NOT NULL THEN
            m := (counted->>('k:' || q.typ || ':' || q.ckey))::bigint;
            IF m IS NULL THEN
                SELECT count(*) INTO m FROM tasks tk
                    WHERE tk.status = 'running' AND tk.task_type = q.typ
                      AND tk.options->>'concurrency_key' = q.ckey;
            END IF;
            IF why IS NULL AND m >= q.klim THEN why := 'key_limit'; END IF;
        END IF;
        IF why IS NOT NULL THEN
            idx := q.i;
            outcome := 'limited';
            seq := NULL; tenant_seq := NULL; progress := NULL; attempt := NULL;
            created_at := NULL;
            status := q.st;
            reason := why;
            running := CASE WHEN why = 'limit' THEN n ELSE m END;
            SELECT CASE WHEN te.type = 'waiting' THEN te.created_at END INTO waiting_since
                FROM task_events te WHERE te.task_id = q.tid AND te.seq = q.last;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF n IS NOT NULL THEN
            counted := counted || jsonb_build_object('t:' || q.typ, n + 1);
        END IF;
        IF m IS NOT NULL THEN
            counted := counted || jsonb_build_object('k:' || q.typ || ':' || q.ckey, m + 1);
            -- The key counted is the one stored on the row (a task stored without one).
            UPDATE tasks tk SET options = tk.options
                                          || jsonb_build_object('concurrency_key', q.ckey)
                WHERE tk.task_id = q.tid
                  AND tk.options->>'concurrency_key' IS DISTINCT FROM q.ckey;
        END IF;
        admitted := admitted || jsonb_build_array(q.ev);
        admitted_idx := admitted_idx || q.i;
    END LOOP;
    IF jsonb_array_length(admitted) = 0 THEN
        RETURN;
    END IF;
    FOR res IN SELECT a.*, (admitted->(a.idx - 1)->>'task_id')::uuid AS tid
               FROM ts_append_events(admitted, false) a LOOP
        idx := admitted_idx[res.idx];
        outcome := res.outcome;
        seq := res.seq; tenant_seq := res.tenant_seq; status := res.status;
        progress := res.progress; attempt := res.attempt; created_at := res.created_at;
        reason := NULL; running := NULL; waiting_since := NULL;
        IF res.outcome = 'ok' THEN
            -- The time the slot was taken (now() is the transaction's start, before the
            -- lock waits): a start's time then follows the end of every task whose slot
            -- it took.
            UPDATE task_events te SET created_at = clock_timestamp()
                WHERE te.task_id = res.tid AND te.seq = res.seq
                RETURNING te.created_at INTO created_at;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
