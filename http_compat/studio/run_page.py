"""A run's page: its images full size, what it was asked, its log, attempts and timings, and what
can be done with it; and the files the page links to (each image, the run's ZIP).

`GET <prefix>/runs/{id}` renders the page; the buttons call `actions` (cancel, retry, delete,
same again) and the page follows the run live on the studio's one event channel (`live`).
`GET <prefix>/runs/{id}/files/{filename}` serves an image full size (the same answer as every
contract's artifact route: `http_compat.responses.artifact_response`) and
`GET <prefix>/runs/{id}/bundle` the run's ZIP (`engine.bundle`: its images and `run.json`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import RunNotFound
from core.models import Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.responses import artifact_response, file_response
from http_compat.studio.errors import filename_of, run_id_of
from http_compat.studio.pages import not_found_page, prefix_of, render
from http_compat.studio.views import card, door, image_url, input_rows, thumbnail_url, timings

LOG_LINES = 500  # the log lines a page shows (the ledger gives the oldest first)
CHILDREN = 100  # a batch's runs a page shows


def images_of(run: Run, prefix: str) -> list[dict[str, Any]]:
    """The run's images as the page shows them, each with what "use as source" needs."""
    prompt = run.inputs.get("prompt") if isinstance(run.inputs.get("prompt"), str) else ""
    shown = []
    for number, artifact in enumerate(a for a in run.artifacts if a.media_type.startswith("image/")):
        shown.append(
            {
                "filename": artifact.filename,
                "url": image_url(prefix, artifact),
                "thumbnail": thumbnail_url(prefix, artifact),
                "width": artifact.width,
                "height": artifact.height,
                "size_kb": max(1, round(artifact.size / 1024)),
                "alt": f"{prompt} (image {number + 1})" if prompt else f"Image {number + 1} of run {run.id}",
                "source": f"atelier://runs/{run.id}/images/{artifact.filename}",
            }
        )
    return shown


def actions_of(run: Run) -> dict[str, bool]:
    """Which of the page's buttons apply to the run as it is now."""
    return {
        "cancel": not run.status.is_final,
        "retry": run.status in (RunStatus.FAILED, RunStatus.CANCELLED),
        # An upscale takes no seed: the same again would be the same image.
        "again": run.kind is RunKind.IMAGE and run.inputs.get("operation") != "upscale",
        "edit": run.kind is RunKind.IMAGE,
        "bundle": bool(run.artifacts),
    }


def add_run_page(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the run page, its image files and its ZIP on `api`."""
    logged_in = settings.api_token is not None

    @api.route("GET", "/runs/{run_id}", summary="A run's page", produces="text/html")
    async def run_page(request: Request) -> Response:
        prefix = prefix_of(request)
        try:
            run = await engine.get_run(run_id_of(request))
        except (ApiError, RunNotFound):
            # A person followed a link: a page that says so, not the JSON the script gets.
            return not_found_page(prefix, "run", "gallery", logged_in)
        log = await engine.logs(run.id, limit=LOG_LINES)
        children = []
        if run.kind is RunKind.BATCH:
            page = await engine.list_runs(parent_id=run.id, limit=CHILDREN)
            children = [card(child, prefix) for child in page.items]
        parent = None
        if run.parent_id:
            with contextlib.suppress(RunNotFound):  # a batch deleted since: the run stands alone
                parent = card(await engine.get_run(run.parent_id), prefix)
        return render(
            "run.html",
            prefix,
            section="gallery",
            run=run,
            card=card(run, prefix),
            images=images_of(run, prefix),
            inputs=input_rows(run),
            timings=timings(run),
            door=door(run),
            log=log,
            log_limit=LOG_LINES,
            children=children,
            parent=parent,
            actions=actions_of(run),
            logged_in=logged_in,
        )

    @api.route(
        "GET",
        "/runs/{run_id}/files/{filename}",
        summary="One of a run's files, full size",
        produces="application/octet-stream",
    )
    async def run_file(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        return await artifact_response(engine, run, filename_of(request))

    @api.route(
        "GET",
        "/runs/{run_id}/bundle",
        summary="A run's images and run.json as a ZIP",
        produces="application/zip",
    )
    async def run_bundle(request: Request) -> Response:
        run_id = run_id_of(request)
        bundle = await engine.bundle(run_id, reuse=True)
        return file_response(bundle.path, "application/zip", f"atelier-{run_id}.zip")
