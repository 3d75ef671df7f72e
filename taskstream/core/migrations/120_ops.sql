-- Operations: retention per tenant, webhooks and their delivery outbox.
--
-- Retention: a finished task (with its events, steps and document chunks, by cascade) is
-- pruned once it is older than its tenant's retention_days, or the deployment's
-- TASKSTREAM_RETENTION_DAYS where the tenant has none; uploads likewise once no unfinished
-- task names them. Workers prune in small batches (FOR UPDATE SKIP LOCKED): no long locks.
ALTER TABLE tenants ADD COLUMN retention_days double precision
    CHECK (retention_days IS NULL OR retention_days > 0);
CREATE INDEX tasks_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX uploads_created_at ON uploads (created_at);

-- A tenant's webhook: a URL that receives its tasks' events of the listed types, signed with
-- the secret (HMAC-SHA256 over "<timestamp>.<body>").
CREATE TABLE webhooks (
    webhook_id  uuid PRIMARY KEY,
    owner       text NOT NULL REFERENCES tenants (owner),
    url         text NOT NULL,
    secret      text NOT NULL,
    event_types text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_owner ON webhooks (owner);

-- The outbox: one row per (webhook, event), written by the trigger below in the event's own
-- transaction, so a delivery exists exactly when its event is durable. Workers claim due rows
-- (SKIP LOCKED), send them outside any transaction and record the outcome; a claim is a lease
-- (locked_until), so a delivery whose worker died is sent again (at least once).
CREATE TABLE webhook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    owner           text NOT NULL,
    task_id         uuid NOT NULL,  -- no foreign key: a pruned task keeps its delivery record
    seq             bigint NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    response_code   integer,  -- of the last attempt (NULL: no response: timeout, refused)
    error           text,
    history         jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{at, code, error, ms}] per attempt
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (webhook_id, task_id, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, delivery_id DESC);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

-- The hot path stays as it was for the events no webhook can ask for: the trigger's WHEN
-- clause is checked in C before any PL/pgSQL runs, and progress/log/partial never qualify.
-- Other events cost one index probe on webhooks_owner (usually: no row).
CREATE FUNCTION ts_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, owner, task_id, seq, event_type)
    SELECT w.webhook_id, NEW.owner, NEW.task_id, NEW.seq, NEW.type
      FROM webhooks w
     WHERE w.owner = NEW.owner AND NEW.type = ANY (w.event_types)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER task_events_webhooks AFTER INSERT ON task_events
    FOR EACH ROW WHEN (NEW.type NOT IN ('progress', 'log', 'partial'))
    EXECUTE FUNCTION ts_webhook_outbox();
