"""Tools that put products on sale and take them off: publish_products (only with the user's
confirmation) and unpublish_product.

Decisions:
- Publishing needs the user's own confirmation, one of two ways:
  1. The client supports elicitation (form mode): the user is asked, with every product's title,
     type and price and the platforms, in a one-field form (`publish`, ticked). Accept with it
     ticked publishes; decline, cancel, or accept unticked publishes nothing and the result says
     so (not an error: the user answered). When the user can be asked, `confirm` is not enough:
     the model cannot answer for them.
  2. Otherwise `confirm: true`, which the model must only send after asking the user itself.
     Without it the call is a tool error (`confirm: ...`, then a `product_ids[i]: ...` line per
     product) showing what would have been published.
  Nothing else publishes (create_products makes drafts only). unpublish_product needs no
  confirmation: it hides a product, it sells nothing.
- The question is asked in the SDK's resolver form (`Resolve` + `Elicit`), the one that works on
  both protocol eras: a standalone request mid-call on the 2025 protocols, an
  `InputRequiredResult` round on 2026-07-28. A resolver runs before the tool body: it asks only
  when the arguments name real products on configured platforms (a bad argument is then named by
  the body as usual, and nobody is asked about it), and its question reads the same every round.
- This module does not use `from __future__ import annotations`: the resolver is a closure over
  the engine, and the SDK reads its annotations (and the tool's `Resolve(...)`) as objects.
"""

from typing import Annotated

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from core.engine import Engine
from core.errors import AtelierError
from core.publishing.models import Product
from mcp_server import product_views as pviews
from mcp_server.product_views import ProductsRun, PublishOutcome
from mcp_server.tools.products import (
    Platforms,
    ProductId,
    RunWait,
    one_product_field,
    product_errors,
    run_answer,
    run_text,
    said,
    step_words,
)
from mcp_server.tools.shared import STOPS, ToolList, wait_reporting

# Products reach platforms outside Atelier (Printify, Shopify): these tools say so (open world).
PUBLISHES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
UNPUBLISHES = STOPS.model_copy(update={"open_world_hint": True})
MAX_PRODUCTS_PER_PUBLISH = 50


class PublishConfirmation(BaseModel):
    """The form the user answers before anything is published."""

    publish: bool = Field(
        default=True,
        title="Publish these products",
        description="Tick to make them visible to buyers on the platforms listed.",
    )


class NotAsked:
    """What the confirmation resolver gives when the user cannot be asked (no elicitation)."""


def tools(engine: Engine) -> list[Tool]:
    """publish_products and unpublish_product over `engine`."""
    found = ToolList()

    async def ask_user(
        product_ids: list[str], platforms: list[str] | None, ctx: Context
    ) -> Elicit[PublishConfirmation] | NotAsked:
        """The question put to the user before publishing, when the client can ask them."""
        if not _supports_elicitation(ctx):
            return NotAsked()
        try:
            products, names = await what_would_publish(product_ids, platforms)
        except AtelierError:
            return NotAsked()  # the tool body names what is wrong
        message = "\n".join(
            [
                f"Publish {len(products)} product(s) on {', '.join(names)}? Buyers will be able to order them.",
                *(f"- {p.title} ({p.type}) at {pviews.money(p.price_cents)}" for p in products),
            ]
        )
        return Elicit(message, PublishConfirmation)

    async def what_would_publish(
        product_ids: list[str], platforms: list[str] | None
    ) -> tuple[list[Product], list[str]]:
        products = [await engine.products.get(product_id) for product_id in dict.fromkeys(product_ids)]
        # The engine's own platform check (default platforms, configured or not), made before
        # anyone is asked to confirm.
        names = engine.products.check_platforms(platforms)
        return products, names

    @found.tool(PUBLISHES, structured_output=True)
    async def publish_products(
        product_ids: Annotated[
            list[str],
            Field(
                description=f"The products to publish (prod-...), 1..{MAX_PRODUCTS_PER_PUBLISH}.",
                min_length=1,
                max_length=MAX_PRODUCTS_PER_PUBLISH,
            ),
        ],
        platforms: Platforms = None,
        confirm: Annotated[
            bool,
            Field(
                description="Only if the client cannot ask the user (no elicitation): true once the "
                "user has said to publish exactly these products at these prices. Never on your own."
            ),
        ] = False,
        wait_seconds: RunWait = 30,
        confirmation: Annotated[ElicitationResult[PublishConfirmation], Resolve(ask_user)] = None,  # type: ignore[assignment]
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, PublishOutcome]:
        """Publish draft products: make them visible to buyers on the platforms (default: the enabled ones).

        Needs the user's confirmation: a client with elicitation asks them (titles, types, prices,
        platforms) and nothing is published unless they accept; otherwise pass `confirm: true`,
        only after the user agreed. Queues a publish run and waits up to `wait_seconds`; returns
        each product's listings with URLs. A failing platform is named; the others still list.
        """
        with product_errors(_publish_field):
            products, names = await what_would_publish(product_ids, platforms)
            ids = [p.id for p in products]
            answer = confirmation
            if isinstance(answer, AcceptedElicitation) and isinstance(answer.data, NotAsked):
                if not confirm:
                    raise ToolError(_needs_confirmation(products, names))
                confirmed_by = "confirm"
            elif isinstance(answer, AcceptedElicitation) and answer.data.publish:
                confirmed_by = "elicitation"
            else:
                reply = (
                    "accepted without ticking publish"
                    if isinstance(answer, AcceptedElicitation)
                    else {"decline": "declined", "cancel": "cancelled"}.get(
                        getattr(answer, "action", ""), "gave no answer"
                    )
                )
                view = PublishOutcome(
                    published=False,
                    confirmed_by="elicitation",
                    answer=reply,
                    run_id=None,
                    kind=None,
                    status=None,
                    progress=None,
                    message="",
                    error=None,
                    products=[pviews.product_view(engine, p) for p in products],
                    errors=[],
                    next="Nothing was published. Ask the user what to change, or leave them as drafts.",
                )
                text = (
                    f"The user {reply}: nothing was published. The products stay as they were:\n"
                    + "\n".join(pviews.product_line(engine, p) for p in products)
                )
                return said(text, view)
            run = await engine.products.submit_publish(ids, names, action="publish")
            run = await wait_reporting(engine, run, wait_seconds, ctx, step_words)
            changed, made = await run_answer(engine, run)
            view = PublishOutcome(
                **made.model_dump(),
                published=True,
                confirmed_by=confirmed_by,  # type: ignore[arg-type]
                answer="accepted" if confirmed_by == "elicitation" else "confirm: true",
            )
            head = (
                f"Publishing {len(changed)} product(s) on {', '.join(names)} (confirmed by {confirmed_by})."
            )
            return await pviews.products_result(engine, changed, run_text(engine, head, view, changed), view)

    @found.tool(UNPUBLISHES, structured_output=True)
    async def unpublish_product(
        product_id: ProductId,
        platforms: Platforms = None,
        wait_seconds: RunWait = 30,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProductsRun]:
        """Take a product off sale on the platforms (default: the enabled ones); it stays as a product
        and can be published again. Queues a run and waits; returns the product's listings."""
        with product_errors(one_product_field):
            product = await engine.products.get(product_id)
            run = await engine.products.submit_publish([product.id], platforms, action="unpublish")
            run = await wait_reporting(engine, run, wait_seconds, ctx, step_words)
            changed, view = await run_answer(engine, run)
            return said(run_text(engine, "Unpublishing.", view, changed), view)

    return found.tools


def _publish_field(field: str) -> str:
    return "product_ids" if field == "product_id" else field


def _needs_confirmation(products: list[Product], platforms: list[str]) -> str:
    """The refusal without `confirm`: why, and what would have been published."""
    said = [
        "confirm: publishing needs the user's confirmation and this client cannot ask them (no "
        "elicitation). Show the user what follows, and once they agree call again with confirm: true. "
        f"It would publish on {', '.join(platforms)}:"
    ]
    said += [
        f"product_ids[{i}]: {p.id} {p.title!r} ({p.type}) at {pviews.money(p.price_cents)}"
        for i, p in enumerate(products)
    ]
    return "\n".join(said)


def _supports_elicitation(ctx: Context) -> bool:
    """Form elicitation, as the SDK counts it (a bare `elicitation: {}` is form support)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)
