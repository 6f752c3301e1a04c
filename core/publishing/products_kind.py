"""`products` runs (kind `pod`): making products from designs, and listing them.

They take designs (prompts to generate, or images given as sources), product types and
platforms. For each attempt they:
1. generate each prompt's design as an image run of its own (idempotency key
   `pod:<run>:design:<n>`, so a retry or a restart finds the same run instead of a new one);
2. for each design and product type: enlarge the design through an upscale run when the print
   area needs it (`pod:<run>:upscale:<n>:<scale>`), fit it to each print area at its DPI
   (`core.publishing.print_files`), draw a mockup per colour (`core.publishing.mockups`), and
   record the product (a draft; its id is derived from the run, the design and the type, so a
   retry records the same product);
3. list each product on each platform, and publish it if asked (`core.publishing.listings`,
   durable: never a second product on a platform).
A design too small for a product type even after the largest upscale is refused for that
product, with the sizes named, and the others are made. A platform that fails keeps the other
platforms' products: its failure is named in the result's `errors`; a failure that can pass is
retried (the whole attempt again, which skips what is done) until the last attempt, which
completes with the errors recorded. Deleting the run deletes its designs and upscales, and its
products that exist only in Atelier.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import anyio.to_thread

from core import batches
from core.artifacts import input_key, run_key
from core.backends import Progress, ProgressCallback
from core.errors import BackendError, InvalidInput, RunNotFound
from core.kinds import Attempt, Completion, Queueing
from core.models import Artifact, Run, RunKind, RunStatus
from core.publishing.catalog import ProductType
from core.publishing.listings import Action
from core.publishing.mockups import make_mockups
from core.publishing.models import Product, ProductFile
from core.publishing.print_files import check_reachable, make_print_file
from core.publishing.runs import LANE, Outcome, Publishing, file_media_type, part_key, result_of

MAX_DESIGNS = 16
DESIGN_WAIT_S = 3600.0
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class ProductsKind:
    """`pod` runs: designs -> print files and mockups -> products -> listings (see the module docstring)."""

    def __init__(self, publishing: Publishing) -> None:
        self.p = publishing

    async def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The run's inputs: designs (sources read and stored), product types, platforms, terms."""
        designs = request.get("designs")
        if not isinstance(designs, list | tuple) or not 1 <= len(designs) <= MAX_DESIGNS:
            raise InvalidInput(
                "designs", f"must be a list of 1..{MAX_DESIGNS} designs (a prompt or a source each)"
            )
        types = [t.key for t in self.p.catalog.check(request.get("product_types"))]
        platforms = self.p.check_platforms(request.get("platforms"))
        stored = []
        for index, design in enumerate(designs):
            stored.append(await self._design(index, design))
        price = request.get("price_cents")
        if price is not None and (
            isinstance(price, bool) or not isinstance(price, int) or not 1 <= price <= 10_000_000
        ):
            raise InvalidInput(
                "price_cents", f"must be a whole number of cents in 1..10000000 (got {price!r:.40})"
            )
        title = request.get("title")
        if title is not None and (not isinstance(title, str) or not 1 <= len(title.strip()) <= 200):
            raise InvalidInput("title", "must be 1..200 characters")
        description = request.get("description") or ""
        if not isinstance(description, str) or len(description) > 5000:
            raise InvalidInput("description", "must be text of at most 5000 characters")
        return {
            "designs": stored,
            "product_types": types,
            "platforms": platforms,
            "publish": bool(request.get("publish", False)),
            "title": title.strip() if isinstance(title, str) else None,
            "description": description,
            "price_cents": price,
            **({"composed_from": dict(request["composed_from"])} if request.get("composed_from") else {}),
        }

    async def _design(self, index: int, design: object) -> dict[str, Any]:
        where = f"designs[{index}]"
        if isinstance(design, str):
            design = {"prompt": design}
        if not isinstance(design, Mapping):
            raise InvalidInput(where, "must be {prompt: ...} or {source: ...}")
        if design.get("source") is not None:
            if not isinstance(design["source"], str):
                raise InvalidInput(f"{where}.source", "must be a run image, a file path, a URL or base64")
            try:
                data, origin = await self.p.services.read_source(design["source"])
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.source", exc.problem) from None
            width, height, media_type = await anyio.to_thread.run_sync(_measure, data, f"{where}.source")
            sha = hashlib.sha256(data).hexdigest()
            await self.p.store.put(input_key(sha, media_type), data)
            return {
                "source": {
                    "sha256": sha,
                    "media_type": media_type,
                    "width": width,
                    "height": height,
                    "origin": origin[:300],
                }
            }
        prompt = design.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInput(f"{where}.prompt", "must be non-blank text (or give a source)")
        extra = {
            k: design[k]
            for k in ("width", "height", "steps", "seed", "negative_prompt", "character")
            if k in design
        }
        return {"prompt": prompt.strip(), **extra}

    async def new_batch(
        self,
        requests: Sequence[Mapping[str, Any]],
        item_meta: Sequence[Mapping[str, Any] | None] | None,
        queueing: Queueing,
    ) -> list[Run]:
        """A batch parent and one products run per request, the parent first (see `core.batches`)."""
        inputs = await batches.validate_items(requests, self.validate)
        parent = batches.new_parent(len(inputs), queueing)
        children = []
        for given, meta in zip(inputs, item_meta or [None] * len(inputs), strict=True):
            child = self.new_run(
                given, replace(queueing, idempotency_key=None, meta=dict(meta) if meta else None)
            )
            batches.attach(parent, child)
            children.append(child)
        return [parent, *children]

    def new_run(self, inputs: dict[str, Any], queueing: Queueing) -> Run:
        steps = len(inputs["designs"]) * (1 + len(inputs["product_types"]) * (1 + len(inputs["platforms"])))
        return queueing.new_run(
            RunKind.POD, LANE, inputs, steps, timeout_s=self.p.settings.products_timeout_s
        )

    # -- RunHandler -----------------------------------------------------------------------------

    async def prepare(self, run: Run, attempt: Attempt) -> tuple[Run, Attempt]:
        return run, attempt

    async def execute(self, work: tuple[Run, Attempt], on_progress: ProgressCallback) -> Outcome:
        run, attempt = work
        inputs = run.inputs
        outcome = Outcome()
        done = 0

        def step(message: str) -> None:
            nonlocal done
            done += 1
            on_progress(Progress(min(done, run.max_steps), run.max_steps, message))

        products: list[Product] = []
        for index, design in enumerate(inputs["designs"]):
            data, ref, source = await self._design_bytes(run, attempt, index, design)
            outcome.designs.append(ref)
            step(f"design {index + 1}/{len(inputs['designs'])} ready")
            width, height, _ = await anyio.to_thread.run_sync(_measure, data)
            for type_key in inputs["product_types"]:
                product_type = self.p.catalog.get(type_key)
                files: list[ProductFile] = []
                try:
                    for area_name, area in product_type.print_areas.items():
                        plan = check_reachable(width, height, area, area_name=f"{type_key} {area_name}")
                        big = (
                            await self._upscaled(run, attempt, index, source, plan.scale)
                            if plan.needed
                            else data
                        )
                        made = await anyio.to_thread.run_sync(make_print_file, big, area)
                        filename = f"print-{index + 1:02d}-{type_key}-{_slug(area_name)}.png"
                        outcome.artifacts.append(
                            await self._keep(run, filename, made.data, made.width, made.height)
                        )
                        files.append(
                            ProductFile(
                                "print", area_name, run.id, filename, made.width, made.height, made.dpi
                            )
                        )
                    for colour, png in await anyio.to_thread.run_sync(make_mockups, data, product_type):
                        filename = f"mockup-{index + 1:02d}-{type_key}-{_slug(colour)}.jpg"
                        artifact = await self._keep(run, filename, png, None, None)
                        outcome.artifacts.append(artifact)
                        files.append(
                            ProductFile(
                                "mockup", colour, run.id, filename, artifact.width or 0, artifact.height or 0
                            )
                        )
                except InvalidInput as exc:
                    outcome.errors.append(f"design {index + 1}, {type_key}: {exc.problem}")
                    step(f"design {index + 1}: {type_key} refused")
                    continue
                products.append(await self._product(run, index, product_type, ref, files))
                outcome.products.append(products[-1].id)
                step(f"design {index + 1}: {type_key} print files and mockups made")
        action: Action = "publish" if inputs.get("publish") else "draft"
        retryable = await self.p.list_all(
            products, inputs["platforms"], action, outcome, lambda: step("listed on a platform")
        )
        if retryable and attempt.number < run.max_attempts:
            raise BackendError(
                "; ".join(outcome.errors) + " (retrying: what is done is kept)", retryable=True
            )
        return outcome

    async def complete(self, run: Run, outcome: Outcome) -> Completion:
        return Completion(
            result=await result_of(self.p.ledger, outcome),
            artifacts=outcome.artifacts,
            log=f"made {len(outcome.products)} product(s)"
            + (f", {len(outcome.errors)} error(s)" if outcome.errors else ""),
        )

    async def forget(self, run: Run) -> None:
        """The run is deleted: so are its design and upscale runs, and its products that exist
        only in Atelier (one listed on Printify or Shopify is kept: it names a product there)."""
        for part in await self.p.services.find_by_key_prefix(part_key(run.id, "")):
            with contextlib.suppress(RunNotFound):
                await self.p.services.delete(part.id)
        for product in await self.p.ledger.list_products(run_id=run.id, limit=1000):
            if not any(
                listing.external_id for listing in product.listings if listing.platform != "storefront"
            ):
                await self.p.ledger.delete_product(product.id)

    # -- steps ----------------------------------------------------------------------------------

    async def _design_bytes(
        self, run: Run, attempt: Attempt, index: int, design: Mapping[str, Any]
    ) -> tuple[bytes, dict[str, Any], str]:
        """The design's bytes, what the product records of it, and how an upscale names it as a source."""
        if "source" in design:
            source = design["source"]
            try:
                data = await self.p.store.read(input_key(source["sha256"], source["media_type"]))
            except OSError as exc:
                raise BackendError(
                    f"design {index + 1}'s stored image cannot be read: {exc}", retryable=False
                ) from exc
            encoded = base64.b64encode(data).decode()
            return (
                data,
                {"sha256": source["sha256"], "origin": source.get("origin", "")},
                f"data:{source['media_type']};base64,{encoded}",
            )
        params = {k: v for k, v in design.items() if k != "prompt"}
        made = await self.p.services.submit_image(
            {"prompt": design["prompt"], "width": 1024, "height": 1024, **params},
            idempotency_key=part_key(run.id, f"design:{index}"),
            priority=run.priority,
            max_attempts=1,  # this run's attempts are the design's: each one queues it again
        )
        made = await self._finished(made, attempt)
        if made.status is not RunStatus.COMPLETED or not made.artifacts:
            raise BackendError(
                f"design {index + 1} ({design['prompt'][:60]!r}) was not generated: {made.error or made.status.value}",
                retryable=made.status is RunStatus.FAILED,
            )
        artifact, data = await self.p.services.read_artifact(made.id, made.artifacts[0].filename)
        ref = {
            "run_id": made.id,
            "filename": artifact.filename,
            "sha256": artifact.sha256,
            "prompt": design["prompt"],
        }
        return data, ref, f"atelier://runs/{made.id}/images/{artifact.filename}"

    async def _upscaled(self, run: Run, attempt: Attempt, index: int, source: str, scale: float) -> bytes:
        made = await self.p.services.submit_image(
            {"operation": "upscale", "source": source, "scale": scale},
            idempotency_key=part_key(run.id, f"upscale:{index}:{scale:g}"),
            priority=run.priority,
            max_attempts=1,
        )
        made = await self._finished(made, attempt)
        if made.status is not RunStatus.COMPLETED or not made.artifacts:
            raise BackendError(
                f"design {index + 1} could not be enlarged x{scale:g}: {made.error}", retryable=True
            )
        _, data = await self.p.services.read_artifact(made.id, made.artifacts[0].filename)
        return data

    async def _finished(self, part: Run, attempt: Attempt) -> Run:
        """Wait for a design or upscale run this run made. Cancelled by the user, this run takes it
        with it; stopped with the process, it is left to finish (the next start picks it up).

        A part that failed or was cancelled in an earlier attempt (the same idempotency key finds
        it) is queued again first: a new attempt of this run is a new attempt of its parts."""
        if part.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            part = await self.p.services.retry(part.id)
        try:
            return await self.p.services.wait(part.id, DESIGN_WAIT_S)
        except anyio.get_cancelled_exc_class():
            if not attempt.shutting_down():
                with anyio.CancelScope(shield=True):
                    await self.p.services.cancel(part.id)
            raise

    async def _keep(
        self, run: Run, filename: str, data: bytes, width: int | None, height: int | None
    ) -> Artifact:
        if width is None or height is None:
            width, height, _ = await anyio.to_thread.run_sync(_measure, data)
        key = run_key(run.id, filename)
        await self.p.store.put(key, data)
        return Artifact(
            run.id,
            filename,
            file_media_type(filename),
            len(data),
            hashlib.sha256(data).hexdigest(),
            key,
            width,
            height,
        )

    async def _product(
        self,
        run: Run,
        index: int,
        product_type: ProductType,
        design: dict[str, Any],
        files: list[ProductFile],
    ) -> Product:
        inputs = run.inputs
        title = inputs.get("title") or _title(design.get("prompt"), product_type)
        if len(inputs["designs"]) > 1 and inputs.get("title"):
            title = f"{title} #{index + 1}"
        now = time.time()
        return await self.p.ledger.insert_product(
            Product(
                id=product_id(run.id, index, product_type.key),
                type=product_type.key,
                title=title,
                description=inputs.get("description") or "",
                price_cents=inputs.get("price_cents") or product_type.price_cents,
                design=design,
                colours=list(product_type.colours),
                sizes=list(product_type.sizes),
                files=files,
                status="draft",
                run_id=run.id,
                created_at=now,
                updated_at=now,
            )
        )


def product_id(run_id: str, index: int, type_key: str) -> str:
    """The product a run makes from design `index` as `type_key`: the same id on every attempt."""
    digest = hashlib.sha256(f"{run_id}:{index}:{type_key}".encode()).digest()
    return "prod-" + "".join(_ALPHABET[b % 36] for b in digest[:12])


def _measure(data: bytes, field: str = "design") -> tuple[int, int, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}.get(image.format or "")
            if kind is None:
                raise InvalidInput(field, f"must be a PNG, JPEG or WebP image (got {image.format})")
            return image.width, image.height, kind
    except UnidentifiedImageError:
        raise InvalidInput(field, "is not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(field, f"is not an image Atelier can read ({exc})") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _title(prompt: object, product_type: ProductType) -> str:
    words = " ".join(str(prompt or "Design").split()[:8]).strip(" ,.")
    return f"{words[:1].upper()}{words[1:]} {product_type.name.lower()}"[:200]
