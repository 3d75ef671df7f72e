from fastapi import APIRouter

from service.routes import (
    batches,
    dashboard,
    ops,
    schedules,
    search,
    signals,
    streams,
    tasks,
    uploads,
    usage,
    webhooks,
)

router = APIRouter()
router.include_router(tasks.router)
router.include_router(streams.router)
router.include_router(uploads.router)
router.include_router(schedules.router)
router.include_router(batches.router)
router.include_router(search.router)
router.include_router(signals.router)
router.include_router(dashboard.router)
router.include_router(ops.router)
router.include_router(webhooks.router)
router.include_router(usage.router)
