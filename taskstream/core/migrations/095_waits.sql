-- Waits and signals (ctx.wait_for, POST /tasks/{id}/signals/{name}). One row per (task, name):
-- written by whichever comes first, the run that waits (suspended, deadline) or the signal
-- (payload, signalled_at; a signal may arrive before the run asks for it). resumed_at is
-- set once, by whoever re-queues the suspended run (the signal's request, the run itself when
-- the signal came while it was suspending, or the sweeper at the deadline): one resume per
-- wait. The resolved wait is then recorded as a step ("wait:<name>"), so a later attempt
-- replays it instead of waiting again.
CREATE TABLE task_waits (
    task_id      uuid NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    name         text NOT NULL,
    suspended    boolean NOT NULL DEFAULT false,
    deadline     timestamptz,
    payload      jsonb,
    signalled_at timestamptz,
    resumed_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, name)
);
-- The sweeper's questions: which suspended runs are due (their deadline passed, or their
-- signal came but whoever delivered it died before re-queueing the run), and (for the
-- stale-pending rescue) which pending tasks are suspended on purpose.
CREATE INDEX task_waits_suspended ON task_waits (task_id) WHERE suspended AND resumed_at IS NULL;
