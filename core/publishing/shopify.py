"""The Shopify publisher: products listed on a Shopify store through the Admin GraphQL API.

Decisions, stated once:
- Endpoint: `POST {base}/admin/api/{ATELIER_SHOPIFY_API_VERSION}/graphql.json`, base
  `ATELIER_SHOPIFY_URL` (tests) else `https://<ATELIER_SHOPIFY_STORE>.myshopify.com`. The version
  is pinned; `productSet(synchronous: true)` needs 2024-10 or later, `productUpdate(product:)` too.
- Auth: `X-Shopify-Access-Token` with `ATELIER_SHOPIFY_ACCESS_TOKEN` (a custom app's Admin API
  token, never expires), or else a token from the client-credentials grant
  (`POST /admin/oauth/access_token`, `ATELIER_SHOPIFY_CLIENT_ID` / `_CLIENT_SECRET`), fetched
  on first use and again a minute before it expires, or once after a 401.
- Files: every print file and mockup goes through `stagedUploadsCreate` (resource IMAGE, POST),
  then a multipart POST of the returned parameters unchanged with the file last, to the target
  (a storage bucket: the access token is never sent there); the `resourceUrl` is the media's
  `originalSource` in `productSet`. Mockups come first (the first is the featured image), the
  print files after them, each with an alt text saying what it is. A file over Shopify's image
  limits (20 MB, 25 megapixels: a poster's 5400x7200 print file) is left out of the product's
  media and logged; Shopify does not print, so the product lacks nothing a buyer needs.
- Create: `productSet(synchronous: true)` with options Color and Size from the product's colours
  and sizes, one variant per pair at `price_cents / 100` as a decimal string, status DRAFT,
  productType from the catalog's shopify mapping, and tags `atelier` and `atelier:<product id>`.
  `find` searches `products(query: "tag:\"atelier:<id>\"")`, so a retried publication finds it.
  The handle is the title's slug and Atelier's id (`fern-valley-0a1b2c3d4e5f`); from API 2025-04
  on, `productSet` is sent with `identifier: {handle}` and upserts, so even a create retried
  before Shopify's search index shows the first attempt cannot make a second product.
- Publish: `productUpdate(product: {id, status: ACTIVE})` (`productChangeStatus` is deprecated).
  The URL is `onlineStoreUrl`, or `https://<store>.myshopify.com/products/<handle>` while the
  product is not on the Online Store channel (publishing to sales channels is the store's own
  setting). Unpublish sets status DRAFT (hidden from buyers, kept in the admin; ARCHIVED would
  hide it from the admin's default product list too).
- Errors: `userErrors` -> `BackendError(retryable=False)` naming the field and message; top-level
  `errors` (validation) -> non-retryable; `THROTTLED` -> wait
  `(requestedQueryCost - currentlyAvailable) / restoreRate` seconds and retry, at most
  `THROTTLE_ATTEMPTS` times; 401 -> with client credentials a new token once, else non-retryable
  naming ATELIER_SHOPIFY_ACCESS_TOKEN; 5xx and lost connections -> retryable (the run retries;
  a retried create first calls `find`).
- Secrets: tokens live in request headers only; no message, log record or repr carries them.
"""

from __future__ import annotations

import logging
import math
import re
import time
from html import escape
from typing import Any

import anyio
import httpx

from core.errors import BackendError
from core.publishing import Listed, ListedFile
from core.publishing.catalog import ProductType
from core.publishing.http_client import LazyClient
from core.publishing.models import Product
from core.settings import Settings

log = logging.getLogger("atelier.publishing.shopify")

THROTTLE_ATTEMPTS = 6
# Shopify's limits for a product image; a larger one would fail the upload or the media.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000
# The longest a THROTTLED answer is waited out: a full 2000-point bucket refills in 20 s at 100/s.
MAX_THROTTLE_WAIT_S = 30.0
# A client-credentials token is replaced this long before Shopify says it expires.
TOKEN_MARGIN_S = 60.0

SHOP_QUERY = "query AtelierHealth { shop { name } }"
FIND_QUERY = """query AtelierFind($query: String!) {
  products(first: 1, query: $query) { nodes { id handle status onlineStoreUrl } }
}"""
STAGED_UPLOADS = """mutation AtelierStage($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}"""
PRODUCT_SET = """mutation AtelierCreate($input: ProductSetInput!) {
  productSet(synchronous: true, input: $input) {
    product { id handle status onlineStoreUrl }
    userErrors { field message code }
  }
}"""
# From 2025-04, productSet upserts by `identifier`: a create retried after a lost answer updates
# the product it made instead of making a second one.
PRODUCT_UPSERT = """mutation AtelierCreate($input: ProductSetInput!, $identifier: ProductSetIdentifiers) {
  productSet(synchronous: true, input: $input, identifier: $identifier) {
    product { id handle status onlineStoreUrl }
    userErrors { field message code }
  }
}"""
UPSERT_SINCE = "2025-04"
PRODUCT_STATUS = """mutation AtelierStatus($product: ProductUpdateInput!) {
  productUpdate(product: $product) {
    product { id handle status onlineStoreUrl }
    userErrors { field message }
  }
}"""


def atelier_tag(product: Product) -> str:
    """The tag every product Atelier creates carries, by which `find` recognises it."""
    return f"atelier:{product.id}"


def product_handle(product: Product) -> str:
    """The product's URL handle: its title as a slug, then Atelier's id (so it is ours alone)."""
    slug = re.sub(r"[^a-z0-9]+", "-", product.title.lower()).strip("-")[:60].strip("-")
    suffix = product.id.removeprefix("prod-")
    return f"{slug}-{suffix}" if slug else f"atelier-{suffix}"


class ShopifyPublisher:
    """Lists products on a Shopify store (Admin GraphQL); see the module docstring."""

    name = "shopify"

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._store = settings.shopify_store
        self._base = (settings.shopify_url or f"https://{self._store}.myshopify.com").rstrip("/")
        self._endpoint = f"{self._base}/admin/api/{settings.shopify_api_version}/graphql.json"
        self._http = LazyClient(client)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"ShopifyPublisher(store={self._store!r}, api_version={self._settings.shopify_api_version!r})"

    @property
    def _client_credentials(self) -> bool:
        s = self._settings
        return s.shopify_access_token is None and bool(s.shopify_client_id and s.shopify_client_secret)

    def configured(self) -> bool:
        s = self._settings
        return bool(s.shopify_store) and (s.shopify_access_token is not None or self._client_credentials)

    async def health(self) -> dict[str, Any]:
        if not self.configured():
            return {
                "ok": False,
                "error": "not configured (ATELIER_SHOPIFY_STORE and a token or client credentials)",
            }
        try:
            data = await self._graphql(SHOP_QUERY, {}, throttle_attempts=1)
        except BackendError as error:
            return {"ok": False, "error": str(error)}
        except Exception as error:  # health never raises
            return {"ok": False, "error": f"Shopify health check failed: {type(error).__name__}"}
        return {"ok": True, "shop": data["shop"]["name"], "api_version": self._settings.shopify_api_version}

    async def find(self, product: Product) -> Listed | None:
        data = await self._graphql(FIND_QUERY, {"query": f'tag:"{atelier_tag(product)}"'})
        nodes = data["products"]["nodes"]
        return self._listed(nodes[0]) if nodes else None

    async def create(self, product: Product, product_type: ProductType, files: list[ListedFile]) -> Listed:
        ordered = [f for f in files if f.role == "mockup"] + [f for f in files if f.role != "mockup"]
        for file in [f for f in ordered if not _fits_media(f)]:
            log.info(
                "%s (%dx%d) is over Shopify's image limits; it is left out of the product's media",
                file.filename,
                file.width,
                file.height,
            )
        ordered = [f for f in ordered if _fits_media(f)]
        sources = await self._stage(ordered)
        colours = [_colour_name(c) for c in product.colours]
        price = f"{product.price_cents // 100}.{product.price_cents % 100:02d}"
        mapping = product_type.platforms.get("shopify")
        product_kind = (
            str(getattr(mapping, "product_type", "") or product_type.name) if mapping else product_type.name
        )
        handle = product_handle(product)
        data_input = {
            "title": product.title,
            "descriptionHtml": _paragraphs(product.description),
            "status": "DRAFT",
            "productType": product_kind,
            "tags": ["atelier", atelier_tag(product), product.type],
            "productOptions": [
                {"name": "Color", "position": 1, "values": [{"name": c} for c in colours]},
                {"name": "Size", "position": 2, "values": [{"name": s} for s in product.sizes]},
            ],
            "variants": [
                {
                    "optionValues": [{"optionName": "Color", "name": c}, {"optionName": "Size", "name": s}],
                    "price": price,
                }
                for c in colours
                for s in product.sizes
            ],
            "files": [
                {"originalSource": source, "contentType": "IMAGE", "alt": _alt(product, f)}
                for f, source in zip(ordered, sources, strict=True)
            ],
            "handle": handle,
        }
        if self._settings.shopify_api_version >= UPSERT_SINCE:
            variables = {"input": data_input, "identifier": {"handle": handle}}
            data = await self._graphql(PRODUCT_UPSERT, variables)
        else:
            data = await self._graphql(PRODUCT_SET, {"input": data_input})
        result = data["productSet"]
        _raise_user_errors("productSet", result.get("userErrors"))
        return self._listed(result["product"])

    async def publish(self, product: Product, listed: Listed) -> Listed:
        return await self._set_status(listed, "ACTIVE")

    async def unpublish(self, product: Product, listed: Listed) -> Listed:
        return await self._set_status(listed, "DRAFT")

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- inside --------------------------------------------------------------------------------

    async def _set_status(self, listed: Listed, status: str) -> Listed:
        data = await self._graphql(PRODUCT_STATUS, {"product": {"id": listed.external_id, "status": status}})
        result = data["productUpdate"]
        _raise_user_errors("productUpdate", result.get("userErrors"))
        return self._listed(result["product"])

    def _listed(self, node: dict[str, Any]) -> Listed:
        url = node.get("onlineStoreUrl") or f"https://{self._store}.myshopify.com/products/{node['handle']}"
        return Listed(external_id=node["id"], url=url, published=node.get("status") == "ACTIVE")

    async def _stage(self, files: list[ListedFile]) -> list[str]:
        """Upload each file to a staged target; their resource URLs, in order."""
        if not files:
            return []
        inputs = [
            {"resource": "IMAGE", "filename": f.filename, "mimeType": f.media_type, "httpMethod": "POST"}
            for f in files
        ]
        data = await self._graphql(STAGED_UPLOADS, {"input": inputs})
        result = data["stagedUploadsCreate"]
        _raise_user_errors("stagedUploadsCreate", result.get("userErrors"))
        targets = result["stagedTargets"]
        if len(targets) != len(files):
            raise BackendError(f"Shopify issued {len(targets)} staged upload targets for {len(files)} files")
        for file, target in zip(files, targets, strict=True):
            # Every parameter unchanged and in order, the file last: the bucket checks the policy.
            fields = [(p["name"], (None, p["value"])) for p in target["parameters"]]
            fields.append(("file", (file.filename, file.data, file.media_type)))
            try:
                response = await self._http.get().post(target["url"], files=fields)
            except httpx.HTTPError as error:
                raise BackendError(
                    f"Shopify staged upload of {file.filename} failed: {type(error).__name__}"
                ) from None
            if response.status_code >= 400:
                # The bucket answers storage XML: <Error><Code>EntityTooLarge</Code>...
                code = re.search(r"<Code>(\w{1,60})</Code>", response.text)
                reason = f", {code.group(1)}" if code else ""
                raise BackendError(
                    f"Shopify staged upload of {file.filename} refused (HTTP {response.status_code}{reason})",
                    retryable=response.status_code >= 500,
                )
        return [target["resourceUrl"] for target in targets]

    async def _graphql(
        self, query: str, variables: dict[str, Any], throttle_attempts: int = THROTTLE_ATTEMPTS
    ) -> dict[str, Any]:
        """`data` of one operation, THROTTLED waited out and a stale token replaced once."""
        refreshed = False
        throttled = 0
        while True:
            token = await self._access_token()
            try:
                response = await self._http.get().post(
                    self._endpoint,
                    json={"query": query, "variables": variables},
                    headers={"X-Shopify-Access-Token": token},
                )
            except httpx.HTTPError as error:
                raise BackendError(f"Shopify is unreachable ({type(error).__name__})") from None
            if response.status_code == 401:
                if self._client_credentials and not refreshed:
                    refreshed = True
                    self._token = None
                    continue
                raise BackendError(self._unauthorised(), retryable=False)
            if response.status_code == 403:
                raise BackendError(
                    "Shopify refused the request (HTTP 403): the app lacks an access scope "
                    "(it needs write_products and write_files)",
                    retryable=False,
                )
            if response.status_code >= 500 or response.status_code == 429:
                raise BackendError(f"Shopify answered HTTP {response.status_code}", retryable=True)
            if response.status_code >= 400:
                raise BackendError(f"Shopify answered HTTP {response.status_code}", retryable=False)
            try:
                body = response.json()
            except ValueError:
                raise BackendError("Shopify answered something that is not JSON", retryable=True) from None
            errors = body.get("errors")
            if errors:
                if any(_code(e) == "THROTTLED" for e in errors):
                    throttled += 1
                    if throttled >= throttle_attempts:
                        raise BackendError(
                            f"Shopify kept throttling after {throttled} attempts", retryable=True
                        )
                    wait = _throttle_wait(body)
                    log.info("Shopify throttled the request; waiting %.2f s as its throttleStatus says", wait)
                    await anyio.sleep(wait)
                    continue
                if any(_code(e) == "ACCESS_DENIED" for e in errors):
                    raise BackendError(
                        "Shopify denied access: the app needs the write_products and write_files scopes",
                        retryable=False,
                    )
                messages = "; ".join(_describe(e) for e in errors)[:500]
                raise BackendError(f"Shopify rejected the request: {messages}", retryable=False)
            if not isinstance(body.get("data"), dict):
                raise BackendError("Shopify answered without data", retryable=True)
            return body["data"]

    async def _access_token(self) -> str:
        s = self._settings
        if s.shopify_access_token is not None:
            return s.shopify_access_token.get_secret_value()
        if not self._client_credentials:
            raise BackendError(
                "Shopify is not configured: set ATELIER_SHOPIFY_ACCESS_TOKEN or "
                "ATELIER_SHOPIFY_CLIENT_ID and ATELIER_SHOPIFY_CLIENT_SECRET",
                retryable=False,
            )
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires - TOKEN_MARGIN_S:
                self._token, self._token_expires = await self._grant()
            return self._token

    async def _grant(self) -> tuple[str, float]:
        """A new token from the client-credentials grant, and when to consider it expired."""
        s = self._settings
        assert s.shopify_client_id is not None and s.shopify_client_secret is not None
        form = {
            "client_id": s.shopify_client_id,
            "client_secret": s.shopify_client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        try:
            response = await self._http.get().post(f"{self._base}/admin/oauth/access_token", data=form)
        except httpx.HTTPError as error:
            raise BackendError(f"Shopify is unreachable ({type(error).__name__})") from None
        if response.status_code >= 500:
            raise BackendError(
                f"Shopify's token endpoint answered HTTP {response.status_code}", retryable=True
            )
        if response.status_code != 200:
            raise BackendError(
                f"Shopify refused the client credentials (HTTP {response.status_code}): check "
                "ATELIER_SHOPIFY_CLIENT_ID and ATELIER_SHOPIFY_CLIENT_SECRET",
                retryable=False,
            )
        body = response.json()
        log.info("Shopify access token obtained (scope %s)", body.get("scope", "?"))
        return body["access_token"], time.monotonic() + float(body.get("expires_in") or 86399)

    def _unauthorised(self) -> str:
        if self._client_credentials:
            return (
                "Shopify refused a freshly granted access token (HTTP 401): check the app's install and "
                "ATELIER_SHOPIFY_CLIENT_ID / ATELIER_SHOPIFY_CLIENT_SECRET"
            )
        return "Shopify refused the access token (HTTP 401): check ATELIER_SHOPIFY_ACCESS_TOKEN and ATELIER_SHOPIFY_STORE"


def _raise_user_errors(operation: str, user_errors: list[dict[str, Any]] | None) -> None:
    if not user_errors:
        return
    described = "; ".join(
        f"{'.'.join(str(p) for p in (e.get('field') or [])) or '(no field)'}: {e.get('message', '')}"
        for e in user_errors
    )
    raise BackendError(f"Shopify {operation} refused the product: {described[:500]}", retryable=False)


def _code(error: Any) -> str | None:
    return (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None


def _describe(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)[:200]
    problems = (error.get("extensions") or {}).get("problems") or []
    paths = [
        ".".join(str(p) for p in problem.get("path", [])) for problem in problems if isinstance(problem, dict)
    ]
    return f"{error.get('message', '')}" + (f" (at {', '.join(paths)})" if paths else "")


def _throttle_wait(body: dict[str, Any]) -> float:
    """Seconds until the bucket holds this query's cost, as `extensions.cost` says."""
    cost = (body.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        needed = float(cost.get("requestedQueryCost") or 0) - float(status["currentlyAvailable"])
        wait = needed / float(status["restoreRate"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 1.0
    if not math.isfinite(wait):
        return 1.0
    return min(MAX_THROTTLE_WAIT_S, max(0.0, wait))


def _fits_media(file: ListedFile) -> bool:
    return len(file.data) <= MAX_IMAGE_BYTES and file.width * file.height <= MAX_IMAGE_PIXELS


def _colour_name(colour: str) -> str:
    return colour.title() if colour.islower() else colour


def _alt(product: Product, file: ListedFile) -> str:
    if file.role == "mockup":
        return f"{product.title} in {_colour_name(file.name)}"
    return f"{product.title}: print file ({file.name})"


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{escape(part.strip())}</p>" for part in text.split("\n\n") if part.strip())
