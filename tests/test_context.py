"""The worker's context is the public ``taskstream.TaskContext``: every member the protocol
documents exists on it with the same signature, so task code written against the protocol
runs unchanged."""

import inspect

from taskstream import TaskContext
from worker.context import WorkerContext


def test_worker_context_implements_the_public_protocol() -> None:
    members = [n for n in dir(TaskContext) if not n.startswith("_")]
    assert {"progress", "log", "partial", "flush"} <= set(members)
    for name in members:
        proto = getattr(TaskContext, name)
        impl = getattr(WorkerContext, name)
        assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(proto), name
        assert inspect.signature(impl, eval_str=True) == \
            inspect.signature(proto, eval_str=True), name
    for attr in ("task_id", "owner", "attempt"):
        assert attr in TaskContext.__annotations__
        assert f"self.{attr} =" in inspect.getsource(WorkerContext.__init__), attr
