-- Language-model token usage (taskstream.builtin.llm). One row per model call: the step it
-- ran in and the attempt that ran it, so a step re-run after a crash counts again (the
-- tokens were spent twice) while a replayed step (its result recorded) adds nothing. No
-- foreign key to tasks: usage is an account that outlives a task's row (retention).
CREATE TABLE llm_usage (
    task_id           uuid NOT NULL,
    step              text NOT NULL,
    attempt           integer NOT NULL,
    owner             text NOT NULL,
    provider          text NOT NULL,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    estimated         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step, attempt)
);
CREATE INDEX llm_usage_owner ON llm_usage (owner, created_at);

-- Each tenant's running totals, kept by the same statement that records a call (so a
-- tenant's usage is one row to read, however many calls it made).
CREATE TABLE llm_usage_tenants (
    owner             text PRIMARY KEY,
    calls             bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
