-- Cron schedules. Each row's next_run_at is the next slot it owes. Every worker claims due
-- rows with FOR UPDATE SKIP LOCKED, creates the slot's task (idempotency key from schedule
-- id and slot time, so even a second claim could not make a second task) and advances
-- next_run_at in the same transaction: a slot fires once across all workers.
--
-- declared: written by the workers from a ``@task(cron=...)`` declaration (one per task
-- type, owned by the system tenant); disabled when the declaration is gone. paused: set
-- through the API by the owner.
CREATE TABLE schedules (
    schedule_id   uuid PRIMARY KEY,
    owner         text NOT NULL REFERENCES tenants (owner),
    task_type     text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    misfire       text NOT NULL DEFAULT 'skip' CHECK (misfire IN ('skip', 'catch_up')),
    declared      boolean NOT NULL DEFAULT false,
    paused        boolean NOT NULL DEFAULT false,
    disabled      boolean NOT NULL DEFAULT false,
    next_run_at   timestamptz NOT NULL,
    last_fired_at timestamptz,
    fired         bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX schedules_declared ON schedules (owner, task_type) WHERE declared;
CREATE INDEX schedules_owner ON schedules (owner, created_at);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused AND NOT disabled;
