"""The Shopify publisher against the fake Shopify store (tests/fakes/shopify.py) served over HTTP."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from core.errors import BackendError
from core.publishing import ListedFile
from core.publishing.catalog import DEFAULT_CATALOG, ProductType
from core.publishing.models import Product, ProductFile, new_product_id
from core.publishing.shopify import ShopifyPublisher
from core.settings import Settings
from tests.fakes.shopify import FakeShopify, serve_fake

pytestmark = pytest.mark.anyio

STATIC_TOKEN = "shpat_STATICsecretTOKEN0123456789abcd"
CLIENT_SECRET = "shpss_CLIENTsecretVALUE0123456789xyz"
CLIENT_ID = "atelier-test-client"


def tshirt() -> ProductType:
    return ProductType(key="tshirt", **DEFAULT_CATALOG["tshirt"])


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_product(
    colours: tuple[str, ...] = ("white", "heather grey"), sizes: tuple[str, ...] = ("S", "M", "L")
) -> Product:
    now = time.time()
    return Product(
        id=new_product_id(),
        type="tshirt",
        title="Fern Valley",
        description="A watercolour fern.\n\nPrinted on demand.",
        price_cents=2499,
        design={"run_id": "run-1", "filename": "design.png", "sha256": ""},
        colours=list(colours),
        sizes=list(sizes),
        files=[ProductFile("print", "front", "run-1", "front.png", 48, 64, 300)],
        status="draft",
        run_id="run-1",
        created_at=now,
        updated_at=now,
    )


def listed_files(product: Product) -> list[ListedFile]:
    files = [ListedFile("print", "front", "front.png", "image/png", png((10, 120, 40)), 48, 64, 300)]
    for index, colour in enumerate(product.colours):
        name = f"mockup-{colour.replace(' ', '-')}.png"
        files.append(ListedFile("mockup", colour, name, "image/png", png((200, 20 * index, 30)), 48, 64))
    return files


@asynccontextmanager
async def shop(fake: FakeShopify, **settings: object) -> AsyncIterator[tuple[FakeShopify, ShopifyPublisher]]:
    async with serve_fake(fake) as url:
        values = {
            "shopify_store": fake.store,
            "shopify_url": url,
            "shopify_api_version": "2026-10",
            **settings,
        }
        publisher = ShopifyPublisher(Settings.from_env({}, **values))
        try:
            yield fake, publisher
        finally:
            await publisher.aclose()


Shop = AbstractAsyncContextManager[tuple[FakeShopify, ShopifyPublisher]]


def static_shop(**knobs: Any) -> Shop:
    return shop(FakeShopify(access_tokens=(STATIC_TOKEN,), **knobs), shopify_access_token=STATIC_TOKEN)


def credentials_shop(token_lifetime_s: float = 86399) -> Shop:
    fake = FakeShopify(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_lifetime_s=token_lifetime_s)
    return shop(fake, shopify_client_id=CLIENT_ID, shopify_client_secret=CLIENT_SECRET)


async def test_create_holds_a_draft_with_options_variants_and_staged_media() -> None:
    async with static_shop() as (fake, publisher):
        product = make_product()
        files = listed_files(product)
        listed = await publisher.create(product, tshirt(), files)

        held = fake.products[listed.external_id]
        assert held.status == "DRAFT" and not listed.published
        assert held.title == "Fern Valley"
        assert held.product_type == "T-Shirt"
        assert f"atelier:{product.id}" in held.tags
        assert held.description_html == "<p>A watercolour fern.</p><p>Printed on demand.</p>"
        assert held.options == [
            {"name": "Color", "position": 1, "values": [{"name": "White"}, {"name": "Heather Grey"}]},
            {"name": "Size", "position": 2, "values": [{"name": "S"}, {"name": "M"}, {"name": "L"}]},
        ]
        assert len(held.variants) == 6 and {v["price"] for v in held.variants} == {"24.99"}
        assert {"name": "Color", "value": "Heather Grey"} in held.variants[4]["selectedOptions"]
        # Every media is a staged upload the bucket received, mockups first, bytes unchanged.
        sources = [m["originalSource"] for m in held.media]
        assert all(source in fake.staged_files for source in sources)
        received = [fake.staged_files[source] for source in sources]
        assert [r.filename for r in received] == ["mockup-white.png", "mockup-heather-grey.png", "front.png"]
        assert [r.data for r in received] == [files[1].data, files[2].data, files[0].data]
        assert held.media[0]["alt"] == "Fern Valley in White"
        handle = f"fern-valley-{product.id.removeprefix('prod-')}"
        assert held.handle == handle
        assert listed.url == f"https://{fake.store}.myshopify.com/products/{handle}"


async def test_staged_bucket_refuses_a_form_with_the_file_not_last() -> None:
    # The fake's bucket is strict the way the real one is; this is what the publisher must get right.
    async with static_shop() as (fake, _):
        async with httpx.AsyncClient() as client:
            stage = await client.post(
                f"{fake.base_url}/admin/api/2025-01/graphql.json",
                headers={"X-Shopify-Access-Token": STATIC_TOKEN},
                json={
                    "query": "mutation S($input: [StagedUploadInput!]!) { stagedUploadsCreate(input: $input) { stagedTargets { url resourceUrl parameters { name value } } } }",
                    "variables": {
                        "input": [
                            {
                                "resource": "IMAGE",
                                "filename": "a.png",
                                "mimeType": "image/png",
                                "httpMethod": "POST",
                            }
                        ]
                    },
                },
            )
            target = stage.json()["data"]["stagedUploadsCreate"]["stagedTargets"][0]
            fields = [("file", ("a.png", png((1, 2, 3)), "image/png"))]
            fields += [(p["name"], (None, p["value"])) for p in target["parameters"]]
            refused = await client.post(target["url"], files=fields)
        assert refused.status_code == 403 and "AccessDenied" in refused.text
        assert fake.staged_files == {}


async def test_a_print_file_over_shopifys_image_limits_is_left_out_of_the_media() -> None:
    # A poster's print area (5400x7200, 39 megapixels) is over Shopify's 25-megapixel limit.
    async with static_shop() as (fake, publisher):
        product = make_product(colours=("white",), sizes=("18x24",))
        product.type = "poster"
        big = png((250, 250, 250), (5400, 7200))
        files = [
            ListedFile("print", "front", "front.png", "image/png", big, 5400, 7200, 300),
            ListedFile("mockup", "white", "mockup-white.png", "image/png", png((9, 9, 9)), 48, 64),
        ]
        poster = ProductType(key="poster", **DEFAULT_CATALOG["poster"])
        listed = await publisher.create(product, poster, files)
        held = fake.products[listed.external_id]
        assert held.product_type == "Poster"
        assert [m["alt"] for m in held.media] == ["Fern Valley in White"]
        assert all(m["status"] == "READY" for m in held.media)
        assert [f.filename for f in fake.staged_files.values()] == ["mockup-white.png"]


async def test_the_fake_answers_a_malformed_input_with_top_level_errors() -> None:
    async with static_shop() as (fake, _):
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{fake.base_url}/admin/api/2025-01/graphql.json",
                headers={"X-Shopify-Access-Token": STATIC_TOKEN},
                json={
                    "query": "mutation C($input: ProductSetInput!) { productSet(synchronous: true, input: $input) { product { id } } }",
                    "variables": {"input": {"title": "T", "status": "LIVE"}},
                },
            )
        assert answer.status_code == 200
        error = answer.json()["errors"][0]
        assert "ACTIVE, ARCHIVED, DRAFT" in error["message"]
        assert error["extensions"]["problems"][0]["path"] == ["input", "status"]
        assert fake.products == {}


async def test_publish_and_unpublish_change_the_status() -> None:
    async with static_shop() as (fake, publisher):
        product = make_product()
        listed = await publisher.create(product, tshirt(), listed_files(product))
        published = await publisher.publish(product, listed)
        held = fake.products[listed.external_id]
        assert held.status == "ACTIVE"
        assert (
            published.published
            and published.url == f"https://{fake.store}.myshopify.com/products/{held.handle}"
        )
        unpublished = await publisher.unpublish(product, published)
        assert fake.products[listed.external_id].status == "DRAFT" and not unpublished.published
        assert fake.operations() == ["stagedUploadsCreate", "productSet", "productUpdate", "productUpdate"]


async def test_find_returns_the_product_create_made_and_nothing_for_another() -> None:
    async with static_shop() as (_, publisher):
        product = make_product()
        assert await publisher.find(product) is None
        listed = await publisher.create(product, tshirt(), listed_files(product))
        await publisher.create(make_product(), tshirt(), [])  # another product of ours
        found = await publisher.find(product)
        assert found is not None and found.external_id == listed.external_id
        assert await publisher.find(make_product()) is None


async def test_a_create_retried_after_a_lost_answer_updates_the_same_product() -> None:
    # From API 2025-04 productSet upserts by handle: no second product even before search shows the first.
    async with static_shop() as (fake, publisher):
        product = make_product()
        first = await publisher.create(product, tshirt(), listed_files(product))
        second = await publisher.create(product, tshirt(), listed_files(product))
        assert second.external_id == first.external_id
        assert len(fake.products) == 1


async def test_an_older_pinned_version_creates_without_the_upsert_identifier() -> None:
    fake = FakeShopify(access_tokens=(STATIC_TOKEN,))  # refuses `identifier` before 2025-04
    async with shop(fake, shopify_access_token=STATIC_TOKEN, shopify_api_version="2025-01") as (_, publisher):
        product = make_product()
        listed = await publisher.create(product, tshirt(), listed_files(product))
        assert fake.products[listed.external_id].handle.endswith(product.id.removeprefix("prod-"))
        assert any(path == "/admin/api/2025-01/graphql.json" for _, path, *_ in fake.requests)


async def test_throttled_requests_are_waited_out_then_succeed() -> None:
    async with static_shop() as (fake, publisher):
        fake.throttle_next(3)
        product = make_product()
        listed = await publisher.create(product, tshirt(), listed_files(product))
        assert listed.external_id in fake.products
        # Three throttled stagedUploadsCreate, then one each: no retry storm.
        assert fake.operations() == ["stagedUploadsCreate"] * 4 + ["productSet"]


async def test_throttling_without_end_gives_up_retryable_after_bounded_attempts() -> None:
    async with static_shop() as (fake, publisher):
        fake.throttle_next(100)
        with pytest.raises(BackendError) as raised:
            await publisher.find(make_product())
        assert raised.value.retryable and "throttl" in str(raised.value)
        assert len(fake.operations()) <= 6


async def test_user_errors_become_a_non_retryable_error_naming_the_field() -> None:
    async with static_shop() as (fake, publisher):
        product = make_product()
        fake.user_error_next(["input", "title"], "Title is too long (maximum is 255 characters)")
        with pytest.raises(BackendError) as raised:
            await publisher.create(product, tshirt(), listed_files(product))
        assert not raised.value.retryable
        assert "input.title" in str(raised.value) and "Title is too long" in str(raised.value)
        assert fake.products == {}


async def test_a_blank_title_is_refused_by_the_store_with_the_field_named() -> None:
    async with static_shop() as (_, publisher):
        product = make_product()
        product.title = "  "
        with pytest.raises(BackendError, match=r"input\.title: Title can't be blank") as raised:
            await publisher.create(product, tshirt(), [])
        assert not raised.value.retryable


async def test_a_wrong_static_token_is_a_clear_error_after_one_request() -> None:
    wrong = FakeShopify(access_tokens=("shpat_other",))
    async with shop(wrong, shopify_access_token=STATIC_TOKEN) as (fake, publisher):
        with pytest.raises(BackendError) as raised:
            await publisher.find(make_product())
        assert not raised.value.retryable
        assert "ATELIER_SHOPIFY_ACCESS_TOKEN" in str(raised.value)
        assert len(fake.requests) == 1 and fake.requests[0][3] == 401
        health = await publisher.health()
        assert health["ok"] is False and "ATELIER_SHOPIFY_ACCESS_TOKEN" in health["error"]


async def test_client_credentials_token_is_fetched_once_and_replaced_after_expiry() -> None:
    async with credentials_shop() as (fake, publisher):
        assert publisher.configured()
        assert (await publisher.health())["ok"] is True
        product = make_product()
        await publisher.create(product, tshirt(), listed_files(product))
        assert len(fake.tokens_issued) == 1
        fake.expire_tokens()  # the store says the token is no longer valid: one 401, a new grant
        assert await publisher.find(product) is not None
        assert len(fake.tokens_issued) == 2
        statuses = [status for _, path, _, status in fake.requests if path.endswith("graphql.json")]
        assert statuses.count(401) == 1


async def test_client_credentials_token_near_expiry_is_replaced_before_use() -> None:
    # A token with less than a minute left is replaced before it is sent, so no 401 is ever seen.
    async with credentials_shop(token_lifetime_s=30) as (fake, publisher):
        await publisher.health()
        await publisher.health()
        assert len(fake.tokens_issued) == 2
        assert all(status == 200 for *_, status in fake.requests)


async def test_wrong_client_secret_is_a_clear_non_retryable_error() -> None:
    fake = FakeShopify(client_id=CLIENT_ID, client_secret="shpss_the_real_one")
    async with shop(fake, shopify_client_id=CLIENT_ID, shopify_client_secret=CLIENT_SECRET) as (_, publisher):
        with pytest.raises(BackendError, match="ATELIER_SHOPIFY_CLIENT_SECRET") as raised:
            await publisher.find(make_product())
        assert not raised.value.retryable


async def test_server_errors_are_retryable_and_the_next_attempt_works() -> None:
    async with static_shop() as (fake, publisher):
        fake.fail_next(1, status=503)
        with pytest.raises(BackendError, match="503") as raised:
            await publisher.find(make_product())
        assert raised.value.retryable
        assert await publisher.find(make_product()) is None


async def test_an_unreachable_store_is_retryable_and_health_says_so() -> None:
    async with static_shop() as (fake, publisher):
        url = fake.base_url
    publisher = ShopifyPublisher(
        Settings.from_env({}, shopify_store="gone", shopify_url=url, shopify_access_token=STATIC_TOKEN)
    )
    try:
        with pytest.raises(BackendError) as raised:
            await publisher.find(make_product())
        assert raised.value.retryable
        assert (await publisher.health())["ok"] is False
    finally:
        await publisher.aclose()


async def test_not_configured_without_store_or_credentials() -> None:
    assert not ShopifyPublisher(Settings.from_env({})).configured()
    assert not ShopifyPublisher(Settings.from_env({}, shopify_store="s", shopify_client_id="x")).configured()
    unconfigured = ShopifyPublisher(Settings.from_env({}))
    assert (await unconfigured.health())["ok"] is False
    await unconfigured.aclose()


async def test_secrets_never_appear_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with credentials_shop() as (fake, publisher):
        product = make_product()
        fake.throttle_next(1)
        listed = await publisher.create(product, tshirt(), listed_files(product))
        texts += [repr(publisher), repr(listed), str(await publisher.health())]
        issued = fake.tokens_issued[0]
        fake.revoke_tokens()
        fake.client_secret = "shpss_rotated"  # the refresh after the 401 is refused too
        with pytest.raises(BackendError) as raised:
            await publisher.publish(product, listed)
        texts.append(str(raised.value))
    async with shop(FakeShopify(access_tokens=("x",)), shopify_access_token=STATIC_TOKEN) as (_, publisher):
        with pytest.raises(BackendError) as raised:
            await publisher.find(product)
        texts += [str(raised.value), repr(publisher), str(await publisher.health())]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    joined = "\n".join(texts)
    assert joined  # something was said
    for secret in (STATIC_TOKEN, CLIENT_SECRET, issued):
        assert secret not in joined
