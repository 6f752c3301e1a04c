"""A fake Printify REST v1 for tests: the documented endpoints, checks and error shapes, in memory.

`FakePrintify` holds the state (shops, uploads, products per shop, a request log) and exposes
`.app`, a Starlette app; `serve_printify()` serves it under uvicorn on a free loopback port
inside the caller's event loop.

What it follows (../shared/notes/external-apis.md, Printify's API reference):
- every request needs `Authorization: Bearer <token>` (401 otherwise) and a `User-Agent` (400);
- error bodies are `{"status": "error", "code", "message", "errors": {"reason", "code"}}`;
- uploads take `{file_name, contents}` (base64) or `{file_name, url}` and answer `{id, preview_url, ...}`;
- a product names a blueprint and print provider, its variants (ids from the catalog, prices in
  integer cents) and print areas; every enabled variant must be in exactly one print area, and
  image ids must come from uploads. Printify answers with the product and its mockups (`images`);
- products are listed in pages (`page`, `limit` at most 50) with Laravel's paging fields;
- `publish.json` locks the product; a connected sales channel then reports
  `publishing_succeeded.json` with `external: {id, handle}` (here: at once, when
  `channel_url` is set) or `publishing_failed.json`; `unpublish.json` unlists it;
- 600 requests a minute per account (429 with Retry-After beyond, the window a knob), and 200
  publishes per 30 minutes.
Knobs: `rate_limit_next(n, retry_after)`, `fail_next(n, status)`, `lose_next_answer(path)`,
`latency_s`, `rate_limit`, `publish_limit`, `channel_url`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.http_served import serve_app

SIZES = ["S", "M", "L", "XL", "2XL", "3XL"]
GARMENT_COLOURS = ["White", "Black", "Navy", "Heather Grey", "Red"]


def _garment(first_id: int, width: int, height: int) -> list[dict[str, Any]]:
    variants = []
    for c, colour in enumerate(GARMENT_COLOURS):
        for s, size in enumerate(SIZES):
            variants.append(
                {
                    "id": first_id + c * 100 + s,
                    "title": f"{colour} / {size}",
                    "options": {"color": colour, "size": size},
                    "placeholders": [
                        {"position": "front", "width": width, "height": height},
                        {"position": "back", "width": width, "height": height},
                    ],
                }
            )
    return variants


# (blueprint, print provider) -> variants, as GET .../variants.json lists them. Ids and sizes
# are the fake's own; titles and option keys have Printify's shape.
CATALOG: dict[tuple[int, int], list[dict[str, Any]]] = {
    (12, 99): _garment(18100, 4500, 5400),
    (77, 99): _garment(32900, 4500, 5400),
    (282, 99): [
        {
            "id": 43100 + i,
            "title": size,
            "options": {"size": size},
            "placeholders": [{"position": "front", "width": w, "height": h}],
        }
        for i, (size, w, h) in enumerate([("12″ x 18″", 3600, 5400), ("18″ x 24″", 5400, 7200)])
    ],
    (68, 1): [
        {
            "id": 33719,
            "title": "11oz",
            "options": {"size": "11oz"},
            "placeholders": [{"position": "front", "width": 2700, "height": 1100}],
        }
    ],
}


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival
    status: int = 0
    user_agent: str | None = None


def _error(status: int, message: str, reason: str | None = None, code: int | None = None) -> JSONResponse:
    code = code or {400: 8150, 401: 10001, 403: 10002, 404: 8203, 429: 10009}.get(status, 9000)
    body = {
        "status": "error",
        "code": code,
        "message": message,
        "errors": {"reason": reason or message, "code": code},
    }
    return JSONResponse(body, status_code=status)


class FakePrintify:
    """One Printify account holding `shop_id`; `token` is the personal access token it accepts."""

    def __init__(
        self,
        token: str = "fake-printify-token",
        shop_id: int = 4242,
        *,
        latency_s: float = 0.0,
        rate_limit: tuple[int, float] = (600, 60.0),
        publish_limit: tuple[int, float] = (200, 1800.0),
        channel_url: str | None = "https://shop.example.com/products",
    ) -> None:
        self.token = token
        self.shops = {
            shop_id: {"id": shop_id, "title": "Atelier test shop", "sales_channel": "custom_integration"}
        }
        self.latency_s = latency_s
        self.rate_limit = rate_limit
        self.publish_limit = publish_limit
        self.channel_url = channel_url
        self.uploads: dict[str, dict[str, Any]] = {}
        self.upload_bytes: dict[str, bytes] = {}
        self.products: dict[int, dict[str, dict[str, Any]]] = {shop_id: {}}
        self.requests: list[RecordedRequest] = []
        self._published_at: list[float] = []
        self._rate_limited: list[float] = []  # Retry-After of each 429 still to give
        self._failures: list[int] = []
        self._lost_answers: list[str] = []  # path suffixes whose next answer is lost
        self.app = Starlette(routes=self._routes())

    # --- knobs and inspection -------------------------------------------------------------
    def rate_limit_next(self, count: int, retry_after: float = 1) -> None:
        """The next `count` requests get 429 with `Retry-After: retry_after`."""
        self._rate_limited.extend([retry_after] * count)

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next `count` requests get `status` (a server error)."""
        self._failures.extend([status] * count)

    def lose_next_answer(self, suffix: str) -> None:
        """The next request whose path ends with `suffix` is carried out, but answered 502 (as when
        a proxy or the connection fails after Printify did the work)."""
        self._lost_answers.append(suffix)

    def requests_to(self, method: str, suffix: str) -> list[RecordedRequest]:
        """Every recorded request of `method` whose path ends with `suffix`."""
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def shop_products(self, shop_id: int | None = None) -> list[dict[str, Any]]:
        """The products held by the shop (the only one by default), oldest first."""
        shop = shop_id if shop_id is not None else next(iter(self.shops))
        return list(self.products[shop].values())

    # --- the protocol -------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        shop = "/v1/shops/{shop:int}"
        product = shop + "/products/{product_id}"
        return [
            Route("/v1/shops.json", self._guard(self.list_shops)),
            Route(
                "/v1/catalog/blueprints/{bp:int}/print_providers/{pp:int}/variants.json",
                self._guard(self.catalog_variants),
            ),
            Route("/v1/uploads/images.json", self._guard(self.upload_image), methods=["POST"]),
            Route(shop + "/products.json", self._guard(self.list_products), methods=["GET"]),
            Route(shop + "/products.json", self._guard(self.create_product), methods=["POST"]),
            Route(product + ".json", self._guard(self.get_product), methods=["GET"]),
            Route(product + "/publish.json", self._guard(self.publish), methods=["POST"]),
            Route(product + "/publishing_succeeded.json", self._guard(self.succeeded), methods=["POST"]),
            Route(product + "/publishing_failed.json", self._guard(self.failed), methods=["POST"]),
            Route(product + "/unpublish.json", self._guard(self.unpublish), methods=["POST"]),
        ]

    def _guard(self, handler: Any) -> Any:
        """Record the request, apply the knobs, auth and rate limit, then run `handler`."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = await request.json() if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            record = RecordedRequest(
                request.method,
                request.url.path,
                dict(request.query_params),
                body,
                time.monotonic(),
                user_agent=request.headers.get("user-agent"),
            )
            self.requests.append(record)
            if self.latency_s:
                await anyio.sleep(self.latency_s)
            response = self._refusal(request, record) or await handler(request, body)
            lost = next((s for s in self._lost_answers if record.path.endswith(s)), None)
            if lost is not None and response.status_code < 400:
                self._lost_answers.remove(lost)
                response = _error(502, "Bad Gateway")
            record.status = response.status_code
            return response

        return endpoint

    def _refusal(self, request: Request, record: RecordedRequest) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Unauthenticated.")
        if not record.user_agent:
            return _error(400, "User-Agent header is required.")
        if self._failures:
            return _error(self._failures.pop(0), "Internal server error.")
        if self._rate_limited:
            return self._too_many(self._rate_limited.pop(0))
        limit, window = self.rate_limit
        recent = [r for r in self.requests if r.at > record.at - window and r.status != 429]
        if len(recent) > limit:  # `recent` includes this request
            return self._too_many(window)
        shop = request.path_params.get("shop")
        if shop is not None and shop not in self.shops:
            return _error(404, "Shop not found.")
        return None

    def _too_many(self, retry_after: float) -> Response:
        response = _error(429, "Too Many Attempts.")
        response.headers["Retry-After"] = str(retry_after)
        return response

    async def list_shops(self, request: Request, body: Any) -> Response:
        return JSONResponse(list(self.shops.values()))

    async def catalog_variants(self, request: Request, body: Any) -> Response:
        bp, pp = request.path_params["bp"], request.path_params["pp"]
        variants = CATALOG.get((bp, pp))
        if variants is None:
            return _error(404, "Blueprint or print provider not found.")
        return JSONResponse({"id": pp, "title": f"Provider {pp}", "variants": variants})

    async def upload_image(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("file_name"), str):
            return _error(400, "Validation failed.", "file_name is required")
        if isinstance(body.get("contents"), str):
            try:
                data = base64.b64decode(body["contents"], validate=True)
            except (binascii.Error, ValueError):
                return _error(400, "Validation failed.", "contents must be base64")
        elif isinstance(body.get("url"), str):
            data = b""
        else:
            return _error(400, "Validation failed.", "either url or contents is required")
        width, height = _png_size(data)
        upload_id = secrets.token_hex(12)
        upload = {
            "id": upload_id,
            "file_name": body["file_name"],
            "height": height,
            "width": width,
            "size": len(data),
            "mime_type": "image/png",
            "preview_url": f"{request.base_url}uploads/{upload_id}.png",
            "upload_time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.uploads[upload_id], self.upload_bytes[upload_id] = upload, data
        return JSONResponse(upload)

    async def create_product(self, request: Request, body: Any) -> Response:
        reason = self._invalid_product(body)
        if reason:
            return _error(400, "Validation failed.", reason)
        variants = {v["id"]: v for v in CATALOG[(body["blueprint_id"], body["print_provider_id"])]}
        product_id = secrets.token_hex(12)
        enabled = [v for v in body["variants"] if v["is_enabled"]]
        by_colour: dict[str, list[int]] = {}
        for v in enabled:
            by_colour.setdefault(variants[v["id"]]["options"].get("color", ""), []).append(v["id"])
        positions = [p["position"] for area in body["print_areas"] for p in area["placeholders"]]
        images = [
            {
                "src": f"{request.base_url}mockups/{product_id}/{n}-{position}.jpg",
                "variant_ids": ids,
                "position": position,
                "is_default": n == 0 and position == positions[0],
            }
            for n, ids in enumerate(by_colour.values())
            for position in dict.fromkeys(positions)
        ]
        product = {
            "id": product_id,
            "title": body["title"],
            "description": body.get("description", ""),
            "tags": list(body.get("tags") or []),
            "options": [],
            "variants": [
                {
                    "id": v["id"],
                    "title": variants[v["id"]]["title"],
                    "price": v["price"],
                    "is_enabled": v["is_enabled"],
                    "options": variants[v["id"]]["options"],
                }
                for v in body["variants"]
            ],
            "images": images,
            "created_at": time.strftime("%Y-%m-%d %H:%M:%S+00:00"),
            "visible": False,
            "is_locked": False,
            "blueprint_id": body["blueprint_id"],
            "print_provider_id": body["print_provider_id"],
            "print_areas": body["print_areas"],
            "shop_id": request.path_params["shop"],
        }
        self.products[request.path_params["shop"]][product_id] = product
        return JSONResponse(product)

    def _invalid_product(self, body: Any) -> str | None:
        """Printify's checks of a product body: the reason it is refused, or None."""
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        for key, kind in (("title", str), ("blueprint_id", int), ("print_provider_id", int)):
            if not isinstance(body.get(key), kind) or isinstance(body.get(key), bool):
                return f"{key} is required"
        if not body["title"].strip():
            return "title is required"
        catalog = CATALOG.get((body["blueprint_id"], body["print_provider_id"]))
        if catalog is None:
            return "blueprint_id and print_provider_id do not name a catalog product"
        known = {v["id"]: v for v in catalog}
        variants = body.get("variants")
        if not isinstance(variants, list) or not variants:
            return "variants are required"
        for v in variants:
            if not isinstance(v, dict) or v.get("id") not in known:
                return f"variant {v.get('id') if isinstance(v, dict) else v!r} is not in the blueprint"
            price = v.get("price")
            if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
                return f"variant {v['id']}: price must be a positive integer (cents)"
            if not isinstance(v.get("is_enabled", True), bool):
                return f"variant {v['id']}: is_enabled must be a boolean"
            v.setdefault("is_enabled", True)
        areas = body.get("print_areas")
        if not isinstance(areas, list) or not areas:
            return "print_areas are required"
        seen: dict[int, int] = {}
        for area in areas:
            if not isinstance(area, dict) or not isinstance(area.get("variant_ids"), list):
                return "every print area needs variant_ids"
            for vid in area["variant_ids"]:
                seen[vid] = seen.get(vid, 0) + 1
            placeholders = area.get("placeholders")
            if not isinstance(placeholders, list) or not placeholders:
                return "every print area needs placeholders"
            for placeholder in placeholders:
                reason = _invalid_placeholder(
                    placeholder, [known[i] for i in area["variant_ids"] if i in known]
                )
                if reason:
                    return reason
                for image in placeholder["images"]:
                    if image.get("id") not in self.uploads:
                        return f"image {image.get('id')!r} is not an upload"
        for v in variants:
            if v["is_enabled"] and seen.get(v["id"], 0) != 1:
                return (
                    f"variant {v['id']} must be in exactly one print area (it is in {seen.get(v['id'], 0)})"
                )
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return "tags must be a list of strings"
        return None

    async def list_products(self, request: Request, body: Any) -> Response:
        try:
            page = max(1, int(request.query_params.get("page", 1)))
            limit = int(request.query_params.get("limit", 10))
        except ValueError:
            return _error(400, "Validation failed.", "page and limit must be integers")
        if not 1 <= limit <= 50:
            return _error(400, "Validation failed.", "limit may not be greater than 50")
        products = self.shop_products(request.path_params["shop"])
        last_page = max(1, -(-len(products) // limit))
        data = products[(page - 1) * limit : page * limit]
        path = str(request.url.replace(query=""))
        return JSONResponse(
            {
                "current_page": page,
                "data": data,
                "first_page_url": f"{path}?page=1",
                "from": (page - 1) * limit + 1 if data else None,
                "last_page": last_page,
                "last_page_url": f"{path}?page={last_page}",
                "next_page_url": f"{path}?page={page + 1}" if page < last_page else None,
                "path": path,
                "per_page": limit,
                "prev_page_url": f"{path}?page={page - 1}" if page > 1 else None,
                "to": (page - 1) * limit + len(data) if data else None,
                "total": len(products),
            }
        )

    def _product(self, request: Request) -> dict[str, Any] | None:
        return self.products[request.path_params["shop"]].get(request.path_params["product_id"])

    async def get_product(self, request: Request, body: Any) -> Response:
        product = self._product(request)
        return JSONResponse(product) if product else _error(404, "Product not found.")

    async def publish(self, request: Request, body: Any) -> Response:
        product = self._product(request)
        if product is None:
            return _error(404, "Product not found.")
        keys = ("title", "description", "images", "variants", "tags")
        if not isinstance(body, dict) or not all(isinstance(body.get(k), bool) for k in keys):
            return _error(400, "Validation failed.", f"{', '.join(keys)} are required booleans")
        limit, window = self.publish_limit
        now = time.monotonic()
        self._published_at = [t for t in self._published_at if t > now - window]
        if len(self._published_at) >= limit:
            return self._too_many(round(self._published_at[0] + window - now))
        self._published_at.append(now)
        product["is_locked"] = True
        if self.channel_url:  # the connected sales channel reports the listing at once
            handle = f"{self.channel_url}/{product['id']}"
            product["external"] = {"id": str(secrets.randbelow(10**12)), "handle": handle}
            product["is_locked"], product["visible"] = False, True
        return JSONResponse({})

    async def succeeded(self, request: Request, body: Any) -> Response:
        product = self._product(request)
        if product is None:
            return _error(404, "Product not found.")
        external = body.get("external") if isinstance(body, dict) else None
        if not isinstance(external, dict) or not isinstance(external.get("id"), str):
            return _error(400, "Validation failed.", "external.id is required")
        product["external"] = {"id": external["id"], "handle": external.get("handle")}
        product["is_locked"], product["visible"] = False, True
        return JSONResponse({})

    async def failed(self, request: Request, body: Any) -> Response:
        product = self._product(request)
        if product is None:
            return _error(404, "Product not found.")
        product["is_locked"] = False
        return JSONResponse({})

    async def unpublish(self, request: Request, body: Any) -> Response:
        product = self._product(request)
        if product is None:
            return _error(404, "Product not found.")
        product["visible"] = False
        product.pop("external", None)
        return JSONResponse({})


def _invalid_placeholder(placeholder: Any, variants: list[dict[str, Any]]) -> str | None:
    if not isinstance(placeholder, dict) or not isinstance(placeholder.get("images"), list):
        return "every placeholder needs a position and images"
    position = placeholder.get("position")
    for variant in variants:
        if position not in [p["position"] for p in variant["placeholders"]]:
            return f"variant {variant['id']} has no {position!r} placeholder"
    for image in placeholder["images"]:
        if not isinstance(image, dict):
            return "images must be objects"
        for key in ("x", "y", "scale", "angle"):
            if not isinstance(image.get(key), int | float) or isinstance(image.get(key), bool):
                return f"image {key} must be a number"
    return None


def _png_size(data: bytes) -> tuple[int | None, int | None]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None, None


@asynccontextmanager
async def serve_printify(fake: FakePrintify) -> AsyncIterator[str]:
    """Serve `fake` on a free loopback port for the block; yields its API base URL (…/v1)."""
    async with serve_app(fake.app) as url:
        yield f"{url}/v1"
