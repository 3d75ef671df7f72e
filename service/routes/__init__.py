from fastapi import APIRouter

from service.routes import dashboard, schedules, signals, streams, tasks, uploads, usage

router = APIRouter()
router.include_router(tasks.router)
router.include_router(streams.router)
router.include_router(uploads.router)
router.include_router(schedules.router)
router.include_router(signals.router)
router.include_router(dashboard.router)
router.include_router(usage.router)
