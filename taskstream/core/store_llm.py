"""SQL of language-model token usage (migration 130): record a call, read a run's and a
tenant's totals. On the asyncpg pool: a call is recorded from inside a running task."""

import uuid

from taskstream.core.models import RunUsage, StepUsage, TenantUsage
from taskstream.core.store import Executor

#: A run's snapshot lists this many calls (its totals count them all).
STEPS_SHOWN = 100


async def record_usage(db: Executor, *, task_id: uuid.UUID | str, owner: str, step: str,
                       attempt: int, provider: str, model: str, prompt_tokens: int,
                       completion_tokens: int, estimated: bool) -> bool:
    """Record one call and add it to the tenant's totals, in one statement. The same
    (task, step, attempt) recorded again changes nothing; returns whether it was new."""
    row = await db.fetchrow(
        """WITH ins AS (
               INSERT INTO llm_usage (task_id, step, attempt, owner, provider, model,
                                      prompt_tokens, completion_tokens, estimated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT DO NOTHING
               RETURNING owner, prompt_tokens, completion_tokens)
           INSERT INTO llm_usage_tenants AS t (owner, calls, prompt_tokens, completion_tokens)
           SELECT owner, 1, prompt_tokens, completion_tokens FROM ins
           ON CONFLICT (owner) DO UPDATE SET
               calls = t.calls + 1,
               prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens,
               completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens,
               updated_at = now()
           RETURNING 1""",
        task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(task_id), step, attempt,
        owner, provider, model, prompt_tokens, completion_tokens, estimated)
    return row is not None


async def run_usage(db: Executor, task_id: uuid.UUID) -> RunUsage | None:
    """A run's usage (all its attempts); None when it made no model call."""
    rows = await db.fetch(
        """SELECT step, attempt, provider, model, prompt_tokens, completion_tokens, estimated,
                  count(*) OVER () AS calls,
                  sum(prompt_tokens) OVER () AS prompt_total,
                  sum(completion_tokens) OVER () AS completion_total,
                  bool_or(estimated) OVER () AS any_estimated
           FROM llm_usage WHERE task_id = $1
           ORDER BY created_at, step, attempt LIMIT $2""", task_id, STEPS_SHOWN)
    if not rows:
        return None
    first = rows[0]
    prompt, completion = int(first["prompt_total"]), int(first["completion_total"])
    return RunUsage(
        calls=first["calls"], prompt_tokens=prompt, completion_tokens=completion,
        total_tokens=prompt + completion, estimated=first["any_estimated"],
        steps=[StepUsage(step=r["step"], attempt=r["attempt"], provider=r["provider"],
                         model=r["model"], prompt_tokens=r["prompt_tokens"],
                         completion_tokens=r["completion_tokens"], estimated=r["estimated"])
               for r in rows])


async def tenant_usage(db: Executor, owner: str) -> TenantUsage:
    row = await db.fetchrow(
        """SELECT calls, prompt_tokens, completion_tokens FROM llm_usage_tenants
           WHERE owner = $1""", owner)
    calls, prompt, completion = (row["calls"], row["prompt_tokens"], row["completion_tokens"]
                                 ) if row else (0, 0, 0)
    return TenantUsage(owner=owner, calls=calls, prompt_tokens=prompt,
                       completion_tokens=completion, total_tokens=prompt + completion)
