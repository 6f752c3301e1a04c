"""A fake Shopify store for tests: the Admin GraphQL endpoint, the client-credentials grant and
the staged-upload bucket, served over real HTTP on loopback.

`FakeShopify` holds the state (products, tokens, staged files, a request log) and exposes `.app`,
a Starlette app; `serve_fake()` runs it under uvicorn inside the caller's event loop.

Faithful to what ../shared/notes/external-apis.md and shopify.dev document, without being a
GraphQL server: an operation is recognised by its root field (`shop`, `products`,
`stagedUploadsCreate`, `productSet`, `productUpdate`) and its variables are checked as
Shopify's schema would check them (`tests.fakes.shopify_schema`).

- `POST /admin/api/{version}/graphql.json` needs `X-Shopify-Access-Token`; without a valid one it
  answers 401 `{"errors": "[API] Invalid API key or access token (unrecognized login or wrong
  password)"}`.
- `POST /admin/oauth/access_token` with `client_id`, `client_secret` and
  `grant_type=client_credentials` (form or JSON) answers `{access_token, scope, expires_in}`;
  tokens expire after `token_lifetime_s` (or at once with `expire_tokens()`).
- Variables of the wrong shape (an unknown input field, a bad enum, a missing required one) are
  HTTP 200 with top-level `errors` (`extensions.problems` naming the path), as Shopify answers
  validation errors. Business errors are `userErrors {field, message}` inside `data`.
- Every answer carries `extensions.cost` with a `throttleStatus`; `throttle_next(n)` answers the
  next n operations `THROTTLED` in `errors[].extensions.code`, like a drained bucket.
- `stagedUploadsCreate` issues targets whose `url` is this fake's bucket (`/staged-uploads/`);
  the bucket takes a multipart POST of every issued parameter unchanged, then the file part last,
  and refuses anything else (403, XML, as Google Cloud Storage does). `productSet` files must
  name a `resourceUrl` that was uploaded (an un-uploaded one is a userError, where Shopify
  would mark the media FAILED later). Shopify's image limits hold: the bucket refuses a file
  over 20 MB (400 EntityTooLarge) and an image over 25 megapixels is held with status FAILED.
- Knobs: `throttle_next`, `fail_next` (5xx), `user_error_next`, `expire_tokens`, `revoke_tokens`.
"""

from __future__ import annotations

import io
import itertools
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.shopify_schema import (
    PRODUCT_SET_FIELDS,
    STATUSES,
    GraphQLErrors,
    checked_files,
    checked_options,
    checked_variants,
    variants_problem,
)
from tests.http_served import serve_app

# Shopify's limits for a product image: 20 MB (the staged target's policy) and 25 megapixels.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000
# What each root field is charged, as the cost calculator roughly charges it.
COSTS = {"shop": 1, "products": 12, "stagedUploadsCreate": 10, "productSet": 10, "productUpdate": 10}
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass
class StagedFile:
    key: str
    filename: str
    mime_type: str
    data: bytes


@dataclass
class HeldProduct:
    """A product as the store holds it."""

    id: str
    handle: str
    title: str
    status: str
    description_html: str = ""
    product_type: str = ""
    tags: list[str] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)


class FakeShopify:
    def __init__(
        self,
        store: str = "atelier-test",
        access_tokens: tuple[str, ...] = (),
        client_id: str | None = None,
        client_secret: str | None = None,
        token_lifetime_s: float = 86399,
        scope: str = "write_products,read_products,write_files",
    ) -> None:
        self.store = store
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime_s = token_lifetime_s
        self.scope = scope
        # token -> expiry (monotonic seconds; inf for a static Admin API token)
        self.tokens: dict[str, float] = {token: float("inf") for token in access_tokens}
        self.tokens_issued: list[str] = []
        self.products: dict[str, HeldProduct] = {}
        self.staged_issued: dict[str, list[dict[str, str]]] = {}  # key -> parameters
        self.staged_files: dict[str, StagedFile] = {}  # resourceUrl -> file
        # (method, path, operation or None, HTTP status)
        self.requests: list[tuple[str, str, str | None, int]] = []
        self.base_url = ""  # set by the server (resource URLs are absolute)
        self._ids = itertools.count(8_000_000_001)
        self._throttle = 0
        self._fail: list[int] = []
        self._user_error: tuple[list[str], str] | None = None
        self.app = Starlette(
            routes=[
                Route("/admin/api/{version}/graphql.json", self._graphql, methods=["POST"]),
                Route("/admin/oauth/access_token", self._access_token, methods=["POST"]),
                Route("/staged-uploads/", self._staged_upload, methods=["POST"]),
            ]
        )

    # -- knobs ---------------------------------------------------------------------------------

    def throttle_next(self, count: int) -> None:
        """Answer the next `count` GraphQL operations THROTTLED."""
        self._throttle = count

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` GraphQL requests with HTTP `status`."""
        self._fail = [status] * count

    def user_error_next(self, field_path: list[str], message: str) -> None:
        """Answer the next productSet with this userError."""
        self._user_error = (field_path, message)

    def expire_tokens(self) -> None:
        """Every client-credentials token expires now (a static token never does)."""
        for token, expiry in self.tokens.items():
            if expiry != float("inf"):
                self.tokens[token] = 0.0

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    # -- inspection ----------------------------------------------------------------------------

    def operations(self) -> list[str | None]:
        """The GraphQL operations received, in order (token grants and uploads left out)."""
        return [op for _, path, op, _ in self.requests if path.endswith("graphql.json")]

    # -- routes --------------------------------------------------------------------------------

    async def _access_token(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
        else:
            body = dict(await request.form())
        ok = (
            self.client_id is not None
            and body.get("grant_type") == "client_credentials"
            and body.get("client_id") == self.client_id
            and secrets.compare_digest(str(body.get("client_secret", "")), self.client_secret or "")
        )
        if not ok:
            self.requests.append(("POST", request.url.path, None, 400))
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                status_code=400,
            )
        token = "shpat_" + secrets.token_hex(16)
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        self.tokens_issued.append(token)
        self.requests.append(("POST", request.url.path, None, 200))
        return JSONResponse(
            {"access_token": token, "scope": self.scope, "expires_in": int(self.token_lifetime_s)}
        )

    async def _staged_upload(self, request: Request) -> Response:
        form = await request.form(max_part_size=64 * 1024 * 1024)
        items = form.multi_items()
        fields = {name: value for name, value in items[:-1] if isinstance(value, str)}
        key = fields.get("key", "")
        issued = self.staged_issued.get(key)
        last_name, last = items[-1] if items else ("", None)
        problem = None
        if issued is None:
            problem = "no staged target was issued for this key"
        elif [(p["name"], p["value"]) for p in issued] != [(n, v) for n, v in items[:-1]]:
            problem = "the form fields are not the issued parameters, unchanged and in order"
        elif last_name != "file" or not isinstance(last, UploadFile):
            problem = "the file part is missing or not last"
        if problem is not None:
            self.requests.append(("POST", request.url.path, None, 403))
            body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>{problem}</Message></Error>"
            return Response(body, status_code=403, media_type="application/xml")
        assert isinstance(last, UploadFile)
        data = await last.read()
        if len(data) > MAX_IMAGE_BYTES:
            self.requests.append(("POST", request.url.path, None, 400))
            body = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>EntityTooLarge</Code><Message>Your proposed upload is larger than the maximum object size specified in your Policy Document.</Message></Error>"
            return Response(body, status_code=400, media_type="application/xml")
        url = f"{self.base_url}/staged-uploads/{key}"
        self.staged_files[url] = StagedFile(key, last.filename or "", fields.get("Content-Type", ""), data)
        self.requests.append(("POST", request.url.path, None, 201))
        body = f"<?xml version='1.0' encoding='UTF-8'?><PostResponse><Location>{url}</Location><Key>{key}</Key></PostResponse>"
        return Response(body, status_code=201, media_type="application/xml")

    async def _graphql(self, request: Request) -> Response:
        path = request.url.path
        token = request.headers.get("x-shopify-access-token", "")
        expiry = self.tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            self.requests.append(("POST", path, None, 401))
            return JSONResponse({"errors": INVALID_TOKEN}, status_code=401)
        try:
            payload = await request.json()
            query, variables = payload["query"], payload.get("variables") or {}
            assert isinstance(query, str) and isinstance(variables, dict)
        except Exception:
            self.requests.append(("POST", path, None, 400))
            return JSONResponse(
                {"errors": {"query": "Required parameter missing or invalid"}}, status_code=400
            )
        operation = _root_field(query)
        if self._fail:
            status = self._fail.pop(0)
            self.requests.append(("POST", path, operation, status))
            return JSONResponse({"errors": "Internal Server Error"}, status_code=status)
        self.requests.append(("POST", path, operation, 200))
        cost = COSTS.get(operation or "", 10)
        if self._throttle > 0:
            self._throttle -= 1
            error = {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
            # Short of the cost by a hair, so that a client waiting as told waits milliseconds.
            return JSONResponse({"errors": [error], "extensions": _cost(cost, None, cost - 0.5)})
        try:
            data = self._execute(operation, query, variables, request.path_params["version"])
        except GraphQLErrors as error:
            problems = [{"path": error.path, "explanation": error.message}]
            body = {
                "errors": [
                    {
                        "message": error.message,
                        "extensions": {"code": "INVALID_VARIABLE", "problems": problems},
                    }
                ]
            }
            return JSONResponse(body)
        return JSONResponse({"data": data, "extensions": _cost(cost, cost, 2000 - cost)})

    # -- operations ----------------------------------------------------------------------------

    def _execute(
        self, operation: str | None, query: str, variables: dict[str, Any], version: str
    ) -> dict[str, Any]:
        if operation == "shop":
            return {"shop": {"name": self.store.replace("-", " ").title()}}
        if operation == "products":
            return {"products": self._products(variables)}
        if operation == "stagedUploadsCreate":
            return {"stagedUploadsCreate": self._staged_uploads_create(variables)}
        if operation == "productSet":
            if not re.search(r"synchronous\s*:\s*true", query):
                raise GraphQLErrors("this fake answers productSet(synchronous: true) only")
            if "identifier" in variables and version < "2025-04":
                raise GraphQLErrors(f"Field 'productSet' doesn't accept argument 'identifier' in {version}")
            return {"productSet": self._product_set(variables)}
        if operation == "productUpdate":
            return {"productUpdate": self._product_update(variables)}
        raise GraphQLErrors(f"Field '{operation}' doesn't exist on type 'QueryRoot'")

    def _products(self, variables: dict[str, Any]) -> dict[str, Any]:
        query = variables.get("query") or ""
        if not isinstance(query, str):
            raise GraphQLErrors("Variable $query of type String was provided invalid value", ["query"])
        match = re.fullmatch(r"""\s*tag:(?:"([^"]*)"|'([^']*)'|(\S+))\s*""", query)
        if query and not match:
            raise GraphQLErrors("this fake searches products by one tag only", ["query"])
        tag = next((g for g in match.groups() if g is not None), "") if match else ""
        found = [p for p in self.products.values() if not tag or tag in p.tags]
        first = variables.get("first", 10)
        return {"nodes": [_product_view(p) for p in found[: int(first)]]}

    def _staged_uploads_create(self, variables: dict[str, Any]) -> dict[str, Any]:
        inputs = variables.get("input")
        if not isinstance(inputs, list):
            raise GraphQLErrors(
                "Variable $input of type [StagedUploadInput!]! was provided invalid value", ["input"]
            )
        targets = []
        for index, item in enumerate(inputs):
            path = ["input", index]
            if not isinstance(item, dict):
                raise GraphQLErrors("Expected value to be an object", path)
            for name in ("resource", "filename", "mimeType"):
                if not isinstance(item.get(name), str):
                    raise GraphQLErrors(f"Expected value to not be null for {name}", [*path, name])
            unknown = set(item) - {"resource", "filename", "mimeType", "httpMethod", "fileSize"}
            if unknown:
                raise GraphQLErrors("Field is not defined on StagedUploadInput", [*path, sorted(unknown)[0]])
            if item["resource"] not in ("IMAGE", "FILE", "VIDEO", "MODEL_3D", "PRODUCT_IMAGE"):
                raise GraphQLErrors(
                    f'Expected "{item["resource"]}" to be one of the StagedUploadTargetGenerateUploadResource values',
                    [*path, "resource"],
                )
            if item.get("httpMethod", "PUT") != "POST":
                raise GraphQLErrors("this fake issues POST targets only", [*path, "httpMethod"])
            key = f"tmp/{self.store}/products/{secrets.token_hex(8)}/{item['filename']}"
            parameters = [
                {"name": "Content-Type", "value": item["mimeType"]},
                {"name": "success_action_status", "value": "201"},
                {"name": "acl", "value": "private"},
                {"name": "key", "value": key},
                {"name": "x-goog-date", "value": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())},
                {
                    "name": "x-goog-credential",
                    "value": "merchant-assets@shopify-tiers.iam.gserviceaccount.com/auto/storage/goog4_request",
                },
                {"name": "x-goog-algorithm", "value": "GOOG4-RSA-SHA256"},
                {"name": "x-goog-signature", "value": secrets.token_hex(64)},
                {"name": "policy", "value": secrets.token_urlsafe(48)},
            ]
            self.staged_issued[key] = parameters
            url = f"{self.base_url}/staged-uploads/"
            targets.append({"url": url, "resourceUrl": f"{url}{key}", "parameters": parameters})
        return {"stagedTargets": targets, "userErrors": []}

    def _product_set(self, variables: dict[str, Any]) -> dict[str, Any]:
        data = variables.get("input")
        if not isinstance(data, dict):
            raise GraphQLErrors(
                "Variable $input of type ProductSetInput! was provided invalid value", ["input"]
            )
        for name in data:
            if name not in PRODUCT_SET_FIELDS:
                raise GraphQLErrors("Field is not defined on ProductSetInput", ["input", name])
        if "status" in data and data["status"] not in STATUSES:
            raise GraphQLErrors(
                f'Expected "{data["status"]}" to be one of: ACTIVE, ARCHIVED, DRAFT', ["input", "status"]
            )
        options = checked_options(data.get("productOptions", []))
        variants = checked_variants(data.get("variants", []))
        files = checked_files(data.get("files", []))
        tags = data.get("tags", [])
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise GraphQLErrors("Expected value to be a list of strings", ["input", "tags"])

        def user_error(field_path: list[Any], message: str) -> dict[str, Any]:
            return {
                "product": None,
                "productSetOperation": None,
                "userErrors": [{"field": field_path, "message": message, "code": "INVALID"}],
            }

        if self._user_error is not None:
            (field_path, message), self._user_error = self._user_error, None
            return user_error(field_path, message)
        # From 2025-04 an identifier upserts: by id it must exist; by handle it is created if absent.
        identifier = variables.get("identifier") or {}
        existing = None
        if "id" in identifier or "id" in data:
            existing = self.products.get(str(identifier.get("id") or data.get("id")))
            if existing is None:
                return user_error(["identifier", "id"], "Product does not exist")
        handle = identifier.get("handle") or data.get("handle")
        if existing is None and handle is not None:
            existing = next((p for p in self.products.values() if p.handle == handle), None)
        title = data.get("title", existing.title if existing else None)
        if not isinstance(title, str) or not title.strip():
            return user_error(["input", "title"], "Title can't be blank")
        if len(title) > 255:
            return user_error(["input", "title"], "Title is too long (maximum is 255 characters)")
        problem = variants_problem(options, variants)
        if problem is not None:
            return user_error(*problem)
        media = []
        for index, item in enumerate(files):
            source = item["originalSource"]
            if source.startswith(f"{self.base_url}/staged-uploads/") and source not in self.staged_files:
                return user_error(
                    ["input", "files", index, "originalSource"], "File at originalSource was never uploaded"
                )
            staged = self.staged_files.get(source)
            # Shopify accepts the input and fails the media while processing it, after the answer.
            status = "FAILED" if staged is not None and _pixels(staged.data) > MAX_IMAGE_PIXELS else "READY"
            media.append(
                {
                    "id": f"gid://shopify/MediaImage/{next(self._ids)}",
                    "alt": item.get("alt", ""),
                    "originalSource": item["originalSource"],
                    "mediaContentType": item["contentType"],
                    "status": status,
                }
            )
        product = existing or HeldProduct(
            id=f"gid://shopify/Product/{next(self._ids)}",
            handle=self._handle(handle or title),
            title=title,
            status="DRAFT",
        )
        product.title = title
        product.status = data.get("status", product.status)
        product.description_html = data.get("descriptionHtml", product.description_html)
        product.product_type = data.get("productType", product.product_type)
        product.tags = tags or product.tags
        product.options = options or product.options
        if variants:
            product.variants = [
                {
                    "id": f"gid://shopify/ProductVariant/{next(self._ids)}",
                    "price": str(Decimal(str(v["price"])).quantize(Decimal("0.01"))),
                    "selectedOptions": [
                        {"name": o["optionName"], "value": o["name"]} for o in v["optionValues"]
                    ],
                }
                for v in variants
            ]
        product.media = media or product.media
        self.products[product.id] = product
        return {"product": _product_view(product), "productSetOperation": None, "userErrors": []}

    def _product_update(self, variables: dict[str, Any]) -> dict[str, Any]:
        data = variables.get("product")
        if not isinstance(data, dict):
            raise GraphQLErrors(
                "Variable $product of type ProductUpdateInput was provided invalid value", ["product"]
            )
        unknown = set(data) - {
            "id",
            "status",
            "title",
            "descriptionHtml",
            "productType",
            "tags",
            "handle",
            "vendor",
        }
        if unknown:
            raise GraphQLErrors("Field is not defined on ProductUpdateInput", ["product", sorted(unknown)[0]])
        if "status" in data and data["status"] not in STATUSES:
            raise GraphQLErrors(
                f'Expected "{data["status"]}" to be one of: ACTIVE, ARCHIVED, DRAFT', ["product", "status"]
            )
        product = self.products.get(str(data.get("id", "")))
        if product is None:
            return {"product": None, "userErrors": [{"field": ["id"], "message": "Product does not exist"}]}
        product.status = data.get("status", product.status)
        return {"product": _product_view(product), "userErrors": []}

    def _handle(self, title: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "product"
        taken = {p.handle for p in self.products.values()}
        return next(
            h for h in itertools.chain([base], (f"{base}-{n}" for n in itertools.count(1))) if h not in taken
        )


def _root_field(query: str) -> str | None:
    """The first field selected by the operation: `mutation M($x: T) { productSet(` -> productSet."""
    body = query[query.find("{") + 1 :] if "{" in query else ""
    match = re.match(r"\s*(?:\w+\s*:\s*)?(\w+)", body)
    return match.group(1) if match else None


def _pixels(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:
        return 0


def _cost(requested: int, actual: int | None, available: float) -> dict[str, Any]:
    status = {"maximumAvailable": 2000.0, "currentlyAvailable": available, "restoreRate": 100.0}
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}}


def _product_view(product: HeldProduct) -> dict[str, Any]:
    # onlineStoreUrl is null unless the product is published to the Online Store channel, which
    # a status change alone does not do; the fake never publishes to channels.
    return {"id": product.id, "handle": product.handle, "status": product.status, "onlineStoreUrl": None}


# -- serving ----------------------------------------------------------------------------------


@asynccontextmanager
async def serve_fake(fake: FakeShopify) -> AsyncIterator[str]:
    """Serve `fake` under uvicorn on a free loopback port for the block; yields its base URL."""
    async with serve_app(fake.app) as url:
        fake.base_url = url  # resource URLs are absolute
        yield url
