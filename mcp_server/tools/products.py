"""Tools for print-on-demand: the catalog, design prompts, products, and publishing them.

Decisions:
- create_products makes drafts only: nothing a buyer can see. Publishing is publish_products,
  and it needs the user's own confirmation, one of two ways:
  1. The client supports elicitation (form mode): the user is asked, with every product's title,
     type and price and the platforms, in a one-field form (`publish`, ticked). Accept with it
     ticked publishes; decline, cancel, or accept unticked publishes nothing and the result says
     so (not an error: the user answered). When the user can be asked, `confirm` is not enough:
     the model cannot answer for them.
  2. Otherwise `confirm: true`, which the model must only send after asking the user itself.
     Without it the call is a tool error (`confirm: ...`) listing what would have been published.
  Nothing else publishes; unpublish_product needs no confirmation (it hides, it sells nothing).
- The question is asked through the SDK's resolver form (`Resolve` + `Elicit`/`Sample`), the one
  that works on both protocol eras: a standalone request mid-call on the 2025 protocols, an
  `InputRequiredResult` round on 2026-07-28. A resolver runs before the tool body: it asks only
  when the arguments name real products on configured platforms, so a bad argument is named by
  the body as usual, and the question reads the same on every round.
- compose_prompts uses the deterministic templates unless `use_model: true` and the client
  supports sampling; then the host's model writes the prompts (one per line), and the result says
  which was used (`composed_by`), with a note when the model was asked for but could not be.
- Argument errors name the tool's own arguments: the engine's `designs[0].source` is `design`,
  `designs[2].prompt` is `prompts[2]`, a missing product is `product_ids: ...`.
- This module does not use `from __future__ import annotations`: the resolvers are closures over
  the engine, and the SDK reads their annotations (and the tools' `Resolve(...)`) as objects.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve, Sample
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, CreateMessageResult, SamplingMessage, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from core.backends import Progress
from core.engine import Engine
from core.errors import AtelierError, FieldProblem, InvalidInput, ProductNotFound
from core.models import MAX_PROMPT_CHARS, Run
from core.publishing.models import Product
from core.publishing.prompts import MAX_FIELD_CHARS, TEMPLATES, compose
from mcp_server import product_views as pviews
from mcp_server.arguments import lines
from mcp_server.product_views import CatalogView, ProductList, ProductsRun, PromptsView, PublishOutcome
from mcp_server.tools.shared import CREATES, MAX_WAIT_S, READ_ONLY, STOPS, ToolList, wait_reporting

# Products reach platforms outside Atelier (Printify, Shopify): their tools say so (open world).
MAKES_DRAFTS = CREATES.model_copy(update={"open_world_hint": True})
PUBLISHES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
UNPUBLISHES = STOPS.model_copy(update={"open_world_hint": True})
MAX_PRODUCTS_PER_PUBLISH = 50
MAX_DESIGNS = 16
_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|prompt\s*\d*\s*:)\s*", re.IGNORECASE)

ProductId = Annotated[
    str,
    Field(
        description="The product's id (prod-...), as create_products or list_products gives it.", min_length=1
    ),
]
Platforms = Annotated[
    list[str] | None,
    Field(
        description="Where: storefront (Atelier's own shop), printify, shopify. Default: "
        "ATELIER_ENABLED_PLATFORMS (list_product_types shows which are configured).",
        max_length=3,
    ),
]
PriorityName = Annotated[
    Literal["low", "normal", "high", "urgent"], Field(description="Higher priorities start first.")
]
IdempotencyKey = Annotated[
    str | None, Field(description="Calling again with the same key returns the same run, not a new one.")
]


def _wait(default: float) -> Any:
    return Annotated[
        float,
        Field(
            description=f"How long to wait for the run, 0..{MAX_WAIT_S} s (progress is reported meanwhile). "
            f"Default {default:g}.",
            ge=0,
            le=MAX_WAIT_S,
        ),
    ]


class PublishConfirmation(BaseModel):
    """The form the user answers before anything is published."""

    publish: bool = Field(
        default=True,
        title="Publish these products",
        description="Tick to make them visible to buyers on the platforms listed.",
    )


class NotAsked:
    """What the confirmation resolver gives when the user cannot be asked (no elicitation)."""


def tools(engine: Engine, *, expose_paths: bool) -> list[Tool]:
    """list_product_types, compose_prompts, create_products, publish_products, unpublish_product,
    list_products and get_product over `engine`."""
    found = ToolList()
    known_types = ", ".join(engine.catalog.types)

    async def run_products(run: Run) -> list[Product]:
        """The products a products run made (so far) or a publish run changed, in order."""
        if run.kind.value == "publish":
            ids = list(run.inputs.get("product_ids", []))
        else:
            made = await engine.ledger.list_products(run_id=run.id, limit=1000)
            ids = [p.id for p in reversed(made)]
        products = []
        for product_id in ids:
            try:
                products.append(await engine.get_product(product_id))
            except ProductNotFound:
                continue
        return products

    async def run_answer(run: Run) -> tuple[list[Product], ProductsRun]:
        products = await run_products(run)
        view = ProductsRun(
            run_id=run.id,
            kind=run.kind.value,
            status=run.status.value,
            progress=round(run.progress, 4),
            message=run.message,
            error=run.error,
            products=[pviews.product_view(p) for p in products],
            errors=list((run.result or {}).get("errors", [])),
            next=pviews.run_next(run, products),
        )
        return products, view

    def run_text(head: str, view: ProductsRun, products: list[Product]) -> str:
        said = [f"{head} Run {view.run_id}: {view.status}."]
        said += [pviews.product_line(p) for p in products]
        if view.errors:
            said.append("Problems:")
            said += [f"- {error}" for error in view.errors]
        said.append(view.next)
        return "\n".join(said)

    # -- the catalog and prompts ------------------------------------------------------------------

    @found.tool(READ_ONLY, structured_output=True)
    async def list_product_types() -> CatalogView:
        """The products a design can become (t-shirt, hoodie, poster, mug, and any from ATELIER_CATALOG).

        Each with its print areas (pixels and DPI: the print file's size), colours (one mockup each),
        sizes, default price, and the platforms that map it, with whether that mapping is a
        verified fact or an assumption. Cheap. Use the `key` in create_products' `product_types`.
        """
        return pviews.catalog_view(engine, engine.catalog)

    async def ask_model(
        theme: str,
        style: str | None,
        niche: str | None,
        count: int,
        template: str | None,
        use_model: bool,
        ctx: Context,
    ) -> Sample | None:
        """The sampling request for the host's model, when asked for and possible; else none."""
        if not use_model or not _supports_sampling(ctx):
            return None
        try:
            examples = compose(theme, style or "", niche or "", count, template)
        except InvalidInput:
            return None  # the tool body names what is wrong
        brief = (
            f"Theme: {theme}."
            + (f" Style: {style}." if style else "")
            + (f" Niche: {niche}." if niche else "")
        )
        request = (
            f"{brief}\nWrite {count} different image prompts for print-on-demand designs (t-shirts, "
            "hoodies, posters, mugs). Each one line: an isolated subject on a clean background, "
            "print-friendly, with no text or lettering in the image. Reply with the prompts only, "
            "one per line, no numbering.\nFor reference, Atelier's templates give:\n" + "\n".join(examples)
        )
        return Sample(
            [SamplingMessage(role="user", content=TextContent(type="text", text=request))],
            max_tokens=100 + 120 * count,
            system_prompt="You write concise prompts for an image generator. Answer with prompts only.",
            temperature=0.8,
        )

    @found.tool(READ_ONLY, structured_output=True)
    async def compose_prompts(
        theme: Annotated[
            str,
            Field(
                description="What the designs are about, e.g. nature.",
                min_length=1,
                max_length=MAX_FIELD_CHARS,
            ),
        ],
        style: Annotated[
            str | None, Field(description="How they look, e.g. watercolour.", max_length=MAX_FIELD_CHARS)
        ] = None,
        niche: Annotated[
            str | None, Field(description="Who buys them, e.g. hikers.", max_length=MAX_FIELD_CHARS)
        ] = None,
        count: Annotated[
            int, Field(description="How many prompts, 1..16. Default 3.", ge=1, le=MAX_DESIGNS)
        ] = 3,
        template: Annotated[
            Literal[tuple(TEMPLATES)] | None,  # type: ignore[valid-type]
            Field(description="Use this template for every prompt; default: a different one each."),
        ] = None,
        use_model: Annotated[
            bool,
            Field(
                description="Ask the host's model to write them (MCP sampling; the user's client may ask "
                "them first). Falls back to the templates when the client cannot sample."
            ),
        ] = False,
        sampled: Annotated[CreateMessageResult | None, Resolve(ask_model)] = None,
    ) -> Annotated[CallToolResult, PromptsView]:
        """Design prompts for print-on-demand from a theme, a style and a niche. Cheap, instant.

        By default from Atelier's deterministic templates (listed in the result; the same inputs
        give the same prompts). With `use_model: true`, the host's model writes them when the
        client supports sampling; `composed_by` says which was used (if the user refuses the
        sampling request the call fails: call again without `use_model`). Pass the prompts to
        create_products (edit them first if you like).
        """
        with product_errors():
            templated = compose(theme, style or "", niche or "", count, template)
        prompts, composed_by, note = templated, "templates", ""
        if use_model:
            from_model = _prompts_from(sampled, count)
            if sampled is None:
                note = "the client does not support sampling: Atelier's templates were used"
            elif not from_model:
                note = "the model's reply held no prompts: Atelier's templates were used"
            else:
                prompts, composed_by = from_model, "model"
                if len(from_model) < count:
                    note = f"asked the model for {count} prompts, it gave {len(from_model)}"
        view = PromptsView(
            prompts=prompts,
            composed_by=composed_by,  # type: ignore[arg-type]
            note=note,
            templates=[pviews.TemplateView(name=name, text=text) for name, text in TEMPLATES.items()],
        )
        said = [f"{len(prompts)} prompt(s), by {composed_by}" + (f" ({note})" if note else "") + ":"]
        said += [f"{i + 1}. {p}" for i, p in enumerate(prompts)]
        said.append("Next: create_products with prompts=[...] and product_types (list_product_types).")
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(said))],
            structured_content=view.model_dump(mode="json"),
        )

    # -- products -------------------------------------------------------------------------------

    @found.tool(MAKES_DRAFTS, structured_output=True)
    async def create_products(
        product_types: Annotated[
            list[str],
            Field(
                description=f"Product types to make of each design: {known_types}.",
                min_length=1,
                max_length=8,
            ),
        ],
        design: Annotated[
            str | None,
            Field(
                description=(
                    "Your own design, as transform_image takes a source: a run's image "
                    "(atelier://runs/<id>/images/<file>, or a run id for its first image), a file path "
                    "inside an allowed folder, an http(s) URL on this machine, or base64 PNG/JPEG/WebP "
                    "(optionally a data: URL). Give this or `prompts`."
                ),
                min_length=1,
            ),
        ] = None,
        prompts: Annotated[
            list[str] | None,
            Field(
                description=f"Prompts to generate designs from (compose_prompts writes some), 1..{MAX_DESIGNS}. "
                "Give this or `design`.",
                min_length=1,
                max_length=MAX_DESIGNS,
            ),
        ] = None,
        platforms: Platforms = None,
        title: Annotated[
            str | None,
            Field(
                description="Product title; default from the prompt and type. Numbered per design.",
                max_length=200,
            ),
        ] = None,
        description: Annotated[str | None, Field(description="Product description.", max_length=5000)] = None,
        price_cents: Annotated[
            int | None,
            Field(description="Price in cents (2499 = 24.99); default: each type's.", ge=1, le=10_000_000),
        ] = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: _wait(60) = 60,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProductsRun]:
        """Make products from a design as DRAFTS (nothing is published): for each design and type,
        a print-ready file (the design enlarged to the print area's pixels at its DPI) and a mockup
        per colour, then a draft listing on each platform.

        Queues a run and waits up to `wait_seconds`, sending progress. Returns the run and its
        products (print files with size and DPI, mockups: a few as thumbnails, all as links,
        listings per platform). Prompts are generated first (one image run each). A design too
        small for a type even after upscaling is refused for that type, named in `errors`.
        Then show the user the mockups and call publish_products if they want them on sale.
        """
        if (design is None) == (prompts is None):
            field = "design" if design is None else "prompts"
            raise ToolError(
                f"{field}: give either `design` (your own image) or `prompts` (to generate), not both"
            )
        designs: list[dict[str, Any]] = (
            [{"source": design}] if design is not None else [{"prompt": p} for p in prompts or []]
        )
        request = {
            "designs": designs,
            "product_types": product_types,
            "platforms": platforms,
            "publish": False,
            "title": title,
            "description": description,
            "price_cents": price_cents,
        }
        with product_errors(_design_field(design is not None)):
            run = await engine.submit_products(request, priority=priority, idempotency_key=idempotency_key)
            run = await wait_reporting(engine, run, wait_seconds, ctx, _step_words)
            products, view = await run_answer(run)
            return await pviews.products_result(
                engine, products, run_text(f"{len(products)} draft product(s).", view, products), view
            )

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
        products = [await engine.get_product(product_id) for product_id in dict.fromkeys(product_ids)]
        # The engine's own platform check (default platforms, configured or not), asked before
        # anyone is asked to confirm. TODO(lead): a public `engine.check_platforms`.
        names = engine._publishing.check_platforms(platforms)
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
                description="Only for clients that cannot ask the user themselves (no elicitation): true "
                "once the user has said, in this conversation, to publish exactly these products at these "
                "prices. Never set it on your own."
            ),
        ] = False,
        wait_seconds: _wait(30) = 30,
        confirmation: Annotated[ElicitationResult[PublishConfirmation], Resolve(ask_user)] = None,  # type: ignore[assignment]
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, PublishOutcome]:
        """Publish draft products: make them visible to buyers on the platforms (default: the enabled ones).

        Needs the user's confirmation: if the client supports elicitation the user is asked (each
        product's title, type and price, and the platforms) and nothing is published unless they
        accept; otherwise pass `confirm: true`, only after the user agreed. Queues a publish run
        and waits up to `wait_seconds`; returns each product's listings with their URLs. A
        platform that fails keeps the others' listings; its error is named.
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
                said = (
                    "accepted without ticking publish"
                    if isinstance(answer, AcceptedElicitation)
                    else {"decline": "declined", "cancel": "cancelled"}.get(
                        getattr(answer, "action", ""), "gave no answer"
                    )
                )
                view = PublishOutcome(
                    published=False,
                    confirmed_by="elicitation",
                    answer=said,
                    run_id=None,
                    kind=None,
                    status=None,
                    progress=None,
                    message="",
                    error=None,
                    products=[pviews.product_view(p) for p in products],
                    errors=[],
                    next="Nothing was published. Ask the user what to change, or leave them as drafts.",
                )
                text = (
                    f"The user {said}: nothing was published. The products stay as they were:\n"
                    + "\n".join(pviews.product_line(p) for p in products)
                )
                return pviews_said(text, view)
            run = await engine.submit_publish(ids, names, action="publish")
            run = await wait_reporting(engine, run, wait_seconds, ctx, _step_words)
            changed, made = await run_answer(run)
            view = PublishOutcome(
                **made.model_dump(),
                published=True,
                confirmed_by=confirmed_by,
                answer="accept",  # type: ignore[arg-type]
            )
            head = (
                f"Publishing {len(changed)} product(s) on {', '.join(names)} (confirmed by {confirmed_by})."
            )
            return await pviews.products_result(engine, changed, run_text(head, view, changed), view)

    @found.tool(UNPUBLISHES, structured_output=True)
    async def unpublish_product(
        product_id: ProductId,
        platforms: Platforms = None,
        wait_seconds: _wait(30) = 30,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProductsRun]:
        """Take a product off sale on the platforms (default: the enabled ones); it stays as a product
        and can be published again. Queues a run and waits; returns the product's listings."""
        with product_errors(_unpublish_field):
            product = await engine.get_product(product_id)
            run = await engine.submit_publish([product.id], platforms, action="unpublish")
            run = await wait_reporting(engine, run, wait_seconds, ctx, _step_words)
            changed, view = await run_answer(run)
            return pviews_said(run_text("Unpublishing.", view, changed), view)

    @found.tool(READ_ONLY, structured_output=True)
    async def list_products(
        status: Annotated[
            Literal["draft", "published", "unpublished"] | None,
            Field(description="Only products in this state."),
        ] = None,
        type: Annotated[str | None, Field(description=f"Only this product type ({known_types}).")] = None,
        limit: Annotated[int, Field(description="Products per page, 1..100. Default 20.", ge=1, le=100)] = 20,
        offset: Annotated[
            int, Field(description="Products to skip (next_offset of the previous page).", ge=0)
        ] = 0,
    ) -> ProductList:
        """Products, newest first, with their listings per platform (status and URL), print files
        and mockup links. Cheap. get_product shows one with mockup thumbnails."""
        with product_errors(lambda field: "type" if field == "product_types" else field):
            found_products = await engine.list_products(status=status, type=type, limit=limit, offset=offset)
        return ProductList(
            products=[pviews.product_view(p) for p in found_products],
            next_offset=offset + limit if len(found_products) == limit else None,
        )

    @found.tool(READ_ONLY, structured_output=True)
    async def get_product(product_id: ProductId) -> Annotated[CallToolResult, pviews.ProductView]:
        """One product: title, price, status, its listings per platform (with URLs), its print files
        (size, DPI, links) and its mockups (thumbnails and links). Cheap."""
        with product_errors(_unpublish_field):
            product = await engine.get_product(product_id)
        return await pviews.products_result(
            engine, [product], pviews.product_line(product).removeprefix("- "), pviews.product_view(product)
        )

    return found.tools


def pviews_said(text: str, view: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=view.model_dump(mode="json")
    )


# -- errors ----------------------------------------------------------------------------------------


@contextmanager
def product_errors(rename: Callable[[str], str] = lambda field: field) -> Iterator[None]:
    """Engine errors as a tool error, each line naming the tool's own argument."""
    try:
        yield
    except InvalidInput as exc:
        raise ToolError(lines([FieldProblem(rename(p.field), p.problem) for p in exc.problems])) from None
    except ProductNotFound as exc:
        raise ToolError(f"{rename('product_ids')}: {exc}") from None
    except AtelierError as exc:
        raise ToolError(str(exc)) from None


def _design_field(from_source: bool) -> Callable[[str], str]:
    def rename(field: str) -> str:
        if field == "designs":
            return "design" if from_source else "prompts"
        match = re.fullmatch(r"designs\[(\d+)\](?:\.(\w+))?", field)
        if match:
            return "design" if from_source else f"prompts[{match[1]}]"
        return field

    return rename


def _publish_field(field: str) -> str:
    return "product_ids" if field == "product_id" else field


def _unpublish_field(field: str) -> str:
    return "product_id" if field == "product_ids" else field


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


# -- what the client can do ------------------------------------------------------------------------


def _step_words(progress: Progress) -> str:
    """A products run's progress in words: "step 3/5 · design 1: tshirt print files and mockups made"."""
    return f"step {progress.step}/{progress.max_steps}" + (
        f" · {progress.message}" if progress.message else ""
    )


def _supports_elicitation(ctx: Context) -> bool:
    """Form elicitation, as the SDK counts it (a bare `elicitation: {}` is form support)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _supports_sampling(ctx: Context) -> bool:
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.sampling is not None


def _prompts_from(sampled: CreateMessageResult | None, count: int) -> list[str]:
    """The prompts in the model's reply: one per line, numbering and quotes stripped."""
    if sampled is None:
        return []
    blocks = sampled.content if isinstance(sampled.content, list) else [sampled.content]
    text = "\n".join(block.text for block in blocks if isinstance(block, TextContent))
    prompts = []
    for line in text.splitlines():
        cleaned = _NUMBERING.sub("", line).strip().strip("\"'").strip()
        if cleaned:
            prompts.append(cleaned[:MAX_PROMPT_CHARS])
    return prompts[:count]
