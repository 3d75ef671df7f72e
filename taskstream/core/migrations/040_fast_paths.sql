-- Fast paths (measured by `python -m bench` and a micro-benchmark of the batch call).
--
-- 1. The events a running attempt reports (progress, log, partial). ts_append_events (030)
--    takes any event as jsonb and runs one set-based round per event of a task. These events
--    change no status, so their whole effect is: fence (task running, attempt current), one
--    seq and one tenant_seq per event, and the task row's progress/message set to the last
--    reported. ts_append does that for a whole batch in one statement, from typed arrays, and
--    several events of one task cost one UPDATE of its row. PostgreSQL CPU per progress
--    event, batches of 50 / 200: 63 / 63 us before, 37 / 23 us after (with the foreign key
--    dropped, below: it alone was ~15 us).
--
--    A batch that also holds other events passes them as ``slow`` (the jsonb of
--    ts_append_events): they are appended after the fast ones, in the same transaction, and
--    come back with idx offset by the number of fast events. The caller puts an event in the
--    fast part only if no earlier event of its task in the batch is slow, so each task's
--    order holds. Same rules as 030: tasks are locked first, in task_id order (those of both
--    parts), then tenants (in owner order when the batch spans several); the transaction
--    commits asynchronously and EventLog flushes before anyone hears of the events. The
--    result has the shape of ts_append_events. owners: the batch's distinct owners, sorted,
--    when there is more than one (else NULL).
CREATE FUNCTION ts_append(tids uuid[], atts integer[], typs text[], prs double precision[],
                          msgs text[], datas jsonb[], owners text[], slow jsonb)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF slow IS NULL THEN
        PERFORM 1 FROM tasks tk WHERE tk.task_id = ANY (tids) ORDER BY tk.task_id
            FOR NO KEY UPDATE;
    ELSE
        PERFORM 1 FROM tasks tk
            WHERE tk.task_id = ANY (tids)
               OR tk.task_id IN (SELECT (x->>'task_id')::uuid FROM jsonb_array_elements(slow) x)
            ORDER BY tk.task_id FOR NO KEY UPDATE;
    END IF;
    IF owners IS NOT NULL THEN
        PERFORM 1 FROM tenants tn WHERE tn.owner = ANY (owners) ORDER BY tn.owner
            FOR NO KEY UPDATE;
    END IF;
    RETURN QUERY
    WITH ev AS (
        SELECT u.i::integer AS i, u.tid, u.att, u.typ, u.pr, u.msg, u.dat
        FROM unnest(tids, atts, typs, prs, msgs, datas) WITH ORDINALITY
             AS u(tid, att, typ, pr, msg, dat, i)
    ), j AS (
        SELECT ev.*, tk.progress AS tpr, tk.message AS tmsg, tk.owner AS own,
               tk.last_seq AS base,
               CASE WHEN tk.task_id IS NULL THEN 'missing'
                    WHEN ev.att IS DISTINCT FROM tk.attempts THEN 'fenced'
                    WHEN tk.status <> 'running' THEN 'illegal'
                    ELSE 'ok' END AS res,
               tk.status AS st
        FROM ev LEFT JOIN tasks tk ON tk.task_id = ev.tid
    ), ok AS (
        -- n: position among the task's accepted events; g: how many of them so far reported
        -- a progress value (the snapshot's progress is the last one reported, else the row's)
        SELECT j.*, row_number() OVER w AS n, count(j.pr) OVER w AS g,
               count(j.msg) FILTER (WHERE j.typ = 'progress') OVER w AS gm
        FROM j WHERE j.res = 'ok'
        WINDOW w AS (PARTITION BY j.tid ORDER BY j.i)
    ), snap AS (
        SELECT ok.*,
               coalesce(max(ok.pr) OVER (PARTITION BY ok.tid, ok.g), ok.tpr) AS npr,
               CASE WHEN ok.gm = 0 THEN ok.tmsg
                    ELSE max(ok.msg) FILTER (WHERE ok.typ = 'progress')
                             OVER (PARTITION BY ok.tid, ok.gm) END AS nmsg,
               count(*) OVER (PARTITION BY ok.tid) AS cnt
        FROM ok
    ), upd AS (
        UPDATE tasks tk SET progress = s.npr, message = s.nmsg,
                            last_seq = tk.last_seq + s.cnt, updated_at = now()
        FROM snap s WHERE tk.task_id = s.tid AND s.n = s.cnt
    ), per_owner AS (
        SELECT snap.own, count(*) AS c FROM snap GROUP BY snap.own
    ), ten AS (
        UPDATE tenants tn SET last_seq = tn.last_seq + p.c
        FROM per_owner p WHERE tn.owner = p.own
        RETURNING tn.owner, tn.last_seq - p.c AS tbase
    ), numbered AS (
        SELECT s.i, s.tid, s.base + s.n AS sq,
               ten.tbase + row_number() OVER (PARTITION BY s.own ORDER BY s.i) AS tsq,
               s.own, s.typ, s.npr, s.msg, s.dat, s.att
        FROM snap s JOIN ten ON ten.owner = s.own
    ), ins AS (
        INSERT INTO task_events (task_id, seq, owner, tenant_seq, type, status, progress,
                                 message, data, attempt)
        SELECT nb.tid, nb.sq, nb.own, nb.tsq, nb.typ, 'running', nb.npr, nb.msg, nb.dat, nb.att
        FROM numbered nb
    )
    SELECT j.i, j.res, nb.sq, nb.tsq, CASE WHEN j.res = 'ok' THEN 'running' ELSE j.st END,
           nb.npr, CASE WHEN j.res = 'ok' THEN j.att END,
           CASE WHEN j.res = 'ok' THEN now() END
    FROM j LEFT JOIN numbered nb ON nb.i = j.i;
    IF slow IS NOT NULL THEN
        RETURN QUERY
        SELECT s.idx + cardinality(tids), s.outcome, s.seq, s.tenant_seq, s.status, s.progress,
               s.attempt, s.created_at
        FROM ts_append_events(slow, false) s;
    END IF;
END;
$$;

-- Every write of an event goes through ts_append / ts_append_events, which lock the task row
-- first: the foreign key's per-row check (an SPI query per inserted event, ~15 us, a third of
-- the fast path's cost) guards nothing they do not. Nothing deletes tasks; whatever comes to
-- delete them deletes their events first.
ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;

-- 2. Submissions in one statement. create_tasks used to run BEGIN, INSERT tasks,
-- ts_append_events for the 'created' events (deferred tenant_seq), COMMIT — four round trips,
-- and at COMMIT a constraint trigger per task updating the tenant's row and the event again.
-- Here the tasks, their 'created' events (seq 1) and the tenant_seq range are written by one
-- statement in a transaction of its own, so the tenant's row is locked only from that
-- statement until its (asynchronous) commit, never across a client round trip, and the
-- numbers come back at once. Idempotent replays (ON CONFLICT) return no row; the caller looks
-- them up. Columns: those of store._TASK_COLS, then the created event's tenant_seq.
CREATE FUNCTION ts_create_tasks(p_ids uuid[], p_owners text[], p_types text[],
                                p_params jsonb[], p_max_attempts integer[], p_idem text[],
                                p_hashes text[], p_opts jsonb[])
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
    IF (SELECT count(DISTINCT o) FROM unnest(p_owners) o) > 1 THEN
        PERFORM 1 FROM tenants tn WHERE tn.owner = ANY (p_owners) ORDER BY tn.owner
            FOR NO KEY UPDATE;
    END IF;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO tasks AS tk (task_id, owner, task_type, params, max_attempts,
                                 idempotency_key, request_hash, options, last_seq)
        SELECT u.a, u.b, u.c, u.d, u.e, u.f, u.g, u.h, 1
        FROM unnest(p_ids, p_owners, p_types, p_params, p_max_attempts, p_idem, p_hashes,
                    p_opts)
             WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i)
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
