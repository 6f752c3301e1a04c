"""Tools for print-on-demand products: the catalog, design prompts, making drafts, looking at them.

Publishing them is `publishing.py` (it needs the user's confirmation); this module also holds
what both share (the argument types, the run answers, the error wording).

Decisions:
- create_products makes drafts only: nothing a buyer can see.
- compose_prompts uses the deterministic templates unless `use_model: true` and the client
  supports sampling; then the host's model writes the prompts (one per line), asked in the SDK's
  resolver form (`Resolve` + `Sample`, the form that works on both protocol eras), and the
  result says which was used (`composed_by`), with a note when the model was asked for but could
  not be. A user who refuses the sampling request fails the call (the SDK reports it as a
  JSON-RPC error before the tool body runs); the model can call again without `use_model`.
- Argument errors name the tool's own arguments: the engine's `designs[0].source` is `design`,
  `designs[2].prompt` is `prompts[2]`, a missing product is `product_ids: ...` (`product_id`
  for the tools of one product), a bad `type` filter is `type`.
- This module does not use `from __future__ import annotations`: the sampling resolver is a
  closure over the engine, and the SDK reads its annotations (and `Resolve(...)`) as objects.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, CreateMessageResult, SamplingMessage, TextContent
from pydantic import BaseModel, Field

from core.backends import Progress
from core.engine import Engine
from core.errors import AtelierError, FieldProblem, InvalidInput, ProductNotFound
from core.models import MAX_PROMPT_CHARS, Run
from core.publishing.models import Product
from core.publishing.prompts import MAX_FIELD_CHARS, TEMPLATES, compose
from mcp_server import product_views as pviews
from mcp_server.arguments import lines
from mcp_server.product_views import CatalogView, ProductList, ProductsRun, PromptsView
from mcp_server.tools.shared import CREATES, MAX_WAIT_S, READ_ONLY, ToolList, wait_reporting

MAX_DESIGNS = 16
# Drafts are made on Printify and Shopify too: the tool says so (open world).
MAKES_DRAFTS = CREATES.model_copy(update={"open_world_hint": True})
_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|prompt\s*\d*\s*:)\s*", re.IGNORECASE)

ProductId = Annotated[
    str,
    Field(description="A product id (prod-...), from create_products or list_products.", min_length=1),
]
Platforms = Annotated[
    list[str] | None,
    Field(
        description="storefront (Atelier's own shop), printify, shopify. Default: the enabled ones "
        "(list_product_types shows them).",
        max_length=3,
    ),
]
PriorityName = Annotated[
    Literal["low", "normal", "high", "urgent"], Field(description="Higher starts first.")
]
IdempotencyKey = Annotated[
    str | None, Field(description="The same key again returns the same run, not a new one.")
]


RunWait = Annotated[
    float,
    Field(description="Seconds to wait for the run (progress is reported meanwhile).", ge=0, le=MAX_WAIT_S),
]


def tools(engine: Engine) -> list[Tool]:
    """list_product_types, compose_prompts, create_products, list_products and get_product over `engine`."""
    found = ToolList()
    known_types = ", ".join(engine.products.catalog.types)

    # -- the catalog and prompts ------------------------------------------------------------------

    @found.tool(READ_ONLY, structured_output=True)
    async def list_product_types() -> CatalogView:
        """The products a design can become (t-shirt, hoodie, poster, mug, and any from ATELIER_CATALOG).

        Each with its print areas (pixels and DPI: the print file's size), colours (one mockup each),
        sizes, default price, and the platforms that map it, with whether that mapping is a
        verified fact or an assumption. Cheap. Use the `key` in create_products' `product_types`.
        """
        return pviews.catalog_view(engine, engine.products.catalog)

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
        count: Annotated[int, Field(description="How many prompts.", ge=1, le=MAX_DESIGNS)] = 3,
        template: Annotated[
            Literal[tuple(TEMPLATES)] | None,  # type: ignore[valid-type]
            Field(description="Use this template for every prompt; default: a different one each."),
        ] = None,
        use_model: Annotated[
            bool,
            Field(description="Ask the host's model to write them (MCP sampling); else the templates."),
        ] = False,
        sampled: Annotated[CreateMessageResult | None, Resolve(ask_model)] = None,
    ) -> Annotated[CallToolResult, PromptsView]:
        """Design prompts for print-on-demand from a theme, a style and a niche. Cheap, instant.

        By default from Atelier's deterministic templates (same inputs, same prompts). With
        `use_model: true` the host's model writes them if the client can sample; `composed_by`
        says which was used (if the user refuses, the call fails: retry without `use_model`).
        Pass them (edited if you like) to create_products.
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
                description="Your own design, as transform_image's source. Give this or `prompts`.",
                min_length=1,
            ),
        ] = None,
        prompts: Annotated[
            list[str] | None,
            Field(
                description="Prompts to generate designs from (see compose_prompts). Give this or `design`.",
                min_length=1,
                max_length=MAX_DESIGNS,
            ),
        ] = None,
        platforms: Platforms = None,
        title: Annotated[
            str | None,
            Field(
                description="Default: from the prompt and type. Numbered per design.",
                max_length=200,
            ),
        ] = None,
        description: Annotated[str | None, Field(description="Product description.", max_length=5000)] = None,
        price_cents: Annotated[
            int | None,
            Field(description="2499 = 24.99. Default: each type's.", ge=1, le=10_000_000),
        ] = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: RunWait = 60,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ProductsRun]:
        """Make DRAFT products from a design (nothing is published): per design and type, a
        print-ready file (the print area's pixels at its DPI), a mockup per colour, and a draft
        listing on each platform. Prompts are first generated (one image run each).

        Queues a run and waits up to `wait_seconds`, reporting progress. Returns the run and its
        products (print files, mockups as thumbnails and links, listings). A design too small for
        a type even upscaled is refused for it, named in `errors`. Then show the user the mockups;
        publish_products puts them on sale.
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
            run = await engine.products.submit(request, priority=priority, idempotency_key=idempotency_key)
            run = await wait_reporting(engine, run, wait_seconds, ctx, step_words)
            products, view = await run_answer(engine, run)
            return await pviews.products_result(
                engine, products, run_text(engine, f"{len(products)} draft product(s).", view, products), view
            )

    @found.tool(READ_ONLY, structured_output=True)
    async def list_products(
        status: Annotated[
            Literal["draft", "published", "unpublished"] | None,
            Field(description="Only products in this state."),
        ] = None,
        type: Annotated[str | None, Field(description=f"Only this product type ({known_types}).")] = None,
        limit: Annotated[int, Field(description="Products per page.", ge=1, le=100)] = 20,
        offset: Annotated[
            int, Field(description="Products to skip (next_offset of the previous page).", ge=0)
        ] = 0,
    ) -> ProductList:
        """Products, newest first, with their listings per platform (status and URL), print files
        and mockup links. Cheap. get_product shows one with mockup thumbnails."""
        with product_errors(lambda field: "type" if field == "product_types" else field):
            found_products = await engine.products.list(status=status, type=type, limit=limit, offset=offset)
        return ProductList(
            products=[pviews.product_view(engine, p) for p in found_products],
            next_offset=offset + limit if len(found_products) == limit else None,
        )

    @found.tool(READ_ONLY, structured_output=True)
    async def get_product(product_id: ProductId) -> Annotated[CallToolResult, pviews.ProductView]:
        """One product: title, price, status, its listings per platform (with URLs), its print files
        (size, DPI, links) and its mockups (thumbnails and links). Cheap."""
        with product_errors(one_product_field):
            product = await engine.products.get(product_id)
        return await pviews.products_result(
            engine,
            [product],
            pviews.product_line(engine, product).removeprefix("- "),
            pviews.product_view(engine, product),
        )

    return found.tools


# -- shared with the publishing tools -------------------------------------------------------------


async def run_products(engine: Engine, run: Run) -> list[Product]:
    """The products a products run made (so far) or a publish run changed, in order."""
    if run.kind.value == "publish":
        ids = list(run.inputs.get("product_ids", []))
    else:
        made = await engine.ledger.list_products(run_id=run.id, limit=1000)
        ids = [p.id for p in reversed(made)]
    products = []
    for product_id in ids:
        try:
            products.append(await engine.products.get(product_id))
        except ProductNotFound:
            continue
    return products


async def run_answer(engine: Engine, run: Run) -> tuple[list[Product], ProductsRun]:
    """The products of `run` and its view."""
    products = await run_products(engine, run)
    view = ProductsRun(
        run_id=run.id,
        kind=run.kind.value,
        status=run.status.value,
        progress=round(run.progress, 4),
        message=run.message,
        error=run.error,
        products=[pviews.product_view(engine, p) for p in products],
        errors=list((run.result or {}).get("errors", [])),
        next=pviews.run_next(run, products),
    )
    return products, view


def run_text(engine: Engine, head: str, view: ProductsRun, products: list[Product]) -> str:
    """A run's answer in words: `head`, its status, each product, its problems, what next."""
    said = [f"{head} Run {view.run_id}: {view.status}."]
    said += [pviews.product_line(engine, p) for p in products]
    if view.errors:
        said.append("Problems:")
        said += [f"- {error}" for error in view.errors]
    said.append(view.next)
    return "\n".join(said)


def said(text: str, view: BaseModel) -> CallToolResult:
    """A tool result that says `text` and carries `view`."""
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


def one_product_field(field: str) -> str:
    """A tool of one product names the engine's `product_ids` as its `product_id`."""
    return "product_id" if field == "product_ids" else field


def _design_field(from_source: bool) -> Callable[[str], str]:
    def rename(field: str) -> str:
        if field == "designs":
            return "design" if from_source else "prompts"
        match = re.fullmatch(r"designs\[(\d+)\](?:\.(\w+))?", field)
        if match:
            return "design" if from_source else f"prompts[{match[1]}]"
        return field

    return rename


# -- what the client can do ------------------------------------------------------------------------


def step_words(progress: Progress) -> str:
    """A products run's progress in words: "step 3/5 · design 1: tshirt print files and mockups made"."""
    return f"step {progress.step}/{progress.max_steps}" + (
        f" · {progress.message}" if progress.message else ""
    )


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
