"""`/health`, `/api/info` and `/api/metrics`: the engine, its generation backend and its platforms."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.models import RunKind, RunStatus
from core.settings import Settings
from http_compat.api import Api
from http_compat.contracts.pod.shapes import Health, HealthWord, Info, InfoConfig, Metrics, Services
from http_compat.contracts.pod.views import LIST_LIMIT
from http_compat.responses import json_response

# The runs that are POD jobs: images (from any door), batches, and products runs.
JOB_KINDS = ("image", "batch", "pod")
PLATFORMS = ("printify", "shopify", "storefront")


class Clock:
    """When this server started, and when a run last changed (as far as this process saw)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.last_change = 0.0


async def compute_metrics(engine: Engine, clock: Clock) -> dict[str, Any]:
    kinds = set(map(RunKind, JOB_KINDS))
    counts = await engine.ledger.count_by_status(kinds=kinds, top_level=True)
    completed, failed = counts[RunStatus.COMPLETED], counts[RunStatus.FAILED]
    # Over the newest completed jobs a list would show; their times only, not whole runs.
    mean_s = await engine.ledger.mean_duration(
        statuses={RunStatus.COMPLETED}, kinds=kinds, top_level=True, newest=LIST_LIMIT
    )
    newest = (await engine.list_runs(limit=1)).items
    changed = [t for run in newest for t in (run.created_at, run.started_at, run.finished_at) if t]
    last = max([clock.started, clock.last_change, *changed])
    finished = completed + failed
    return Metrics(
        totalJobs=sum(counts.values()),
        completedJobs=completed,
        failedJobs=failed,
        runningJobs=counts[RunStatus.RUNNING],
        pendingJobs=counts[RunStatus.QUEUED],
        averageJobTime=int(mean_s * 1000) if mean_s is not None else 0,
        successRate=round(completed / finished * 100, 2) if finished else 100.0,
        uptime=int((time.time() - clock.started) * 1000),
        lastActivity=int(last * 1000),
    ).model_dump()


async def platforms_up(engine: Engine) -> dict[str, bool]:
    """Each platform: true only when it is configured and answering."""
    found = await engine.products.platform_health()
    return {name: bool((found.get(name) or {}).get("ok")) for name in PLATFORMS}


def add_routes(api: Api, engine: Engine, settings: Settings, clock: Clock) -> None:
    @api.route(
        "GET",
        "/health",
        summary="Health of the engine and its services (generation backend and platforms)",
        responses={200: Health, 503: (Health, "Unhealthy")},
    )
    async def health(request: Request) -> Response:
        status = await engine.status()
        backend_up = bool(status["backends"].get(settings.backend, {}).get("up"))
        up = await platforms_up(engine)
        # A platform jobs list on (enabled and configured) that does not answer: products are
        # still made and listed on the others, and its failure is named in each job's errors.
        publishers = engine.products.publishers
        down = [
            name
            for name in settings.platform_names
            if name in publishers and publishers[name].configured() and not up.get(name, False)
        ]
        metrics = await compute_metrics(engine, clock)
        finished = metrics["completedJobs"] + metrics["failedJobs"]
        word: HealthWord = "healthy"
        if not status["healthy"]:  # the backend, the storage or the ledger is in trouble
            word = "unhealthy"
        elif down or (finished >= 10 and metrics["successRate"] < 50):
            word = "degraded"
        body = Health(
            status=word,
            uptime=metrics["uptime"],
            metrics=Metrics.model_validate(metrics),
            services=Services(comfyui=backend_up, **up),
        ).model_dump()
        return json_response(body, 503 if word == "unhealthy" else 200)

    @api.route("GET", "/api/info", summary="Engine information and configuration", responses={200: Info})
    async def info(request: Request) -> Response:
        status = await engine.status()
        slots = status["backends"].get(settings.backend, {}).get("slots") or settings.local_concurrency
        return json_response(
            Info(
                name="POD Engine",
                version="1.0.0",
                config=InfoConfig(
                    maxConcurrent=int(slots),
                    maxRetries=settings.max_attempts - 1,
                    persistenceEnabled=True,
                    monitoringEnabled=True,
                ),
            ).model_dump()
        )

    @api.route("GET", "/api/metrics", summary="Current engine metrics", responses={200: Metrics})
    async def metrics(request: Request) -> Response:
        return json_response(await compute_metrics(engine, clock))
