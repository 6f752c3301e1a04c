"""The Printify publisher: products on a Printify shop through its REST API v1.

How Atelier's product maps onto Printify's (../shared/notes/external-apis.md):
- The product type's `platforms.printify` mapping names the blueprint and print provider; the
  variant ids are looked up at runtime from the catalog (`.../variants.json`) by matching the
  product's colours and sizes against each variant's `options` (case, spaces and punctuation
  ignored, so "heather grey" finds "Heather Grey" and "18x24" finds `18″ x 24″`). Colours or
  sizes the provider lacks are left out (logged); none at all is an error naming them.
- A print area of the catalog is a Printify placeholder `position` of the same name, unless the
  mapping's `positions` renames it (`{"wrap": "front"}`). The print files are uploaded as
  base64 and placed centred at scale 1 (they are made at the placeholder's size). Atelier's
  mockups are not uploaded: Printify renders its own from the print files (`images`).
- One print area holds every enabled variant (Printify wants each in exactly one), with one
  placeholder per position; every variant's price is the product's, in integer cents.
- The product carries the tag `atelier:<product id>`, which `find` pages through the shop for:
  that is how a retried publication finds the product instead of making a second one.
- `publish` posts `publish.json` (everything published, shipping template included); the
  public URL is `external.handle` when the shop's sales channel has reported it, else the
  product's page in Printify.
Limits: a token bucket keeps under 600 requests a minute; a 429 is waited out as `Retry-After`
says (a bounded number of times, none longer than `max_wait_s`); at most 200 publishes per 30
minutes, the 201st refused at once as retryable, saying when. A 401/403 is not retryable and
names ATELIER_PRINTIFY_TOKEN; a 5xx or a lost connection is retryable. The token goes into the
Authorization header only, never into a log line, an error or a repr.
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from core.errors import BackendError
from core.publishing import Listed, ListedFile
from core.publishing.catalog import ProductType
from core.publishing.http_client import LazyClient
from core.publishing.models import Product
from core.publishing.ratelimit import ActionWindow, TokenBucket
from core.settings import Settings

log = logging.getLogger("atelier.printify")

USER_AGENT = "Atelier (print-on-demand publisher)"
TAG_PREFIX = "atelier:"
PRODUCT_PAGE = "https://printify.com/app/product-details/{id}"  # assumed: Printify's own product page
PAGE_SIZE = 50  # Printify's largest page of products
MAX_PAGES = 200


def _key(text: object) -> str:
    """A colour or size as compared: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(text).lower())


class PrintifyPublisher:
    """Products on one Printify shop; `client` is an httpx.AsyncClient (one is made at first use when None)."""

    name = "printify"

    def __init__(
        self,
        *,
        url: str,
        token: SecretStr | None,
        shop_id: str | None,
        client: httpx.AsyncClient | None = None,
        rate: tuple[int, float] = (600, 60.0),
        publish_limit: tuple[int, float] = (200, 1800.0),
        max_wait_s: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.shop_id = shop_id
        self._http = LazyClient(client)
        self._bucket = TokenBucket(*rate)
        self._publishes = ActionWindow(*publish_limit)
        # A blueprint's variants per provider: read once per process (they change rarely, and a
        # product of the same type must not cost the account another catalog request).
        self._variants: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.max_wait_s = max_wait_s
        self.max_retries = max_retries

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> PrintifyPublisher:
        return cls(
            url=settings.printify_url,
            token=settings.printify_token,
            shop_id=settings.printify_shop_id,
            **options,
        )

    def __repr__(self) -> str:
        return f"PrintifyPublisher(url={self.url!r}, shop_id={self.shop_id!r})"

    def configured(self) -> bool:
        return bool(self._token and self._token.get_secret_value() and self.shop_id)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the port ---------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        if not self.configured():
            return {"ok": False, "configured": False, "error": _NOT_CONFIGURED}
        try:
            shops = await self._call("GET", "/shops.json", retries=0, timeout=10.0)
        except BackendError as exc:
            return {"ok": False, "configured": True, "error": str(exc)}
        except Exception as exc:  # health never raises
            return {"ok": False, "configured": True, "error": self._scrub(f"{type(exc).__name__}: {exc}")}
        ids = (
            {str(shop.get("id")) for shop in shops if isinstance(shop, dict)}
            if isinstance(shops, list)
            else set()
        )
        if self.shop_id not in ids:
            return {"ok": False, "configured": True, "error": f"the token has no shop {self.shop_id}"}
        return {"ok": True, "configured": True, "shop_id": self.shop_id}

    async def find(self, product: Product) -> Listed | None:
        tag = TAG_PREFIX + product.id
        for page in range(1, MAX_PAGES + 1):
            answer = await self._call(
                "GET", f"/shops/{self._shop()}/products.json", params={"page": page, "limit": PAGE_SIZE}
            )
            for held in answer.get("data") or []:
                if tag in (held.get("tags") or []):
                    return self._listed(held)
            if page >= int(answer.get("last_page") or 1):
                return None
        return None

    async def create(self, product: Product, product_type: ProductType, files: list[ListedFile]) -> Listed:
        mapping = product_type.platforms.get("printify")
        extra = (mapping.model_extra or {}) if mapping else {}
        blueprint, provider = extra.get("blueprint_id"), extra.get("print_provider_id")
        if not isinstance(blueprint, int) or not isinstance(provider, int):
            raise BackendError(
                f"product type {product_type.key!r} has no Printify blueprint_id and print_provider_id "
                "in its catalog mapping (platforms.printify)",
                retryable=False,
            )
        positions: dict[str, str] = dict(extra.get("positions") or {})
        shop = self._shop()
        if (blueprint, provider) not in self._variants:
            catalog = await self._call(
                "GET", f"/catalog/blueprints/{blueprint}/print_providers/{provider}/variants.json"
            )
            self._variants[(blueprint, provider)] = list(catalog.get("variants") or [])
        variants = self._matching_variants(product, product_type, self._variants[(blueprint, provider)])
        prints = [f for f in files if f.role == "print"]
        if not prints:
            raise BackendError(f"product {product.id} has no print file to send to Printify", retryable=False)
        available = set.intersection(*({p["position"] for p in v.get("placeholders", [])} for v in variants))
        placeholders = []
        for file in prints:
            position = positions.get(file.name, file.name)
            if position not in available:
                raise BackendError(
                    f"print area {file.name!r} is not a Printify position of blueprint {blueprint} "
                    f"(it has {', '.join(sorted(available))}; map it in platforms.printify.positions)",
                    retryable=False,
                )
            upload = await self._call(
                "POST",
                "/uploads/images.json",
                json={"file_name": file.filename, "contents": base64.b64encode(file.data).decode("ascii")},
            )
            image = {"id": upload["id"], "x": 0.5, "y": 0.5, "scale": 1, "angle": 0}
            placeholders.append({"position": position, "images": [image]})
        ids = [v["id"] for v in variants]
        body = {
            "title": product.title,
            "description": product.description,
            "blueprint_id": blueprint,
            "print_provider_id": provider,
            "variants": [{"id": i, "price": int(product.price_cents), "is_enabled": True} for i in ids],
            "print_areas": [{"variant_ids": ids, "placeholders": placeholders}],
            "tags": [TAG_PREFIX + product.id, product_type.key],
        }
        made = await self._call("POST", f"/shops/{shop}/products.json", json=body)
        log.info("printify product %s created for %s (%d variants)", made.get("id"), product.id, len(ids))
        return self._listed(made)

    async def publish(self, product: Product, listed: Listed) -> Listed:
        wait = self._publishes.wait_s()
        if wait > 0:
            raise BackendError(
                f"Printify allows {self._publishes.limit} publishes per {self._publishes.per_s / 60:g} minutes; "
                f"the next one is possible in {wait:.0f} s",
                retryable=True,
            )
        path = f"/shops/{self._shop()}/products/{listed.external_id}"
        flags = ("title", "description", "images", "variants", "tags", "keyFeatures", "shipping_template")
        await self._call("POST", path + "/publish.json", json=dict.fromkeys(flags, True))
        self._publishes.record()
        held = await self._call("GET", path + ".json")
        return Listed(external_id=listed.external_id, url=self._url(held), published=True)

    async def unpublish(self, product: Product, listed: Listed) -> Listed:
        path = f"/shops/{self._shop()}/products/{listed.external_id}"
        await self._call("POST", path + "/unpublish.json", json={})
        return Listed(external_id=listed.external_id, url=PRODUCT_PAGE.format(id=listed.external_id))

    # --- helpers ------------------------------------------------------------------------------
    def _shop(self) -> str:
        if not self.configured():
            raise BackendError(_NOT_CONFIGURED, retryable=False)
        return str(self.shop_id)

    def _matching_variants(
        self, product: Product, product_type: ProductType, variants: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        colours = {_key(c) for c in product.colours or product_type.colours}
        sizes = {_key(s) for s in product.sizes or product_type.sizes}
        chosen = []
        for variant in variants:
            options = variant.get("options") or {}
            colour_ok = "color" not in options or _key(options["color"]) in colours
            if colour_ok and _key(options.get("size", "")) in sizes:
                chosen.append(variant)
        found_colours = {_key(v["options"]["color"]) for v in chosen if "color" in v.get("options", {})}
        found_sizes = {_key(v["options"].get("size", "")) for v in chosen}
        if not chosen:
            raise BackendError(
                f"Printify's catalog has no variant of {product_type.key!r} in colours "
                f"{', '.join(product.colours or product_type.colours)} and sizes "
                f"{', '.join(product.sizes or product_type.sizes)}",
                retryable=False,
            )
        missing = [c for c in product.colours if _key(c) not in found_colours and found_colours]
        missing += [s for s in product.sizes if _key(s) not in found_sizes]
        if missing:
            log.warning("printify has no %s for %s: left out", ", ".join(missing), product.id)
        return chosen

    def _listed(self, held: dict[str, Any]) -> Listed:
        published = bool(held.get("visible")) or bool((held.get("external") or {}).get("id"))
        return Listed(external_id=str(held["id"]), url=self._url(held), published=published)

    def _url(self, held: dict[str, Any]) -> str:
        handle = (held.get("external") or {}).get("handle")
        if isinstance(handle, str) and handle.startswith(("https://", "http://")):
            return handle
        return PRODUCT_PAGE.format(id=held["id"])

    def _scrub(self, text: str) -> str:
        secret = self._token.get_secret_value() if self._token else ""
        return text.replace(secret, "***") if secret else text

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call, paced by the bucket; a 429 waited out (bounded); errors as BackendError."""
        if not self.configured():
            raise BackendError(_NOT_CONFIGURED, retryable=False)
        assert self._token is not None
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}", "User-Agent": USER_AGENT}
        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            await self._bucket.acquire()
            try:
                response = await self._http.get().request(
                    method,
                    self.url + path,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.HTTPError as exc:
                raise BackendError(
                    self._scrub(f"Printify did not answer {method} {path}: {type(exc).__name__}"),
                    retryable=True,
                ) from None
            if response.status_code != 429:
                break
            wait = _retry_after(response)
            if attempt == retries or wait > self.max_wait_s:
                raise BackendError(
                    f"Printify is rate limiting {method} {path}; try again in {wait:.0f} s", retryable=True
                )
            log.info("printify rate limit on %s %s: waiting %.1f s", method, path, wait)
            await anyio.sleep(wait)
        if response.status_code in (401, 403):
            raise BackendError(
                f"Printify refused the token ({response.status_code}): check ATELIER_PRINTIFY_TOKEN "
                "(a personal access token with the shops, catalog, products and uploads scopes)",
                retryable=False,
            )
        if response.status_code >= 400:
            raise BackendError(
                self._scrub(
                    f"Printify answered {response.status_code} to {method} {path}: {_reason(response)}"
                ),
                retryable=response.status_code >= 500 or response.status_code == 408,
            )
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                f"Printify answered {method} {path} with something not JSON", retryable=True
            ) from None


_NOT_CONFIGURED = "Printify is not configured: set ATELIER_PRINTIFY_TOKEN and ATELIER_PRINTIFY_SHOP_ID"


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _reason(response: httpx.Response) -> str:
    """Printify's own words for an error (`errors.reason`, else `message`), kept short."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        errors = body.get("errors")
        reason = errors.get("reason") if isinstance(errors, dict) else None
        return str(reason or body.get("message") or body)[:300]
    return str(body)[:300]
