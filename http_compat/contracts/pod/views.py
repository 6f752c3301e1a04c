"""Runs as the document's jobs and results, and POD requests as engine requests."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from core.engine import Engine
from core.errors import InvalidInput, ProductNotFound
from core.ids import RUN_ID_RE
from core.models import LogEntry, Run, RunKind, RunStatus
from core.publishing.prompts import compose
from core.publishing.runs import PART_KEY_PREFIX
from core.publishing.storefront import absolute_url
from http_compat.contracts.pod.shapes import (
    BatchResult,
    CustomRequest,
    GeneratedImage,
    GenerateRequest,
    GenerateResult,
    Job,
    JobType,
    LogLine,
    LogType,
    ProductEntry,
    ProductTerms,
)
from http_compat.errors import ApiError

STATUS = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}
FROM_STATUS = {word: status for status, word in STATUS.items()}
LIST_LIMIT = 200
DESIGN_FILE = re.compile(r"^design-(\d{2})\.(png|jpg|webp)$")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def job_id(run_id: str) -> str:
    return f"job_{run_id}"


def run_id_of(given: str) -> str:
    """The run behind a job id (`job_<run id>` or the bare run id), or 404."""
    run_id = given.removeprefix("job_")
    if not RUN_ID_RE.fullmatch(run_id):
        raise ApiError(404, f"Job {given[:60]} not found")
    return run_id


def percent(fraction: float) -> int:
    return max(0, min(100, math.floor(fraction * 100 + 1e-9)))


def is_part(run: Run) -> bool:
    """Whether the run is a design or upscale made inside a products job (not a job itself)."""
    return run.kind is RunKind.IMAGE and (run.idempotency_key or "").startswith(PART_KEY_PREFIX)


# --- requests -> engine ---------------------------------------------------------------------


def check_types(engine: Engine, terms: ProductTerms, where: str) -> None:
    """Every product type is in the catalog, or a 400 naming the known ones."""
    for key in terms.productTypes:
        try:
            engine.products.catalog.get(key)
        except InvalidInput as exc:
            raise ApiError(400, f"{where}.productTypes: {exc.problem}") from None


def prompts_of(request: GenerateRequest) -> tuple[list[str], dict[str, str] | None]:
    """The request's prompts (one per design) and, when composed, what they were composed from."""
    if (request.prompt or "").strip():
        return [request.prompt or ""] * request.count, None
    source = {
        "theme": (request.theme or "").strip(),
        "style": (request.style or "").strip(),
        "niche": (request.niche or "").strip(),
    }
    prompts = compose(source["theme"], source["style"], source["niche"], request.count)
    return prompts, {k: v for k, v in source.items() if v}


def terms_of(terms: ProductTerms, platforms: list[str]) -> dict[str, Any]:
    given: dict[str, Any] = {
        "product_types": list(dict.fromkeys(terms.productTypes)),
        "publish": terms.autoPublish,
        "platforms": platforms,
    }
    if terms.title is not None:
        given["title"] = terms.title
    if terms.description is not None:
        given["description"] = terms.description
    if terms.price is not None:
        given["price_cents"] = round(terms.price * 100)
    return given


def generate_products(request: GenerateRequest, platforms: list[str]) -> dict[str, Any]:
    """A generate request as one products run: its prompts as designs, made into its product types."""
    prompts, composed = prompts_of(request)
    extra = {k: v for k, v in (("width", request.width), ("height", request.height)) if v is not None}
    if request.steps is not None:
        extra["steps"] = request.steps
    designs = [
        {"prompt": prompt, **extra, **({"seed": request.seed + n} if request.seed is not None else {})}
        for n, prompt in enumerate(prompts)
    ]
    products = {"designs": designs, **terms_of(request, platforms)}
    if composed:
        products["composed_from"] = composed
    return products


def custom_products(request: CustomRequest, platforms: list[str]) -> dict[str, Any]:
    """A custom request as one products run: the given images as designs, nothing generated."""
    return {"designs": [{"source": source} for source in request.designs], **terms_of(request, platforms)}


def item_meta(request: GenerateRequest) -> dict[str, Any]:
    return {"door": "pod", "type": "generate", "request": request.model_dump(exclude_unset=True)}


def pod_request(run: Run) -> dict[str, Any] | None:
    """The request a POD client sent for this run (None for runs other doors made)."""
    meta = run.meta or {}
    request = meta.get("request") if meta.get("door") == "pod" else None
    return request if isinstance(request, dict) else None


def job_type(run: Run) -> JobType:
    meta = run.meta or {}
    if meta.get("door") == "pod" and meta.get("type") in ("generate", "batch", "custom"):
        return meta["type"]
    if run.kind is RunKind.BATCH:
        return "batch"
    if run.kind is RunKind.POD and all("source" in d for d in run.inputs.get("designs") or []):
        return "custom"
    return "generate"


def foreign_request(run: Run) -> dict[str, Any]:
    """What a POD client would have sent for a run another door made."""
    if run.kind is RunKind.POD:
        inputs = run.inputs
        return {
            "designs": [d.get("prompt") or d.get("source", {}).get("origin", "") for d in inputs["designs"]],
            "productTypes": list(inputs.get("product_types") or []),
            "autoPublish": bool(inputs.get("publish")),
        }
    return {"prompt": run.inputs.get("prompt", ""), "count": run.inputs.get("count", 1)}


# --- results --------------------------------------------------------------------------------


def origin_of(base: str) -> str:
    """`scheme://host:port` of a contract's base URL (the storefront's `/shop` is at the origin's root)."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def total_time(run: Run) -> int | None:
    started = run.started_at or run.created_at
    return None if run.finished_at is None else max(0, int((run.finished_at - started) * 1000))


def design_filename(run: Run, index: int) -> str:
    """The name design `index` (from 0) of a products run is served under, in its job's files."""
    design = run.inputs["designs"][index]
    media_type = design["source"]["media_type"] if "source" in design else "image/png"
    return f"design-{index + 1:02d}.{EXTENSIONS.get(media_type, 'png')}"


def unfinished_result(run: Run) -> dict[str, Any]:
    """A batch item that failed or was cancelled, as a generate result saying why."""
    error = run.error or f"the job was {run.status.value}"
    return GenerateResult(
        success=False, generatedImages=[], products=[], errors=[error], totalTime=total_time(run)
    ).model_dump()


async def item_result(engine: Engine, run: Run, base: str) -> dict[str, Any]:
    """A finished batch item (a products run, or an image run another door made) as a generate result."""
    if run.status is not RunStatus.COMPLETED:
        return unfinished_result(run)
    if run.kind is RunKind.POD:
        return await products_result(engine, run, base)
    return image_result(run, base)


def image_result(run: Run, base: str) -> dict[str, Any]:
    """A completed image run as a generate result: its images, no products."""
    prompt = str(run.inputs.get("prompt", ""))
    images = [
        GeneratedImage(
            id=f"img_{run.id}_{index}",
            url=f"{base}/api/files/{job_id(run.id)}/{artifact.filename}",
            prompt=prompt,
        )
        for index, artifact in enumerate(run.artifacts, start=1)
    ]
    return GenerateResult(
        success=True, generatedImages=images, products=[], errors=[], totalTime=total_time(run)
    ).model_dump()


async def products_result(engine: Engine, run: Run, base: str) -> dict[str, Any]:
    """A completed products run as the document's generate result.

    `products`: one entry per platform listing that has the platform's id (a product refused or
    a platform that failed has none; its reason is in `errors`, the other platforms' stay).
    """
    made = run.result or {}
    designs = made.get("designs") or []
    images = [
        GeneratedImage(
            id=f"img_{run.id}_{index + 1}",
            url=f"{base}/api/files/{job_id(run.id)}/{design_filename(run, index)}",
            prompt=str(design.get("prompt") or ""),
        )
        for index, design in enumerate(designs)
    ]
    entries = []
    for product in made.get("products") or []:
        for listing in product.get("listings") or []:
            if not listing.get("external_id"):
                continue
            entries.append(
                ProductEntry(
                    platform=listing["platform"],
                    productId=str(listing["external_id"]),
                    url=absolute_url(listing["url"], origin_of(base)) if listing.get("url") else None,
                    type=product["type"],
                    status=listing.get("status") or "draft",
                    title=product.get("title") or "",
                    atelierProductId=product["id"],
                )
            )
    return GenerateResult(
        success=bool(entries),
        generatedImages=images,
        products=entries,
        errors=[str(e) for e in made.get("errors") or []],
        totalTime=total_time(run),
        files=await product_files(engine, run, base),
    ).model_dump()


async def product_files(engine: Engine, run: Run, base: str) -> dict[str, list[dict[str, Any]]]:
    """Each product's print files and mockups with their URLs (an extension of the result)."""
    files: dict[str, list[dict[str, Any]]] = {}  # by Atelier product id
    for product in (run.result or {}).get("products") or []:
        try:
            found = await engine.products.get(product["id"])
        except ProductNotFound:
            continue
        files[found.id] = [
            {
                "role": item.role,
                "name": item.name,
                "url": f"{base}/api/files/{job_id(item.run_id)}/{item.filename}",
                "width": item.width,
                "height": item.height,
                "dpi": item.dpi,
            }
            for item in found.files
        ]
    return files


async def children_of(engine: Engine, run: Run) -> list[Run]:
    """A batch's item runs, in item order."""
    page = await engine.list_runs(parent_id=run.id, limit=LIST_LIMIT)
    return sorted(page.items, key=lambda child: child.seq)


def log_type(entry: LogEntry) -> LogType:
    if entry.level == "error":
        return "ERROR"
    if entry.level == "warning":
        return "WARNING"
    if entry.message.startswith(("completed", "batch completed", "made ")):
        return "SUCCESS"
    return "INFO"


async def job_view(
    engine: Engine,
    run: Run,
    base: str,
    *,
    log_lines: int | None = None,
    entries: list[LogEntry] | None = None,
) -> dict[str, Any]:
    """The run as the document's job object (`entries`: its log lines, when already read)."""
    request = pod_request(run)
    result: dict[str, Any] | None = None
    if run.kind is RunKind.BATCH:
        children = await children_of(engine, run)
        if request is None:
            request = {"items": [foreign_request(child) for child in children]}
        if run.status.is_final:
            results = [await item_result(engine, child, base) for child in children]
            errors = [
                f"item {index}: {child.error or 'failed'}"
                for index, child in enumerate(children, start=1)
                if child.status is RunStatus.FAILED
            ]
            result = BatchResult.model_validate(
                {"results": results, "errors": errors, "total": len(children)}
            ).model_dump()
    else:
        if request is None:
            request = foreign_request(run)
        if run.status is RunStatus.COMPLETED:
            result = await item_result(engine, run, base)
    if entries is None:
        entries = await engine.logs(run.id)
    if log_lines is not None:
        entries = entries[-log_lines:]
    return Job(
        id=job_id(run.id),
        type=job_type(run),
        status=STATUS[run.status],
        priority=run.priority.value,
        progress=100 if run.status is RunStatus.COMPLETED else percent(run.progress),
        request=request,
        createdAt=ms(run.created_at) or 0,
        startedAt=ms(run.started_at),
        completedAt=ms(run.finished_at),
        result=result,
        error=run.error if run.status is RunStatus.FAILED else None,
        retryCount=max(0, run.attempts - 1),
        maxRetries=max(0, run.max_attempts - 1),
        logs=[
            LogLine(timestamp=ms(entry.at) or 0, message=entry.message, type=log_type(entry))
            for entry in entries
        ],
    ).model_dump()
