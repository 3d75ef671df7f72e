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

#: In matching order (POST /tasks, the hottest route, first). The app includes each one
#: directly: FastAPI matches an included router once to select it and again to dispatch, at
#: every level of nesting, walking the router tree each time, so one umbrella router around
#: these cost ~2x the routing of one level (bench submission).
routers: tuple[APIRouter, ...] = (
    tasks.router,
    streams.router,
    uploads.router,
    schedules.router,
    batches.router,
    search.router,
    signals.router,
    dashboard.router,
    ops.router,
    webhooks.router,
    usage.router,
)
