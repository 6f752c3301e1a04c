"""The Printify publisher against the fake Printify v1 served on loopback (real HTTP, real limits)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from core.errors import BackendError
from core.publishing import Listed, ListedFile
from core.publishing.catalog import load_catalog
from core.publishing.models import Product, new_product_id
from core.publishing.printify import PrintifyPublisher
from core.settings import Settings
from tests.fakes.printify import CATALOG, FakePrintify, serve_printify

pytestmark = pytest.mark.anyio

TOKEN = "pfy-SECRET-7c1d9e2b4a"
SHOP = 4242
TYPES = load_catalog(None)


@asynccontextmanager
async def printify(
    tmp_path: Path, fake: FakePrintify, token: str = TOKEN, **options: Any
) -> AsyncIterator[PrintifyPublisher]:
    """A publisher built from settings, talking to `fake` served on a free loopback port."""
    async with serve_printify(fake) as url:
        settings = Settings.from_env(
            {}, home=tmp_path, printify_token=token, printify_shop_id=str(SHOP), printify_url=url
        )
        publisher = PrintifyPublisher.from_settings(settings, **options)
        try:
            yield publisher
        finally:
            await publisher.aclose()


def png(width: int = 64, height: int = 80) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "#3a7").save(out, format="PNG")
    return out.getvalue()


def product(type_key: str = "tshirt", **fields: Any) -> Product:
    kind = TYPES.get(type_key)
    values: dict[str, Any] = {
        "id": new_product_id(),
        "type": type_key,
        "title": "Fern in watercolour",
        "description": "A fern, softly painted.",
        "price_cents": 2599,
        "design": {"run_id": "run-1", "filename": "design.png"},
        "colours": list(kind.colours),
        "sizes": list(kind.sizes),
        "files": [],
        "status": "draft",
        "run_id": "run-2",
        "created_at": time.time(),
        "updated_at": time.time(),
    }
    values.update(fields)
    return Product(**values)


def print_files(type_key: str = "tshirt") -> list[ListedFile]:
    kind = TYPES.get(type_key)
    files = [
        ListedFile("print", area, f"{area}.png", "image/png", png(), 64, 80, 300) for area in kind.print_areas
    ]
    files.append(ListedFile("mockup", "white", "mockup-white.png", "image/png", png(), 64, 80))
    return files


async def test_create_leaves_a_draft_with_the_catalog_blueprint_variants_print_area_and_tag(
    tmp_path: Path,
) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    mine = product("tshirt", colours=["white", "heather grey"], sizes=["S", "XL"])
    async with printify(tmp_path, fake) as publisher:
        listed = await publisher.create(mine, TYPES.get("tshirt"), print_files("tshirt"))

    [held] = fake.shop_products()
    assert listed == Listed(external_id=held["id"], url=listed.url, published=False)
    assert (held["blueprint_id"], held["print_provider_id"]) == (12, 99)
    assert held["visible"] is False
    assert f"atelier:{mine.id}" in held["tags"]
    assert sorted(v["title"] for v in held["variants"]) == [
        "Heather Grey / S",
        "Heather Grey / XL",
        "White / S",
        "White / XL",
    ]
    assert {v["price"] for v in held["variants"]} == {2599}
    [area] = held["print_areas"]
    assert sorted(area["variant_ids"]) == sorted(v["id"] for v in held["variants"])
    [placeholder] = area["placeholders"]
    assert placeholder["position"] == "front"
    [image] = placeholder["images"]
    assert fake.upload_bytes[image["id"]] == print_files()[0].data
    # Printify renders the mockups itself, one per colour; ours are not uploaded.
    assert len(fake.uploads) == 1
    assert {frozenset(m["variant_ids"]) for m in held["images"]} == {
        frozenset(v["id"] for v in held["variants"] if v["title"].startswith(colour))
        for colour in ("White", "Heather Grey")
    }


@pytest.mark.parametrize("type_key", ["tshirt", "hoodie", "poster", "mug"])
async def test_every_shipped_product_type_is_accepted_by_printify(tmp_path: Path, type_key: str) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    async with printify(tmp_path, fake) as publisher:
        await publisher.create(product(type_key), TYPES.get(type_key), print_files(type_key))
    [held] = fake.shop_products()
    mapping = TYPES.get(type_key).platforms["printify"].model_extra or {}
    assert (held["blueprint_id"], held["print_provider_id"]) == (
        mapping["blueprint_id"],
        mapping["print_provider_id"],
    )
    offered = {v["id"] for v in CATALOG[(held["blueprint_id"], held["print_provider_id"])]}
    assert {v["id"] for v in held["variants"]} <= offered


async def test_publish_answers_the_sales_channel_url_and_unpublish_hides_it(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP, channel_url="https://fern.example.com/products")
    mine = product()
    async with printify(tmp_path, fake) as publisher:
        draft = await publisher.create(mine, TYPES.get("tshirt"), print_files())
        published = await publisher.publish(mine, draft)
        [held] = fake.shop_products()
        assert published == Listed(
            external_id=held["id"], url=f"https://fern.example.com/products/{held['id']}", published=True
        )
        assert held["visible"] is True
        [request] = fake.requests_to("POST", "/publish.json")
        assert request.body == {
            "title": True,
            "description": True,
            "images": True,
            "variants": True,
            "tags": True,
            "keyFeatures": True,
            "shipping_template": True,
        }
        unlisted = await publisher.unpublish(mine, published)
    assert unlisted.published is False
    assert held["visible"] is False


async def test_publish_without_a_channel_report_links_to_printify(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP, channel_url=None)
    mine = product()
    async with printify(tmp_path, fake) as publisher:
        published = await publisher.publish(
            mine, await publisher.create(mine, TYPES.get("tshirt"), print_files())
        )
    assert published.url == f"https://printify.com/app/product-details/{published.external_id}"


async def test_find_pages_through_the_shop_for_the_product_it_created(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    # Someone else's products first, so that ours is on the third page of fifty.
    for n in range(120):
        fake.products[SHOP][f"other{n:020d}"] = {"id": f"other{n:020d}", "tags": [f"atelier:prod-{n:012d}"]}
    mine = product()
    async with printify(tmp_path, fake) as publisher:
        assert await publisher.find(mine) is None
        created = await publisher.create(mine, TYPES.get("tshirt"), print_files())
        found = await publisher.find(mine)
    assert found == created
    assert len(fake.shop_products()) == 121
    pages = [r.query["page"] for r in fake.requests_to("GET", "/products.json")]
    assert pages == ["1", "2", "3", "1", "2", "3"]


async def test_a_rate_limit_is_waited_out_as_retry_after_says(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    fake.rate_limit_next(2, retry_after=0.3)
    async with printify(tmp_path, fake) as publisher:
        assert await publisher.find(product()) is None
    statuses = [r.status for r in fake.requests]
    assert statuses == [429, 429, 200]
    assert fake.requests[2].at - fake.requests[0].at >= 0.6


async def test_a_rate_limit_longer_than_the_adapter_waits_is_a_retryable_error(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    fake.rate_limit_next(1, retry_after=120)
    async with printify(tmp_path, fake, max_wait_s=5) as publisher:
        with pytest.raises(BackendError) as caught:
            await publisher.find(product())
    assert caught.value.retryable is True
    assert "try again in 120 s" in str(caught.value)
    assert len(fake.requests) == 1


async def test_a_wrong_token_is_a_clear_final_error_without_retries(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    async with printify(tmp_path, fake, token="pfy-WRONG-000") as publisher:
        with pytest.raises(BackendError) as caught:
            await publisher.create(product(), TYPES.get("tshirt"), print_files())
        health = await publisher.health()
    assert caught.value.retryable is False
    assert "ATELIER_PRINTIFY_TOKEN" in str(caught.value)
    assert [r.status for r in fake.requests] == [401, 401]  # the create, then the health check
    assert health["ok"] is False and "ATELIER_PRINTIFY_TOKEN" in health["error"]
    assert fake.shop_products() == []


async def test_a_server_error_is_retryable_and_creates_nothing(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    async with printify(tmp_path, fake) as publisher:
        fake.fail_next(1, 502)
        with pytest.raises(BackendError) as caught:
            await publisher.create(product(), TYPES.get("tshirt"), print_files())
    assert caught.value.retryable is True
    assert "502" in str(caught.value)
    assert fake.shop_products() == []


async def test_a_burst_of_calls_stays_under_the_configured_rate(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP, rate_limit=(5, 1.0))
    mine = product()
    async with printify(tmp_path, fake, rate=(5, 1.0)) as publisher, anyio.create_task_group() as tg:
        for _ in range(14):
            tg.start_soon(publisher.find, mine)
    arrivals = [r.at for r in fake.requests]
    assert len(arrivals) == 14
    assert all(r.status == 200 for r in fake.requests)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 5


async def test_the_publish_limit_refuses_the_next_publish_saying_when(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    async with printify(tmp_path, fake, publish_limit=(2, 1800.0)) as publisher:
        listings = []
        for _ in range(3):
            mine = product()
            listings.append((mine, await publisher.create(mine, TYPES.get("tshirt"), print_files())))
        for mine, listed in listings[:2]:
            await publisher.publish(mine, listed)
        with pytest.raises(BackendError) as caught:
            await publisher.publish(*listings[2])
    assert caught.value.retryable is True
    assert "2 publishes per 30 minutes" in str(caught.value)
    assert "possible in 1800 s" in str(caught.value) or "possible in 1799 s" in str(caught.value)
    assert len(fake.requests_to("POST", "/publish.json")) == 2


async def test_health_says_whether_it_is_configured_and_answering(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    async with serve_printify(fake) as url:
        bare = PrintifyPublisher.from_settings(Settings.from_env({}, home=tmp_path, printify_url=url))
        assert bare.configured() is False
        assert (await bare.health())["ok"] is False
        with pytest.raises(BackendError, match="ATELIER_PRINTIFY_SHOP_ID"):
            await bare.find(product())
        await bare.aclose()
        assert fake.requests == []
    async with printify(tmp_path, fake) as publisher:
        assert publisher.configured() is True
        assert (await publisher.health()) == {"ok": True, "configured": True, "shop_id": str(SHOP)}
    gone = PrintifyPublisher(url=url, token=SecretStr(TOKEN), shop_id=str(SHOP))
    health = await gone.health()  # the server is stopped: a health answer, not an exception
    await gone.aclose()
    assert health["ok"] is False


async def test_the_token_appears_in_no_log_error_or_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    texts: list[str] = []

    async def failure(call: Any) -> None:
        with pytest.raises(BackendError) as caught:
            await call
        texts.append(str(caught.value))

    async with printify(tmp_path, fake, publish_limit=(1, 1800.0), max_wait_s=0.5) as publisher:
        texts.append(repr(publisher))
        mine = product()
        fake.rate_limit_next(1, retry_after=0.05)
        listed = await publisher.create(mine, TYPES.get("tshirt"), print_files())
        await publisher.publish(mine, listed)
        texts.append(str(await publisher.health()))
        fake.fail_next(1, 500)
        await failure(publisher.find(mine))
        fake.rate_limit_next(1, retry_after=60)
        await failure(publisher.find(mine))
        await failure(publisher.publish(mine, listed))
    async with printify(tmp_path, fake, token=TOKEN + "-revoked") as revoked:
        await failure(revoked.find(mine))
        texts.append(str(await revoked.health()))
    logged = [record.getMessage() for record in caplog.records]
    assert any("created" in line for line in logged), "the flow logs what it does"
    assert not [text for text in [*texts, *logged] if "SECRET" in text]


async def test_a_create_whose_answer_was_lost_is_found_instead_of_made_twice(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    fake.lose_next_answer("/products.json")
    mine = product()
    async with printify(tmp_path, fake) as publisher:
        with pytest.raises(BackendError) as caught:
            await publisher.create(mine, TYPES.get("tshirt"), print_files())
        assert caught.value.retryable is True
        # What the durable publication does on its retry: ask before creating.
        found = await publisher.find(mine)
    [held] = fake.shop_products()
    assert found is not None and found.external_id == held["id"]


async def test_rate_limits_that_do_not_end_stop_after_a_bounded_number_of_tries(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    fake.rate_limit_next(50, retry_after=0.01)
    async with printify(tmp_path, fake, max_retries=3) as publisher:
        with pytest.raises(BackendError) as caught:
            await publisher.find(product())
    assert caught.value.retryable is True
    assert len(fake.requests) == 4


async def test_the_fake_refuses_what_printify_refuses(tmp_path: Path) -> None:
    fake = FakePrintify(token=TOKEN, shop_id=SHOP)
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "test"}
    variants = CATALOG[(12, 99)][:2]
    async with serve_printify(fake) as url, httpx.AsyncClient(base_url=url, headers=headers) as client:
        unauthenticated = await client.get("/shops.json", headers={"Authorization": "Bearer nope"})
        upload = (
            await client.post("/uploads/images.json", json={"file_name": "a.png", "contents": "aGk="})
        ).json()

        async def refusal(**changes: Any) -> str:
            body = {
                "title": "T",
                "description": "",
                "blueprint_id": 12,
                "print_provider_id": 99,
                "variants": [{"id": v["id"], "price": 2000, "is_enabled": True} for v in variants],
                "print_areas": [
                    {
                        "variant_ids": [v["id"] for v in variants],
                        "placeholders": [
                            {
                                "position": "front",
                                "images": [{"id": upload["id"], "x": 0.5, "y": 0.5, "scale": 1, "angle": 0}],
                            }
                        ],
                    }
                ],
                **changes,
            }
            answer = await client.post(f"/shops/{SHOP}/products.json", json=body)
            assert answer.status_code == 400
            return answer.json()["errors"]["reason"]

        assert "price" in await refusal(
            variants=[{"id": variants[0]["id"], "price": 20.0, "is_enabled": True}]
        )
        half = [{"variant_ids": [variants[0]["id"]], "placeholders": [{"position": "front", "images": []}]}]
        assert "exactly one print area" in await refusal(print_areas=half)
        bad_image = [{"id": "nope", "x": 0.5, "y": 0.5, "scale": 1, "angle": 0}]
        stranger = [
            {
                "variant_ids": [v["id"] for v in variants],
                "placeholders": [{"position": "front", "images": bad_image}],
            }
        ]
        assert "not an upload" in await refusal(print_areas=stranger)
        assert "blueprint" in await refusal(blueprint_id=999)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["message"] == "Unauthenticated."
    assert fake.shop_products() == []
