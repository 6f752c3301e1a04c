"""What the print-on-demand tools return: the catalog, composed prompts, products with their
listings, print files and mockups (a few as thumbnails, every one as a resource link)."""

from __future__ import annotations

from typing import Any, Literal

from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from core.engine import Engine
from core.errors import AtelierError
from core.models import Run
from core.publishing.catalog import Catalog, ProductType
from core.publishing.models import Product, ProductFile
from core.publishing.storefront import absolute_url, served_base_url
from mcp_server import views

# Mockups shown inline in one result; the rest are resource links (a chat shows a handful well).
INLINE_MOCKUPS = 4


def product_uri(product_id: str) -> str:
    return f"atelier://products/{product_id}"


def mockup_uri(product_id: str, filename: str) -> str:
    return f"atelier://products/{product_id}/mockups/{filename}"


def media_type(filename: str) -> str:
    """A product file's type by its name: mockups are JPEG, print files PNG."""
    return "image/jpeg" if filename.lower().endswith((".jpg", ".jpeg")) else "image/png"


def money(cents: int) -> str:
    """A price as a seller reads it: 2499 -> "24.99" (the currency is the shop's own)."""
    return f"{cents // 100}.{cents % 100:02d}"


# -- the catalog -------------------------------------------------------------------------------


class PrintAreaView(BaseModel):
    name: str = Field(description="front, back, wrap...")
    width: int = Field(description="Pixels.")
    height: int = Field(description="Pixels.")
    dpi: int
    inches: str = Field(description="Its printed size, e.g. 15 x 18 in.")


class PlatformMappingView(BaseModel):
    platform: str
    verified: bool = Field(description="True if the mapping is a checked fact, false if an assumption.")
    note: str
    enabled: bool = Field(
        description="Listed in ATELIER_ENABLED_PLATFORMS (used when `platforms` is omitted)."
    )
    configured: bool = Field(description="Its settings are there: products can be created on it.")


class ProductTypeView(BaseModel):
    key: str = Field(description="What create_products' `product_types` takes.")
    name: str
    print_areas: list[PrintAreaView]
    colours: dict[str, str] = Field(description="Colour name -> #rrggbb; one mockup per colour.")
    sizes: list[str]
    price_cents: int = Field(description="Default price; create_products' `price_cents` overrides it.")
    price: str
    platforms: list[PlatformMappingView]


class CatalogView(BaseModel):
    product_types: list[ProductTypeView]
    source: str = Field(description="built-in, or built-in + the ATELIER_CATALOG file.")
    enabled_platforms: list[str]


def catalog_view(engine: Engine, catalog: Catalog) -> CatalogView:
    enabled = list(engine.settings.platform_names)
    return CatalogView(
        product_types=[_type_view(engine, t, enabled) for t in catalog.types.values()],
        source=catalog.source,
        enabled_platforms=enabled,
    )


def _type_view(engine: Engine, product_type: ProductType, enabled: list[str]) -> ProductTypeView:
    mappings = (
        [
            # The embedded shop needs no mapping: it sells every type as Atelier describes it.
            PlatformMappingView(
                platform="storefront",
                verified=True,
                note="Atelier's own shop",
                enabled="storefront" in enabled,
                configured=True,
            )
        ]
        if "storefront" in engine.products.publishers
        else []
    )
    for platform, mapping in product_type.platforms.items():
        publisher = engine.products.publishers.get(platform)
        mappings.append(
            PlatformMappingView(
                platform=platform,
                verified=mapping.verified,
                note=mapping.note,
                enabled=platform in enabled,
                configured=publisher is not None and publisher.configured(),
            )
        )
    return ProductTypeView(
        key=product_type.key,
        name=product_type.name,
        print_areas=[
            PrintAreaView(
                name=name,
                width=area.width,
                height=area.height,
                dpi=area.dpi,
                inches=f"{area.width / area.dpi:g} x {area.height / area.dpi:g} in",
            )
            for name, area in product_type.print_areas.items()
        ],
        colours=dict(product_type.colours),
        sizes=list(product_type.sizes),
        price_cents=product_type.price_cents,
        price=money(product_type.price_cents),
        platforms=mappings,
    )


# -- prompts -----------------------------------------------------------------------------------


class TemplateView(BaseModel):
    name: str = Field(description="What compose_prompts' `template` takes.")
    text: str = Field(description="The template; {theme}, {style}, {niche} parts are filled in.")


class PromptsView(BaseModel):
    prompts: list[str] = Field(description="Design prompts: pass them to create_products' `prompts`.")
    composed_by: Literal["templates", "model"] = Field(
        description="templates: Atelier's deterministic templates; model: the host's model, asked over MCP sampling."
    )
    note: str = Field(description="Why templates were used when the model was asked for, or ''.")
    templates: list[TemplateView]


# -- products ----------------------------------------------------------------------------------


class PrintFileView(BaseModel):
    area: str
    filename: str
    uri: str = Field(description="Resource URI of the full-size print file (a PNG of the run that made it).")
    width: int
    height: int
    dpi: int | None


class MockupView(BaseModel):
    colour: str
    filename: str
    uri: str = Field(description="Resource URI of the mockup image.")
    width: int
    height: int


class ListingView(BaseModel):
    platform: str
    status: str = Field(description="creating | draft | published | unpublished | failed")
    external_id: str | None = Field(description="The platform's id of the product.")
    url: str | None = Field(description="Where buyers find it (once published) or the seller edits it.")
    error: str | None


class ProductView(BaseModel):
    product_id: str
    uri: str
    type: str
    title: str
    description: str
    price_cents: int
    price: str
    status: str = Field(description="draft | published | unpublished")
    colours: list[str]
    sizes: list[str]
    design: dict[str, Any] = Field(
        description="Where the design came from (its run and prompt, or its source)."
    )
    run_id: str = Field(
        description="The run that made it (its print files and mockups are that run's files)."
    )
    print_files: list[PrintFileView]
    mockups: list[MockupView]
    listings: list[ListingView]


class ProductList(BaseModel):
    products: list[ProductView]
    next_offset: int | None = Field(description="Pass as `offset` for the next page; null on the last one.")


class ProductsRun(BaseModel):
    """A products or publish run and the products it made or changed."""

    run_id: str
    kind: str
    status: str = Field(description="queued | running | completed | failed | cancelled")
    progress: float = Field(description="0..1")
    message: str
    error: str | None
    products: list[ProductView]
    errors: list[str] = Field(description="Per design, type and platform: what could not be done, and why.")
    next: str = Field(description="What to do next.")


class PublishOutcome(ProductsRun):
    """publish_products' answer: whether anything was published, how the user confirmed, and the run."""

    run_id: str | None = Field(description="The publish run; null when nothing was published.")
    kind: str | None
    status: str | None = Field(description="The run's: queued | running | completed | failed | cancelled.")
    progress: float | None
    published: bool = Field(description="True if a publish run was queued; false if nothing was published.")
    confirmed_by: Literal["elicitation", "confirm"] = Field(
        description="How the user's confirmation was sought: asked over elicitation, or `confirm: true`."
    )
    answer: str = Field(
        description="accepted, or 'confirm: true' (published); declined, cancelled, or 'accepted without "
        "ticking publish' (nothing published)."
    )


def product_view(engine: Engine, product: Product) -> ProductView:
    """A product as a model sees it; storefront URLs made absolute (see `listing_url`)."""
    return ProductView(
        product_id=product.id,
        uri=product_uri(product.id),
        type=product.type,
        title=product.title,
        description=product.description,
        price_cents=product.price_cents,
        price=money(product.price_cents),
        status=product.status,
        colours=list(product.colours),
        sizes=list(product.sizes),
        design=product.design,
        run_id=product.run_id,
        print_files=[
            PrintFileView(
                area=f.name,
                filename=f.filename,
                uri=views.image_uri(f.run_id, f.filename),
                width=f.width,
                height=f.height,
                dpi=f.dpi,
            )
            for f in product.print_files
        ],
        mockups=[
            MockupView(
                colour=f.name,
                filename=f.filename,
                uri=mockup_uri(product.id, f.filename),
                width=f.width,
                height=f.height,
            )
            for f in product.mockups
        ],
        listings=[
            ListingView(
                platform=listing.platform,
                status=listing.status,
                external_id=listing.external_id,
                url=listing_url(engine, listing.url),
                error=listing.error,
            )
            for listing in product.listings
        ],
    )


def listing_url(engine: Engine, url: str | None) -> str | None:
    """A listing's URL as a user can open it: the storefront's relative `/shop/...` under the
    address `atelier serve` listens on by the settings (an MCP call has no request URL of its own
    to go by); other platforms' URLs are absolute already."""
    return absolute_url(url, served_base_url(engine.settings)) if url else url


def product_line(engine: Engine, product: Product) -> str:
    """One product in words: title, type, price, and where it is listed."""
    listed = ", ".join(
        f"{listing.platform} {listing.status}"
        + (f" {listing_url(engine, listing.url)}" if listing.url else "")
        for listing in product.listings
    )
    return (
        f"- {product.id}: {product.title!r} ({product.type}) at {money(product.price_cents)}, "
        f"{product.status}" + (f"; {listed}" if listed else "")
    )


async def products_result(
    engine: Engine, products: list[Product], text: str, view: BaseModel
) -> CallToolResult:
    """A tool result: `text`, mockup thumbnails (the first few), and a link to every mockup."""
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    mockups = [(p, f) for p in products for f in p.mockups]
    content.extend(await _thumbnails(engine, mockups[:INLINE_MOCKUPS], engine.settings.thumbnail_px))
    content.extend(
        ResourceLink(
            type="resource_link",
            uri=mockup_uri(product.id, f.filename),
            name=f.filename,
            mime_type=media_type(f.filename),
            description=f"{product.title} ({product.type}) mockup in {f.name}, {f.width}x{f.height}",
        )
        for product, f in mockups
    )
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


async def _thumbnails(
    engine: Engine, mockups: list[tuple[Product, ProductFile]], max_px: int
) -> list[ImageContent]:
    sources = []
    for _, f in mockups:
        try:
            _, data = await engine.read_artifact(f.run_id, f.filename)
        except AtelierError:
            continue  # its run is still making it: the link is there, the thumbnail comes later
        sources.append(data)
    return await views.image_thumbnails(sources, max_px)


def run_next(run: Run, products: list[Product]) -> str:
    """What to do next after a products or publish run, in one sentence."""
    match run.status.value:
        case "queued" | "running":
            return f"Still {run.status.value}. Call wait_for_run with run_id={run.id!r}, then get_product or list_products."
        case "completed" if run.kind.value == "publish":
            return "Done. get_product shows each listing with its URL."
        case "completed" if products:
            ids = ", ".join(repr(p.id) for p in products[:8])
            return (
                f"Drafts made. Show the mockups to the user; publish_products with product_ids=[{ids}] "
                "publishes them once the user agrees."
            )
        case "completed":
            return "Done, but no product was made: see `errors`."
        case "failed":
            return f"Failed: {run.error}. retry_run queues it again (what is done is kept)."
        case _:
            return "Cancelled. retry_run queues it again."
