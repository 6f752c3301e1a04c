"""The studio's status page: is each part of Atelier working, and how much is it doing.

`GET /status` is the page; its script re-reads `GET /status/panel` (the same panel, rendered by
the same template) every few seconds and swaps it in, so the page and its refresh never
disagree. `GET /api/status` is the same report as JSON.

What is shown, and where it comes from (nothing here reads the whole ledger):
- backends: `engine.status()`'s own report: the preview renderer, and each ComfyUI server up or
  down with its queue and VRAM; each backend's lane (queued, running, slots);
- the trainer's health, the storage and the ledger;
- runs by status: the ledger's kept counts (`count_by_status`, no scan);
- throughput: top-level runs finished in the last minute and hour (`Ledger.finished_since`,
  an index on `finished_at`: it costs the runs counted), and latency since start;
- platforms: each publisher's own health check, kept for `PLATFORM_HEALTH_S` (Printify's and
  Shopify's checks call their APIs: a page left open must not call them every few seconds).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.studio.pages import PAGE_HEADERS, prefix_of, render, templates

PLATFORM_HEALTH_S = 30.0
REFRESH_S = 3  # how often the page re-reads its panel


def gib(value: Any) -> str | None:
    """Bytes as GiB with one decimal (`23.6`), or None when unknown."""
    return f"{value / 2**30:.1f}" if isinstance(value, int | float) else None


def backend_view(name: str, health: dict[str, Any]) -> dict[str, Any]:
    """A backend as the page shows it: up or down (and why), its lane, and its servers' VRAM."""
    servers = []
    for server in health.get("servers") or []:
        total, free = gib(server.get("vram_total")), gib(server.get("vram_free"))
        servers.append(
            {
                "url": server.get("url"),
                "up": bool(server.get("up")),
                "error": server.get("error"),
                "queue": server.get("queue_remaining"),
                "running": server.get("running_here"),
                "device": server.get("device"),
                "vram": f"{free} of {total} GiB free" if total and free else None,
            }
        )
    return {
        "name": name,
        "kind": health.get("kind", name),
        "up": bool(health.get("up")),
        "error": health.get("error"),
        "queued": health.get("queued", 0),
        "running": health.get("running", 0),
        "slots": health.get("slots"),
        "servers": servers,
    }


class StatusReport:
    """Builds the report; keeps the platforms' health for `PLATFORM_HEALTH_S`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._platforms: tuple[float, dict[str, dict[str, Any]]] | None = None

    async def platforms(self) -> dict[str, dict[str, Any]]:
        now = anyio.current_time()
        if self._platforms is None or now - self._platforms[0] > PLATFORM_HEALTH_S:
            self._platforms = (now, await self.engine.products.platform_health())
        return self._platforms[1]

    async def build(self) -> dict[str, Any]:
        """The whole report, as `/api/status` answers it and the panel shows it."""
        report = await self.engine.status()
        now = time.time()
        minute = await self.engine.ledger.finished_since(now - 60)
        hour = await self.engine.ledger.finished_since(now - 3600)
        metrics = report.get("metrics", {})
        publishers = self.engine.products.publishers
        return {
            "healthy": report.get("healthy", False),
            "checked_at": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
            "backends": [backend_view(name, health) for name, health in report.get("backends", {}).items()],
            "trainer": report.get("trainer"),
            "storage": report.get("storage", {}),
            "ledger": report.get("ledger", {}),
            "queue": report.get("queue", {}),
            "runs": report.get("runs", {}),
            "throughput": {
                "completed_last_minute": minute.get("completed", 0),
                "completed_last_hour": hour.get("completed", 0),
                "failed_last_hour": hour.get("failed", 0),
                "latency_p50_s": metrics.get("latency_p50_s"),
                "latency_p99_s": metrics.get("latency_p99_s"),
                "uptime_s": metrics.get("uptime_s"),
            },
            "platforms": [
                # Whether it is configured is the publisher's to say: not every health report says it.
                {"name": name, **health, "configured": publishers[name].configured()}
                for name, health in (await self.platforms()).items()
                if name in publishers
            ],
        }


def add_status(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare `/status`, its panel and `/api/status` on the studio's `api`."""
    logged_in = settings.api_token is not None
    reports = StatusReport(engine)

    @api.route(
        "GET", "/status", summary="Status: backends, queue, throughput, platforms", produces="text/html"
    )
    async def status_page(request: Request) -> Response:
        prefix = prefix_of(request)
        return render(
            "status.html", prefix, report=await reports.build(), refresh_s=REFRESH_S, logged_in=logged_in
        )

    @api.route(
        "GET",
        "/status/panel",
        summary="The status page's panel (HTML), for its refresh",
        produces="text/html",
    )
    async def status_panel(request: Request) -> Response:
        html = templates.get_template("status_panel.html").render(
            prefix=prefix_of(request), report=await reports.build()
        )
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @api.route("GET", "/api/status", summary="The status report as JSON")
    async def status_json(request: Request) -> Response:
        return JSONResponse(await reports.build())
