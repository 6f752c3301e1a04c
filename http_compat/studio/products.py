"""The studio's products: the list, a product's page (mockups, print files, where it is listed),
and publishing with a confirmation.

Pages: `GET /products` (newest first, 48 a page, `?page=`) and `GET /products/{id}`. A product's
files are served at `/products/{id}/files/{name}` under the shop's names for them
(`mockup-<colour>.png`, `print-<area>.png`, `design.png`: `http_compat.shop.served_files`),
streamed from the runs that made them; no other file of those runs is reachable this way.

JSON: `GET /api/products/{id}`; `POST /api/products/{id}/publish` with `{platforms, action,
confirm}` queues a publish (or unpublish) run (`engine.products.submit_publish`) and answers its card;
the page follows it on the live channel and then reads the product again.

Decisions:
- Publishing makes a product visible to buyers, so the request must say `confirm: true`, which
  the page sends only from its confirmation dialog (titles, price, platforms shown); without it
  the answer is a 422 on `confirm`. Unpublishing needs no confirmation: it sells nothing.
- The platforms offered are every platform Atelier knows; one that is not configured is shown
  with what it lacks (`engine.products.check_platforms`'s own message) and cannot be chosen. The enabled
  ones (ATELIER_ENABLED_PLATFORMS) start ticked.
- A malformed product id is a 404 like an unknown one.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.engine import Engine
from core.errors import InvalidInput, ProductNotFound
from core.ids import FILENAME_RE
from core.publishing.models import PRODUCT_ID_RE, Product
from core.settings import Settings
from http_compat.api import Api, Param
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response
from http_compat.shop import design_of, file_name, format_price, served_files
from http_compat.studio.characters import when
from http_compat.studio.fields import json_object, refused
from http_compat.studio.pages import not_found_page, prefix_of, render
from http_compat.studio.views import card

PAGE_SIZE = 48
ACTIONS = ("publish", "unpublish")


def platforms_of(engine: Engine, settings: Settings) -> list[dict[str, Any]]:
    """Every platform: whether it is configured (and if not, what it lacks) and enabled by default."""
    enabled = set(settings.platform_names)
    shown = []
    for name in engine.products.publishers:
        try:
            engine.products.check_platforms([name])
            problem = None
        except InvalidInput as exc:
            problem = exc.problem
        shown.append(
            {"name": name, "configured": problem is None, "problem": problem, "enabled": name in enabled}
        )
    return shown


def product_view(engine: Engine, product: Product, prefix: str) -> dict[str, Any]:
    """A product as its page shows it: files with URLs, price, and each platform's listing."""
    base = f"{prefix}/products/{product.id}"

    def url(role: str, name: str, filename: str) -> str:
        return f"{base}/files/{file_name(role, name, filename)}"

    design = design_of(product)
    type_ = engine.products.catalog.types.get(product.type)
    return {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "type": product.type,
        "type_name": type_.name if type_ is not None else product.type,
        "price": format_price(product.price_cents),
        "status": product.status,
        "colours": product.colours,
        "sizes": product.sizes,
        "url": base,
        "made": when(product.created_at),
        "run_url": f"{prefix}/runs/{product.run_id}",
        "mockups": [
            {"colour": f.name, "url": url(f.role, f.name, f.filename), "width": f.width, "height": f.height}
            for f in product.mockups
        ],
        "print_files": [
            {
                "area": f.name,
                "url": url(f.role, f.name, f.filename),
                "width": f.width,
                "height": f.height,
                "dpi": f.dpi,
            }
            for f in product.print_files
        ],
        "design": (
            {"url": url("design", "design", design[1]), "prompt": (product.design or {}).get("prompt")}
            if design is not None
            else None
        ),
        "listings": [
            {**listing.to_dict(), "updated": when(listing.updated_at) if listing.updated_at else ""}
            for listing in product.listings
        ],
    }


def add_products(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the products pages, their files and the publish route on the studio's `api`."""
    logged_in = settings.api_token is not None

    async def product_of(request: Request) -> Product:
        product_id = request.path_params["id"]
        if not PRODUCT_ID_RE.fullmatch(product_id):
            raise ApiError(404, "no such product (that is not a product id)", code="NOT_FOUND")
        return await engine.products.get(product_id)

    @api.route(
        "GET",
        "/products",
        summary="Products, newest first",
        produces="text/html",
        params=[Param("page", type="integer", description="1, 2, ... (48 products a page)")],
    )
    async def products_page(request: Request) -> Response:
        prefix = prefix_of(request)
        page = query_int(request, "page", default=1, low=1, high=100_000)
        found = await engine.products.list(limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
        return render(
            "products.html",
            prefix,
            products=[product_view(engine, p, prefix) for p in found[:PAGE_SIZE]],
            page=page,
            more=len(found) > PAGE_SIZE,
            logged_in=logged_in,
        )

    @api.route("GET", "/products/{id}", summary="A product's page", produces="text/html")
    async def product_page(request: Request) -> Response:
        prefix = prefix_of(request)
        try:
            product = await product_of(request)
        except (ApiError, ProductNotFound):
            return not_found_page(prefix, "product", "products", logged_in)
        return render(
            "products_one.html",
            prefix,
            product=product_view(engine, product, prefix),
            platforms=platforms_of(engine, settings),
            logged_in=logged_in,
        )

    @api.route(
        "GET",
        "/products/{id}/files/{name}",
        summary="A product's mockup, print file or design",
        produces="image/png",
    )
    async def product_file(request: Request) -> Response:
        product = await product_of(request)
        name = request.path_params["name"]
        found = served_files(product).get(name) if FILENAME_RE.fullmatch(name) else None
        if found is None:
            raise ApiError(404, f"product {product.id} has no file {name[:80]!r}", code="NOT_FOUND")
        run_id, filename = found
        return await artifact_response(engine, await engine.get_run(run_id), filename)

    @api.route("GET", "/api/products/{id}", summary="A product, its files and its listings")
    async def get_product(request: Request) -> Response:
        return JSONResponse(product_view(engine, await product_of(request), prefix_of(request)))

    @api.route(
        "POST",
        "/api/products/{id}/publish",
        summary="Publish or unpublish a product: {platforms, action, confirm}",
        description="Publishing needs `confirm: true` (the page's confirmation dialog sends it). "
        "Answers the publish run's card (201); follow it on /api/events.",
        responses={201: "The publish run's card", 422: "A field is invalid (`problems` names it)"},
    )
    async def publish(request: Request) -> Response:
        product = await product_of(request)
        data = await json_object(request)
        try:
            action = data.get("action", "publish")
            if action not in ACTIONS:
                raise InvalidInput("action", f"must be publish or unpublish (got {action!r:.40})")
            platforms = data.get("platforms")
            if not isinstance(platforms, list) or not platforms:
                raise InvalidInput("platforms", "choose at least one platform")
            names = engine.products.check_platforms(platforms)
            if action == "publish" and data.get("confirm") is not True:
                raise InvalidInput(
                    "confirm",
                    f"publishing makes {product.title!r} visible to buyers on {', '.join(names)}: "
                    "confirm it first",
                )
            run = await engine.products.submit_publish(
                [product.id], names, action=action, meta={"door": "studio"}
            )
        except InvalidInput as exc:
            return refused(exc)
        return JSONResponse(card(run, prefix_of(request)), status_code=201)
