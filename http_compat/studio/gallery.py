"""The gallery: top-level runs newest first, filtered, paged over the ledger's cursor.

`GET <prefix>/` renders the first `PAGE` cards; `GET <prefix>/api/runs` answers the same cards
as JSON with the cursor of the next page (the script's "Load more" and its infinite scroll).
Both take `status`, `kind` and `backend` filters. The ledger filters status and kind itself;
it keeps no index by backend, so a backend filter is applied to the pages read, reading on
until a page is full or `SCAN_LIMIT` runs were looked at (then the cursor says where to go on):
a rare backend among many runs costs a few more requests, never one unbounded one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.engine import Engine
from core.errors import InvalidInput
from core.models import Run, RunKind, RunStatus
from core.publishing.runs import LANE as PUBLISHING_LANE
from core.settings import Settings
from core.training.kind import LANE as TRAINING_LANE
from http_compat.api import Api, Param
from http_compat.studio.errors import invalid
from http_compat.studio.pages import prefix_of, render
from http_compat.studio.views import card

PAGE = 48  # cards per page
MAX_LIMIT = 100
SCAN_PAGE = 100  # runs read at a time while filtering by backend
SCAN_LIMIT = 1000  # runs looked at by one request filtering by backend
_BACKEND = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Filters:
    """What the gallery shows: one status, kind and backend at most ("" for any)."""

    status: str = ""
    kind: str = ""
    backend: str = ""

    @classmethod
    def of(cls, query: Any) -> Filters:
        """The filters of a query string; `InvalidInput` names a value that is not one of the choices."""
        status = query.get("status", "").strip().lower()
        kind = query.get("kind", "").strip().lower()
        backend = query.get("backend", "").strip()
        if status and status not in RunStatus.__members__.values():
            raise InvalidInput("status", f"must be one of {', '.join(RunStatus)} (got {status[:40]!r})")
        if kind and kind not in RunKind.__members__.values():
            raise InvalidInput("kind", f"must be one of {', '.join(RunKind)} (got {kind[:40]!r})")
        if backend and not _BACKEND.fullmatch(backend):
            raise InvalidInput("backend", f"is not a backend name (got {backend[:40]!r})")
        return cls(status, kind, backend)

    def query(self, **more: str) -> str:
        """These filters (and `more`) as a query string, without the empty ones."""
        pairs = {"status": self.status, "kind": self.kind, "backend": self.backend, **more}
        return urlencode({k: v for k, v in pairs.items() if v})


async def gallery_page(
    engine: Engine, filters: Filters, cursor: str | None = None, limit: int = PAGE
) -> tuple[list[Run], str | None]:
    """Top-level runs matching `filters`, newest first, and the cursor of the ones after them."""
    status, kind = filters.status or None, filters.kind or None
    if not filters.backend:
        page = await engine.list_runs(status=status, kind=kind, top_level=True, limit=limit, cursor=cursor)
        return page.items, page.next_cursor
    found: list[Run] = []
    scanned = 0
    while True:
        page = await engine.list_runs(
            status=status, kind=kind, top_level=True, limit=SCAN_PAGE, cursor=cursor
        )
        found += [run for run in page.items if run.backend == filters.backend]
        scanned += len(page.items)
        cursor = page.next_cursor
        if cursor is None or len(found) >= limit or scanned >= SCAN_LIMIT:
            return found, cursor


def backends_of(engine: Engine) -> list[str]:
    """The backends a run can have been made on: the image backends and the work lanes."""
    return sorted({*engine.backends, TRAINING_LANE, PUBLISHING_LANE})


FILTER_PARAMS = [
    Param("status", enum=[s.value for s in RunStatus], description="Only runs in this status"),
    Param("kind", enum=[k.value for k in RunKind], description="Only runs of this kind"),
    Param("backend", description="Only runs made on this backend (e.g. local, comfyui)"),
]


def add_gallery(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the gallery page and its JSON pages on `api`."""
    logged_in = settings.api_token is not None

    @api.route(
        "GET", "/", summary="The gallery: runs newest first", produces="text/html", params=FILTER_PARAMS
    )
    async def gallery(request: Request) -> Response:
        prefix = prefix_of(request)
        problem = None
        try:
            filters = Filters.of(request.query_params)
        except InvalidInput as exc:
            filters, problem = Filters(), str(exc)
        try:
            runs, next_cursor = await gallery_page(
                engine, filters, request.query_params.get("cursor") or None
            )
        except InvalidInput as exc:  # a cursor of another server, or typed by hand
            problem = str(exc)
            runs, next_cursor = await gallery_page(engine, filters)
        return render(
            "gallery.html",
            prefix,
            section="gallery",
            runs=[card(run, prefix) for run in runs],
            next_cursor=next_cursor,
            filters=filters,
            statuses=[s.value for s in RunStatus],
            kinds=[k.value for k in RunKind],
            backends=backends_of(engine),
            problem=problem,
            logged_in=logged_in,
        )

    @api.route(
        "GET",
        "/api/runs",
        summary="A page of the gallery's cards, newest first",
        params=[
            *FILTER_PARAMS,
            Param("cursor", description="`next_cursor` of the page before"),
            Param("limit", type="integer", description=f"Cards per page, 1..{MAX_LIMIT} (default {PAGE})"),
        ],
    )
    async def runs_json(request: Request) -> Response:
        prefix = prefix_of(request)
        query = request.query_params
        try:
            filters = Filters.of(query)
            raw = query.get("limit", "")
            limit = PAGE if raw == "" else int(raw) if raw.isdigit() and len(raw) < 6 else 0
            if not 1 <= limit <= MAX_LIMIT:
                raise InvalidInput("limit", f"must be an integer in 1..{MAX_LIMIT} (got {raw[:20]!r})")
        except InvalidInput as exc:
            raise invalid(exc) from None
        runs, next_cursor = await gallery_page(engine, filters, query.get("cursor") or None, limit)
        return JSONResponse({"cards": [card(run, prefix) for run in runs], "next_cursor": next_cursor})
