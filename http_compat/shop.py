"""The storefront's web page and JSON, served at `/shop` (see `core.publishing.storefront`).

- `GET /shop` is the shop: a grid of the products published on the storefront, newest first
  (first mockup, title, price, product type). `GET /shop/products/{id}` is a product's page: its
  mockups (one per colour), sizes, description, price, the design and its print files.
  `GET /shop/products/{id}/images/{filename}` serves the product's files, streamed from the runs
  that made them, under names of the shop's own: `mockup-<colour>.png`, `print-<area>.png`,
  `design.png` (see `file_name`); no other file of those runs is reachable.
- `GET /shop/api/products` and `/shop/api/products/{id}` are the same as JSON, with absolute URLs
  built from the address the client used (the ledger keeps them relative).
- Only products whose storefront listing is `published` exist here: a draft, an unpublished
  product, a malformed id or an unknown one are all the same 404 (nothing tells a visitor which
  products exist unpublished).
- The pages are rendered on the server: no script, no external asset (Atelier runs offline),
  one small inline stylesheet, every image with alt text. Everything shown is escaped (titles and
  descriptions are user input), and `Content-Security-Policy` forbids scripts outright, so even
  markup that slipped through could not run.
- Prices are cents, shown as dollars (`$24.99`): the catalog has no currency yet, and USD is the
  default of both Printify and Shopify stores.
- `GET /shop` answers 307 to `/shop/` (as every mount does); the grid pages by 48 (`?page=`),
  the JSON by `limit`/`offset` with `next_offset`.
- Errors of the JSON routes (and of the Host/Origin guard and bearer token in front of all of
  `/shop`) are Atelier's own `{"error", "message"}`; the pages answer an HTML 404 page.
"""

from __future__ import annotations

import html
import re
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from core.engine import Engine
from core.errors import InvalidInput
from core.ids import check_filename
from core.publishing.models import PRODUCT_ID_RE, Product, ProductFile
from core.publishing.storefront import PLATFORM
from core.settings import Settings
from http_compat.api import Api, Param
from http_compat.errors import ApiError, atelier_error
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, base_url, json_response

# The shop's pages run no script at all; images and the inline stylesheet come from here only.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
PAGE_SIZE = 48  # products per page of the grid
MAX_LIMIT = 200


def format_price(cents: int) -> str:
    """`2499` -> `$24.99`."""
    return f"${cents // 100:,}.{cents % 100:02d}"


class Shelf:
    """What the shop shows: the storefront's published products and their files."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        # Product type names for display; a type no longer in the catalog shows its key.
        self.type_names = {key: t.name for key, t in engine.products.catalog.types.items()}

    async def products(self, limit: int, offset: int = 0) -> tuple[list[Product], bool]:
        """Up to `limit` published products from `offset`, newest first, and whether more follow."""
        found = await self.engine.ledger.published_on(PLATFORM, limit=limit + 1, offset=offset)
        return found[:limit], len(found) > limit

    async def product(self, product_id: str) -> Product:
        """A published product; `ApiError` 404 for anything else (malformed, unknown, not published)."""
        product = None
        if PRODUCT_ID_RE.fullmatch(product_id):
            product = await self.engine.ledger.get_product(product_id)
        listing = product.listing(PLATFORM) if product is not None else None
        if product is None or listing is None or listing.status != "published":
            raise ApiError(404, f"no product {product_id[:40]!r} in the shop", code="NOT_FOUND")
        return product

    def type_name(self, product: Product) -> str:
        return self.type_names.get(product.type, product.type)


def file_name(role: str, name: str, filename: str) -> str:
    """The name the shop serves a product's file by: `mockup-<colour>`, `print-<area>` or
    `design`, with the file's extension. Names of their own rather than the artifacts': the
    design run's `image-01.png` and the upscale run's `image-01.png` would be one URL."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "file"
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"{role}-{slug}.{extension}" if role != "design" else f"design.{extension}"


def design_of(product: Product) -> tuple[str, str] | None:
    """(run id, filename) of the design the product was made from, when it records one."""
    design = product.design or {}
    run_id, filename = design.get("run_id"), design.get("filename")
    return (run_id, filename) if isinstance(run_id, str) and isinstance(filename, str) else None


def served_files(product: Product) -> dict[str, tuple[str, str]]:
    """Every file the shop serves for the product, by its shop name -> (run id, artifact filename):
    its mockups, print files and design, and nothing else of those runs."""
    files: dict[str, tuple[str, str]] = {}
    for f in (*product.mockups, *product.print_files):
        files.setdefault(file_name(f.role, f.name, f.filename), (f.run_id, f.filename))
    design = design_of(product)
    if design is not None:
        files.setdefault(file_name("design", "design", design[1]), design)
    return files


def _image_path(root: str, product: Product, f: ProductFile) -> str:
    return f"{root}/products/{product.id}/images/{file_name(f.role, f.name, f.filename)}"


def _design_path(root: str, product: Product) -> str | None:
    design = design_of(product)
    if design is None:
        return None
    return f"{root}/products/{product.id}/images/{file_name('design', 'design', design[1])}"


class ShopFile(BaseModel):
    url: str = Field(description="Absolute URL of the image (PNG).")
    width: int
    height: int


class ShopMockup(ShopFile):
    colour: str


class ShopPrintFile(ShopFile):
    area: str = Field(description="The print area: front, back, wrap.")
    dpi: int | None = None


class ShopDesign(BaseModel):
    url: str
    prompt: str | None = None


class ShopProduct(BaseModel):
    """A product for sale on the storefront."""

    id: str = Field(examples=["prod-0a1b2c3d4e5f"])
    title: str
    description: str
    type: str = Field(description="The catalog's product type key (tshirt, hoodie, poster, mug).")
    type_name: str
    price_cents: int
    price: str = Field(description="The price as shown: `$24.99`.", examples=["$24.99"])
    colours: list[str]
    sizes: list[str]
    url: str = Field(description="Absolute URL of the product's page.")
    mockups: list[ShopMockup]
    print_files: list[ShopPrintFile]
    design: ShopDesign | None
    published_at: float = Field(description="Epoch seconds of its listing's last change.")


class ShopProducts(BaseModel):
    products: list[ShopProduct]
    next_offset: int | None = Field(description="The `offset` of the next page; null on the last one.")


def product_json(shelf: Shelf, product: Product, base: str) -> dict[str, Any]:
    """A product as the JSON routes show it; `base` is the shop's absolute URL."""

    def file_url(f: ProductFile) -> str:
        return _image_path(base, product, f)

    design_url = _design_path(base, product)
    return {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "type": product.type,
        "type_name": shelf.type_name(product),
        "price_cents": product.price_cents,
        "price": format_price(product.price_cents),
        "colours": product.colours,
        "sizes": product.sizes,
        "url": f"{base}/products/{product.id}",
        "mockups": [
            {"colour": f.name, "url": file_url(f), "width": f.width, "height": f.height}
            for f in product.mockups
        ],
        "print_files": [
            {"area": f.name, "url": file_url(f), "width": f.width, "height": f.height, "dpi": f.dpi}
            for f in product.print_files
        ],
        "design": (
            {"url": design_url, "prompt": (product.design or {}).get("prompt")} if design_url else None
        ),
        "published_at": listing.updated_at if (listing := product.listing(PLATFORM)) else 0.0,
    }


# -- pages -----------------------------------------------------------------------------------

_STYLE = """
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1c1c1e;background:#fafaf8}
header,main,footer{max-width:72rem;margin:0 auto;padding:1rem 1.25rem}
header{border-bottom:1px solid #e3e3e0}
header a{color:inherit;text-decoration:none;font-weight:700;font-size:1.25rem}
h1{font-size:1.6rem;margin:.5rem 0}
.grid{list-style:none;padding:0;margin:0;display:grid;gap:1.25rem;
 grid-template-columns:repeat(auto-fill,minmax(14rem,1fr))}
.card a{display:block;color:inherit;text-decoration:none;background:#fff;border:1px solid #e3e3e0;
 border-radius:.5rem;overflow:hidden}
.card a:hover,.card a:focus{border-color:#22304a;outline:none}
.card img,.mockups img{display:block;width:100%;height:auto;aspect-ratio:1;object-fit:contain;background:#f0f0ee}
.card .info{padding:.6rem .8rem}
.title{font-weight:600;margin:0;overflow-wrap:anywhere}
.price{font-weight:700}
.type{color:#5a5a60;font-size:.9rem}
.product{display:grid;gap:2rem;grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
@media (max-width:48rem){.product{grid-template-columns:1fr}}
.mockups{list-style:none;padding:0;margin:0;display:grid;gap:1rem;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr))}
figure{margin:0}
figcaption{text-align:center;color:#5a5a60;font-size:.9rem}
.sizes{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4rem}
.sizes li{border:1px solid #c9c9c4;border-radius:.3rem;padding:.1rem .6rem}
.description{white-space:pre-line;overflow-wrap:anywhere}
.design img{max-width:16rem;width:100%;height:auto;border:1px solid #e3e3e0}
.empty{color:#5a5a60}
.pages{display:flex;gap:1.5rem;margin-top:1.5rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, root: str, body: str, status: int = 200) -> Response:
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><a href="{_e(root)}">Atelier shop</a></header><main>{body}</main>'
        "<footer><small>Made with Atelier</small></footer></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=PAGE_HEADERS)


def _card(shelf: Shelf, product: Product, root: str) -> str:
    mockup = product.mockups[0] if product.mockups else None
    image = (
        f'<img src="{_e(_image_path(root, product, mockup))}" width="{mockup.width}" '
        f'height="{mockup.height}" loading="lazy" alt="{_e(product.title)}, {_e(mockup.name)}">'
        if mockup is not None
        else ""
    )
    return (
        f'<li class="card"><a href="{_e(root)}/products/{_e(product.id)}">{image}<div class="info">'
        f'<p class="title">{_e(product.title)}</p>'
        f'<p><span class="price">{_e(format_price(product.price_cents))}</span> '
        f'<span class="type">{_e(shelf.type_name(product))}</span></p></div></a></li>'
    )


def grid_page(shelf: Shelf, products: list[Product], root: str, page: int, more: bool) -> Response:
    if products:
        cards = "".join(_card(shelf, product, root) for product in products)
        body = f'<h1>Shop</h1><ul class="grid" aria-label="Products">{cards}</ul>'
    elif page > 1:
        body = f'<h1>Shop</h1><p class="empty">No more products. <a href="{_e(root)}/">Back to the first page</a></p>'
    else:
        body = '<h1>Shop</h1><p class="empty">Nothing is for sale yet.</p>'
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{_e(root)}/?page={page - 1}">Previous page</a>')
    if more:
        links.append(f'<a rel="next" href="{_e(root)}/?page={page + 1}">Next page</a>')
    if links:
        body += f'<nav class="pages" aria-label="Pages">{" ".join(links)}</nav>'
    return _page("Shop" if page == 1 else f"Shop, page {page}", root, body)


def product_page(shelf: Shelf, product: Product, root: str) -> Response:
    mockups = "".join(
        f'<li><figure><img src="{_e(_image_path(root, product, f))}" width="{f.width}" '
        f'height="{f.height}" alt="{_e(product.title)} in {_e(f.name)}">'
        f"<figcaption>{_e(f.name)}</figcaption></figure></li>"
        for f in product.mockups
    )
    sizes = "".join(f"<li>{_e(size)}</li>" for size in product.sizes)
    # Print quality as text: the print-ready file itself is for platforms, not for a buyer's tab.
    prints = "".join(
        f"<li>{_e(f.name)}: {f.width}×{f.height} px" + (f" at {f.dpi} DPI" if f.dpi else "") + "</li>"
        for f in product.print_files
    )
    design_url = _design_path(root, product)
    design_html = ""
    if design_url is not None:
        design_html = (
            '<section class="design"><h2>The design</h2>'
            f'<img src="{_e(design_url)}" loading="lazy" '
            f'alt="The design of {_e(product.title)}"></section>'
        )
    body = (
        f'<article class="product"><div><h1 class="title">{_e(product.title)}</h1>'
        f'<ul class="mockups" aria-label="Colours">{mockups}</ul></div>'
        f'<div><p><span class="price">{_e(format_price(product.price_cents))}</span> '
        f'<span class="type">{_e(shelf.type_name(product))}</span></p>'
        f'<h2>Sizes</h2><ul class="sizes">{sizes}</ul>'
        + (
            f'<h2>Description</h2><p class="description">{_e(product.description)}</p>'
            if product.description.strip()
            else ""
        )
        + f"{design_html}"
        + (f'<h2>Printed at</h2><ul class="prints">{prints}</ul>' if prints else "")
        + "</div></article>"
    )
    return _page(product.title, root, body)


def not_found_page(root: str) -> Response:
    body = f'<h1>Not in the shop</h1><p>This product is not for sale. <a href="{_e(root)}">Back to the shop</a></p>'
    return _page("Not in the shop", root, body, status=404)


# -- routes ----------------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    """The shop as an `Api` (its JSON routes documented at `/shop/openapi.json`), to mount at `/shop`."""
    shelf = Shelf(engine, settings)
    api = Api(
        name="shop",
        title="Atelier shop",
        version="1",
        description="The embedded storefront: products published on the `storefront` platform.",
        render_error=atelier_error,
        invalid_status=400,
    )

    def root_of(request: Request) -> str:
        return request.scope.get("root_path", "")

    @api.route(
        "GET",
        "/",
        summary="The shop: published products, newest first",
        params=[Param("page", type="integer", description=f"Page of {PAGE_SIZE} products, from 1.")],
        produces="text/html",
    )
    async def shop_page(request: Request) -> Response:
        page = query_int(request, "page", 1, low=1, high=100_000, invalid_status=400)
        products, more = await shelf.products(PAGE_SIZE, (page - 1) * PAGE_SIZE)
        return grid_page(shelf, products, root_of(request), page, more)

    @api.route("GET", "/products/{id}", summary="A product's page", produces="text/html")
    async def product_page_route(request: Request) -> Response:
        try:
            product = await shelf.product(request.path_params["id"])
        except ApiError:
            return not_found_page(root_of(request))
        return product_page(shelf, product, root_of(request))

    @api.route(
        "GET",
        "/products/{id}/images/{filename}",
        summary="A product's mockup, print file or design",
        produces="image/png",
    )
    async def product_image(request: Request) -> Response:
        product = await shelf.product(request.path_params["id"])
        filename = request.path_params["filename"]
        try:
            check_filename(filename)
        except InvalidInput:
            raise ApiError(404, "no such file of this product", code="NOT_FOUND") from None
        found = served_files(product).get(filename)
        if found is not None:
            run_id, artifact = found
            return await artifact_response(engine, await engine.get_run(run_id), artifact)
        raise ApiError(404, f"no file {filename!r} of product {product.id}", code="NOT_FOUND")

    @api.route(
        "GET",
        "/api/products",
        summary="Published products, newest first",
        params=[
            Param("limit", type="integer", description=f"At most this many (1..{MAX_LIMIT}, default 50)."),
            Param("offset", type="integer", description="Skip this many (default 0)."),
        ],
        responses={200: ShopProducts},
    )
    async def list_json(request: Request) -> Response:
        limit = query_int(request, "limit", 50, low=1, high=MAX_LIMIT, invalid_status=400)
        offset = query_int(request, "offset", 0, low=0, invalid_status=400)
        products, more = await shelf.products(limit, offset)
        base = base_url(request)
        return json_response(
            {
                "products": [product_json(shelf, p, base) for p in products],
                "next_offset": offset + len(products) if more else None,
            }
        )

    @api.route("GET", "/api/products/{id}", summary="A published product", responses={200: ShopProduct})
    async def get_json(request: Request) -> Response:
        product = await shelf.product(request.path_params["id"])
        return json_response(product_json(shelf, product, base_url(request)))

    return api
