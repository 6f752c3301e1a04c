"""`publish` runs (kind `publish`): bring existing products' listings to published or unpublished
on the given platforms, with the same durable steps as a products run's listing
(`core.publishing.listings`: never a second product on a platform)."""

from __future__ import annotations

from typing import Any

from core.backends import Progress, ProgressCallback
from core.errors import BackendError, InvalidInput
from core.kinds import Attempt, Completion, Queueing
from core.models import Run, RunKind
from core.publishing.models import PRODUCT_ID_RE
from core.publishing.runs import LANE, Outcome, Publishing, result_of


class PublishKind:
    """`publish` runs: bring products' listings to published (or unpublished) on platforms."""

    def __init__(self, publishing: Publishing) -> None:
        self.p = publishing

    async def validate(self, product_ids: object, platforms: object, action: str) -> dict[str, Any]:
        if isinstance(product_ids, str):
            product_ids = [product_ids]
        if not isinstance(product_ids, list | tuple) or not 1 <= len(product_ids) <= 200:
            raise InvalidInput("product_ids", "must be a list of 1..200 product ids")
        for product_id_ in product_ids:
            if not isinstance(product_id_, str) or not PRODUCT_ID_RE.fullmatch(product_id_):
                raise InvalidInput("product_ids", f"{product_id_!r:.40} is not a product id (prod-...)")
            if await self.p.ledger.get_product(product_id_) is None:
                raise InvalidInput(
                    "product_ids", f"product {product_id_} does not exist (list_products shows them)"
                )
        if action not in ("publish", "unpublish"):
            raise InvalidInput("action", "must be publish or unpublish")
        return {
            "product_ids": list(dict.fromkeys(product_ids)),
            "platforms": self.p.check_platforms(platforms),
            "action": action,
        }

    def new_run(self, inputs: dict[str, Any], queueing: Queueing) -> Run:
        steps = len(inputs["product_ids"]) * len(inputs["platforms"])
        return queueing.new_run(
            RunKind.PUBLISH, LANE, inputs, steps, timeout_s=self.p.settings.products_timeout_s
        )

    async def prepare(self, run: Run, attempt: Attempt) -> tuple[Run, Attempt]:
        return run, attempt

    async def execute(self, work: tuple[Run, Attempt], on_progress: ProgressCallback) -> Outcome:
        run, attempt = work
        outcome = Outcome(products=list(run.inputs["product_ids"]))
        products = [
            p for p in [await self.p.ledger.get_product(i) for i in outcome.products] if p is not None
        ]
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            on_progress(Progress(done, run.max_steps, f"{done}/{run.max_steps} listings"))

        retryable = await self.p.list_all(
            products, run.inputs["platforms"], run.inputs["action"], outcome, step
        )
        if retryable and attempt.number < run.max_attempts:
            raise BackendError(
                "; ".join(outcome.errors) + " (retrying: what is done is kept)", retryable=True
            )
        status = "published" if run.inputs["action"] == "publish" else "unpublished"
        for product in products:
            await self.p.ledger.update_product(product.id, status=status)
        return outcome

    async def complete(self, run: Run, outcome: Outcome) -> Completion:
        return Completion(
            result=await result_of(self.p.ledger, outcome),
            log=f"{run.inputs['action']}ed {len(outcome.products)} product(s)",
        )

    async def forget(self, run: Run) -> None:
        return None
