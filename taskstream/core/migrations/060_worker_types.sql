-- The task types each running worker loads, with the hash of each type's parameter schema.
-- A worker writes its rows at start-up, touches them with every heartbeat and deletes them
-- at shutdown; a killed worker's rows simply stop being touched. The web process reads the
-- live ones to tell a submitter at once that no running worker knows a type, or that the
-- workers run another version of its parameters; the sweeper fails pending tasks of a type
-- no live worker knows.
CREATE TABLE worker_types (
    worker_id   text NOT NULL,
    task_type   text NOT NULL,
    schema_hash text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, task_type)
);
CREATE INDEX worker_types_seen ON worker_types (seen_at);
