-- Failure semantics: retry budget, crash count, worker leases, per-task options, re-drive.

ALTER TABLE tasks
    ADD COLUMN failures         integer NOT NULL DEFAULT 0,  -- attempts that failed (budget)
    ADD COLUMN crashes          integer NOT NULL DEFAULT 0,  -- attempts lost with their worker
    ADD COLUMN failure_reason   text,                        -- error | timeout | worker_lost | cancelled
    ADD COLUMN lease_expires_at timestamptz,                 -- renewed by the worker's heartbeat
    ADD COLUMN options          jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX tasks_running_lease ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_worker ON tasks (worker_id) WHERE status = 'running';
CREATE INDEX tasks_dead ON tasks (owner, finished_at DESC) WHERE status = 'failed';

-- Same contract as in 001 (see there), plus: 'started' takes a lease of e.lease seconds;
-- 'retrying' and 'failed' spend the retry budget; 'requeued' with data.reason = worker_lost
-- counts a crash; 'redriven' resets the budget for a fresh run of the same task.
CREATE OR REPLACE FUNCTION ts_append_events(evs jsonb)
RETURNS TABLE (idx integer, outcome text, seq bigint, tenant_seq bigint, status text,
               progress double precision, attempt integer, created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i integer := 0;
    t record;
    ev_type text;
    reason text;
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
        reason := e->'data'->>'reason';
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
        IF ev_type = 'redriven' THEN new_progress := 0; END IF;
        UPDATE tasks tk SET
            status = new_status,
            progress = new_progress,
            message = CASE WHEN ev_type IN ('progress', 'started', 'retrying', 'requeued',
                                            'completed', 'failed', 'cancelled', 'redriven')
                           THEN coalesce(e->>'message', CASE WHEN ev_type = 'progress'
                                                             THEN tk.message END)
                           ELSE tk.message END,
            result = CASE WHEN ev_type = 'completed' THEN e->'result'
                          WHEN ev_type = 'redriven' THEN NULL ELSE tk.result END,
            error = CASE WHEN ev_type IN ('failed', 'cancelled') THEN e->>'error'
                         WHEN ev_type IN ('started', 'redriven') THEN NULL
                         WHEN ev_type = 'retrying' THEN e->>'error'
                         ELSE tk.error END,
            attempts = ev_attempt,
            failures = CASE WHEN ev_type IN ('retrying', 'failed') THEN tk.failures + 1
                            WHEN ev_type = 'redriven' THEN 0 ELSE tk.failures END,
            crashes = CASE WHEN ev_type IN ('requeued', 'failed') AND reason = 'worker_lost'
                           THEN tk.crashes + 1
                           WHEN ev_type = 'redriven' THEN 0 ELSE tk.crashes END,
            failure_reason = CASE WHEN ev_type = 'failed' THEN coalesce(reason, 'error')
                                  WHEN ev_type = 'cancelled' THEN 'cancelled'
                                  WHEN ev_type = 'redriven' THEN NULL
                                  ELSE tk.failure_reason END,
            lease_expires_at = CASE WHEN ev_type = 'started'
                                    THEN now() + make_interval(
                                        secs => coalesce((e->>'lease')::double precision, 60))
                                    WHEN new_status <> 'running' THEN NULL
                                    ELSE tk.lease_expires_at END,
            started_at = CASE WHEN ev_type = 'started' THEN coalesce(tk.started_at, now())
                              ELSE tk.started_at END,
            finished_at = CASE WHEN new_status IN ('completed', 'failed', 'cancelled')
                               THEN now() WHEN ev_type = 'redriven' THEN NULL
                               ELSE tk.finished_at END,
            cancel_requested = CASE WHEN ev_type = 'cancel_requested' THEN true
                                    WHEN ev_type = 'redriven' THEN false
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
