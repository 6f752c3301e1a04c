"""The job routes: submit (generate, custom, batch), list, get, cancel, retry, clean up, files."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.artifacts import input_key
from core.engine import Engine
from core.errors import Conflict, ProductNotFound, RunNotFound
from core.models import LogEntry, Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api, Param
from http_compat.contracts.pod.health import JOB_KINDS
from http_compat.contracts.pod.shapes import (
    BatchBody,
    BatchRequest,
    CleanupBody,
    Cleared,
    CustomRequest,
    Error,
    GenerateRequest,
    Job,
    JobBody,
    JobList,
    QuickGenerate,
    Submitted,
    Success,
)
from http_compat.contracts.pod.views import (
    DESIGN_FILE,
    FROM_STATUS,
    LIST_LIMIT,
    STATUS,
    check_types,
    children_of,
    custom_products,
    design_filename,
    generate_products,
    item_meta,
    job_view,
    run_id_of,
)
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, base_url, json_response

LIST_LOG_LINES = 50
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}


def check_part(model: type[BaseModel], data: Any, where: str) -> Any:
    """`data` (part of a body) as `model`, or a 400 naming each bad field under `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for item in exc.errors(include_url=False):
            field = ".".join([where, *(str(p) for p in item["loc"])])
            message = "is required" if item["type"] == "missing" else item["msg"]
            if item["type"] == "extra_forbidden":
                message = "is not a field of this request"
            parts.append(f"{field}: {message}")
        raise ApiError(400, "; ".join(parts)) from None


def attempts(max_retries: int | None) -> int | None:
    return None if max_retries is None else max_retries + 1


class Submitter:
    """Submits POD requests to the engine and answers `{jobId, job}`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    async def products(
        self,
        request: Request,
        products: dict[str, Any],
        original: dict[str, Any],
        kind: str,
        priority: str,
        max_retries: int | None,
    ) -> Response:
        run = await self.engine.products.submit(
            products,
            priority=priority,
            max_attempts=attempts(max_retries),
            meta={"door": "pod", "type": kind, "request": original},
        )
        return await self.answer(request, run)

    async def generate(
        self, request: Request, body: GenerateRequest, where: str, priority: str, max_retries: int | None
    ) -> Response:
        check_types(self.engine, body, where)
        products = generate_products(body, self.settings.platform_names)
        original = body.model_dump(exclude_unset=True)
        return await self.products(request, products, original, "generate", priority, max_retries)

    async def custom(
        self, request: Request, body: CustomRequest, priority: str, max_retries: int | None
    ) -> Response:
        check_types(self.engine, body, "request")
        products = custom_products(body, self.settings.platform_names)
        # The request is kept as sent except the images themselves (base64 can be megabytes):
        # a long one is echoed as its start and length.
        original = body.model_dump(exclude_unset=True)
        original["designs"] = [
            source if len(source) <= 300 else f"{source[:40]}... ({len(source)} characters)"
            for source in body.designs
        ]
        return await self.products(request, products, original, "custom", priority, max_retries)

    async def batch(
        self,
        request: Request,
        body: BatchRequest,
        original: dict[str, Any],
        priority: str,
        max_retries: int | None,
    ) -> Response:
        for index, item in enumerate(body.items):
            check_types(self.engine, item, f"items.{index}")
        platforms = self.settings.platform_names
        run = await self.engine.products.submit_batch(
            [generate_products(item, platforms) for item in body.items],
            priority=priority,
            max_attempts=attempts(max_retries),
            meta={"door": "pod", "type": "batch", "request": original},
            item_meta=[item_meta(item) for item in body.items],
        )
        return await self.answer(request, run)

    async def answer(self, request: Request, run: Run) -> Response:
        job = await job_view(self.engine, run, base_url(request))
        return json_response(Submitted(jobId=job["id"], job=job).model_dump())


def add_routes(api: Api, engine: Engine, settings: Settings) -> None:
    bad = {400: (Error, "Invalid request (the message names the field)")}
    not_found = {404: (Error, "No such job")}
    answers = KeptAnswers(engine)
    submit = Submitter(engine, settings)

    async def get(given: str) -> Run:
        try:
            return await engine.get_run(run_id_of(given))
        except RunNotFound:
            raise ApiError(404, f"Job {given[:60]} not found") from None

    @api.route(
        "POST",
        "/api/jobs",
        summary="Submit a job (generate, custom or batch)",
        body=JobBody,
        responses={200: Submitted, **bad},
        example={
            "type": "generate",
            "request": {"prompt": "A beautiful landscape", "productTypes": ["tshirt"], "autoPublish": True},
            "priority": "normal",
            "maxRetries": 3,
        },
    )
    async def create_job(request: Request, body: JobBody) -> Response:
        if body.type == "custom":
            custom = check_part(CustomRequest, body.request, "request")
            return await submit.custom(request, custom, body.priority, body.maxRetries)
        if body.type == "batch":
            batch = check_part(BatchRequest, body.request, "request")
            return await submit.batch(request, batch, body.request, body.priority, body.maxRetries)
        one = check_part(GenerateRequest, body.request, "request")
        return await submit.generate(request, one, "request", body.priority, body.maxRetries)

    @api.route(
        "GET",
        "/api/jobs",
        summary="Jobs, newest first (batch items and a job's designs are inside their job)",
        responses={200: JobList, **bad},
        params=[
            Param("status", description="Only jobs in this status.", enum=list(FROM_STATUS)),
            Param(
                "limit",
                type="integer",
                description="Atelier extension: at most this many (1..200, default 200).",
            ),
        ],
    )
    async def list_jobs(request: Request) -> Response:
        word = request.query_params.get("status")
        status = None
        if word:
            if word not in FROM_STATUS:
                raise ApiError(400, f"status: must be one of {', '.join(FROM_STATUS)} (got {word[:40]!r})")
            status = FROM_STATUS[word].value
        limit = query_int(request, "limit", LIST_LIMIT, low=1, high=LIST_LIMIT, invalid_status=400)
        page = await engine.list_runs(status=status, kind=JOB_KINDS, top_level=True, limit=limit)
        base = base_url(request)
        return json_response(
            [await job_view(engine, run, base, log_lines=LIST_LOG_LINES) for run in page.items]
        )

    @api.route(
        "POST",
        "/api/jobs/cleanup",
        summary="Delete completed and failed jobs older than maxAge ms (not those whose products are published)",
        body=CleanupBody,
        responses={200: Cleared, **bad},
        example={"maxAge": 86400000},
    )
    async def cleanup(request: Request, body: CleanupBody) -> Response:
        cutoff = time.time() - body.maxAge / 1000
        old: list[Run] = []
        cursor = None
        while True:
            page = await engine.list_runs(
                status=("completed", "failed"),
                kind=JOB_KINDS,
                top_level=True,
                limit=LIST_LIMIT,
                cursor=cursor,
            )
            old.extend(run for run in page.items if run.finished_at is not None and run.finished_at < cutoff)
            cursor = page.next_cursor
            if not cursor:
                break
        cleared = 0
        for run in old:
            if await still_published(engine, run):
                continue  # its files are the files of products people can buy
            try:
                await engine.delete(run.id)  # with its items, designs and upscales
            except RunNotFound:
                continue  # deleted meanwhile
            cleared += 1
        return json_response({"cleared": cleared})

    @api.route(
        "GET", "/api/jobs/{id}", summary="A job, with its result and logs", responses={200: Job, **not_found}
    )
    async def get_job(request: Request) -> Response:
        given = request.path_params["id"]

        async def read() -> tuple[Run, list[LogEntry]]:
            run = await get(given)
            return run, await engine.logs(run.id)

        async def render(basis: tuple[Run, list[LogEntry]]) -> Response:
            run, entries = basis
            return json_response(await job_view(engine, run, base_url(request), entries=entries))

        # A products run's answer also reads its products: never kept (see http_compat.answers).
        return await answers.answer(
            request, read, render, lambda basis: None if basis[0].kind is RunKind.POD else single(basis[0])
        )

    @api.route(
        "POST",
        "/api/jobs/{id}/cancel",
        summary="Cancel a pending or running job",
        responses={200: Success, 400: (Error, "The job is finished"), **not_found},
    )
    async def cancel(request: Request) -> Response:
        run = await get(request.path_params["id"])
        if not run.status.is_final:
            run = await engine.cancel(run.id)
            # A batch whose items partly failed ends `failed` once the rest are cancelled: that
            # is still a cancel done. A job that finished meanwhile was not cancelled.
            if run.status is RunStatus.CANCELLED or (
                run.kind is RunKind.BATCH and run.status is not RunStatus.COMPLETED
            ):
                return json_response({"success": True})
        raise ApiError(400, f"Cannot cancel job: it is {STATUS[run.status]}")

    @api.route(
        "POST",
        "/api/jobs/{id}/retry",
        summary="Queue a failed or cancelled job again",
        responses={200: Success, 400: (Error, "The job is not failed or cancelled"), **not_found},
    )
    async def retry(request: Request) -> Response:
        run = await get(request.path_params["id"])
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ApiError(
                400,
                f"Cannot retry job: it is {STATUS[run.status]}; only failed or cancelled jobs can be retried",
            )
        try:
            await engine.retry(run.id)
        except Conflict as exc:
            raise ApiError(400, f"Cannot retry job: {exc}") from None
        return json_response({"success": True})

    @api.route(
        "GET",
        "/api/files/{id}/{filename}",
        summary="A job's file: a design (design-NN), a print file or a mockup (the result's URLs)",
        responses={200: "The image's bytes", **not_found},
        produces="image/png",
    )
    async def get_file(request: Request) -> Response:
        run = await get(request.path_params["id"])
        filename = request.path_params["filename"]
        design = DESIGN_FILE.fullmatch(filename)
        if run.kind is RunKind.POD and design is not None:
            return await design_response(engine, run, int(design.group(1)) - 1, filename)
        return await artifact_response(engine, run, filename)


async def still_published(engine: Engine, run: Run) -> bool:
    """Whether a product this job made (a batch: one of its items) is published on a platform now."""
    if run.kind is RunKind.BATCH:
        return any([await still_published(engine, item) for item in await children_of(engine, run)])
    for made in (run.result or {}).get("products") or []:
        try:
            product = await engine.products.get(made["id"])
        except ProductNotFound:
            continue
        if any(listing.status == "published" for listing in product.listings):
            return True
    return False


async def design_response(engine: Engine, run: Run, index: int, filename: str) -> Response:
    """Design `index` of a products job: the image run that generated it, or the image given."""
    designs = (run.result or {}).get("designs") or []
    missing = ApiError(404, f"Job job_{run.id} has no file {filename}")
    if not 0 <= index < len(designs) or design_filename(run, index) != filename:
        raise missing
    made = designs[index]
    if made.get("run_id"):
        try:
            design_run = await engine.get_run(made["run_id"])
        except RunNotFound:
            raise missing from None
        return await artifact_response(engine, design_run, made["filename"])
    source = run.inputs["designs"][index]["source"]
    try:
        data = await engine.store.read(input_key(source["sha256"], source["media_type"]))
    except OSError:
        raise missing from None
    return Response(
        data, media_type=source["media_type"], headers={**IMMUTABLE, "ETag": f'"{source["sha256"]}"'}
    )


def add_generation_routes(api: Api, engine: Engine, settings: Settings) -> None:
    """`/api/generate` and `/api/generate/batch`, the document's quick forms of the job routes."""
    bad = {400: (Error, "Invalid request (the message names the field)")}
    submit = Submitter(engine, settings)

    @api.route(
        "POST",
        "/api/generate",
        summary="Generate designs and make them into products (a generate job)",
        body=QuickGenerate,
        responses={200: Submitted, **bad},
        example={
            "prompt": "A futuristic cityscape at sunset",
            "productTypes": ["tshirt", "hoodie"],
            "autoPublish": True,
        },
    )
    async def generate(request: Request, body: QuickGenerate) -> Response:
        one = GenerateRequest.model_validate(
            body.model_dump(exclude={"priority", "maxRetries"}, exclude_unset=True)
        )
        return await submit.generate(request, one, "body", body.priority, body.maxRetries)

    @api.route(
        "POST",
        "/api/generate/batch",
        summary="Generate several designs as one batch job",
        body=BatchBody,
        responses={200: Submitted, **bad},
        example={
            "items": [
                {"theme": "nature", "style": "minimalist", "productTypes": ["tshirt"]},
                {"theme": "technology", "style": "futuristic", "productTypes": ["hoodie"]},
                {"theme": "abstract", "style": "colorful", "productTypes": ["tshirt", "hoodie"]},
            ],
            "priority": "high",
        },
    )
    async def generate_batch(request: Request, body: BatchBody) -> Response:
        original = {"items": [item.model_dump(exclude_unset=True) for item in body.items]}
        return await submit.batch(request, body, original, body.priority, body.maxRetries)
