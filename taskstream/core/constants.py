"""Every name shared across processes, defined once.

Channel and key formats take the deployment namespace so that several deployments (or
test sessions) can share one Redis without hearing each other.
"""

from typing import Final

QUEUE_SUFFIX: Final = "queue"
#: arq function that runs every task; the job carries only the task id.
RUN_TASK_FUNCTION: Final = "run_task"

#: The tenant used when authentication is switched off (local embedded run).
ANONYMOUS_OWNER: Final = "public"
#: The tenant that owns schedules declared with ``@task(cron=...)`` (and so their tasks):
#: the anonymous one, so that a local run lists them with everything else.
SCHEDULE_OWNER: Final = ANONYMOUS_OWNER
#: The reserved task type of a batch's parent (migration 100): no worker runs it, no job is
#: queued for it, the sweeper leaves it alone; the batch driver starts and ends it.
BATCH_TASK_TYPE: Final = "batch"


def queue_name(namespace: str) -> str:
    return f"{namespace}:{QUEUE_SUFFIX}"


def task_channel(namespace: str, task_id: str) -> str:
    """Redis pub/sub channel carrying one task's events."""
    return f"{namespace}:task:{task_id}"


def tenant_channel(namespace: str, owner: str) -> str:
    """Redis pub/sub channel carrying every event of one tenant's tasks."""
    return f"{namespace}:tenant:{owner}"


def control_channel(namespace: str) -> str:
    """Channel workers listen on for cancellation requests."""
    return f"{namespace}:control"


def hub_client_name(namespace: str) -> str:
    """The name a web process's pub/sub connection gives itself (CLIENT SETNAME), so that
    ``CLIENT LIST`` tells which connections are hubs and of which namespace. Redis refuses
    spaces in a name."""
    return "taskstream-hub:" + "".join("_" if c.isspace() else c for c in namespace)


def rate_key(namespace: str, tenant: str, second: int) -> str:
    """Submissions a tenant made in one wall-clock second (the rate limit's window)."""
    return f"{namespace}:rate:{tenant}:{second}"


def live_text_key(namespace: str, task_id: str, attempt: int, stream: str) -> str:
    """The live lane: the text so far of one model output stream (UTF-8), per attempt."""
    return f"{namespace}:live:{task_id}:{attempt}:{stream}"


def live_index_key(namespace: str, task_id: str) -> str:
    """The live lane's index of one task: stream name -> its latest attempt ("3", or
    "3:done" once its durable ``text`` event is stored)."""
    return f"{namespace}:live:{task_id}"

#: A signal's name (``ctx.wait_for(name)``, ``POST /tasks/{id}/signals/{name}``): a short label
#: that is safe in a URL path.
SIGNAL_NAME_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,100}$"
