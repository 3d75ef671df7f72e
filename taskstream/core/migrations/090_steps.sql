-- Durable steps (ctx.step): each completed step's JSON result, in the order the run asked for
-- them. A retry, a crash recovery or a re-drive reads these rows and returns the recorded
-- results instead of running the steps again. A row is written only by the attempt that
-- currently holds the task (store_steps.record_step checks attempts and status under the
-- task row's lock), so a superseded attempt cannot record a step.
-- Deleting a task (retention, DELETE /tasks/{id}) deletes its steps.
CREATE TABLE task_steps (
    task_id     uuid NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    idx         integer NOT NULL CHECK (idx >= 0),
    name        text NOT NULL,
    attempt     integer NOT NULL,
    result      jsonb,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, idx),
    UNIQUE (task_id, name)
);
