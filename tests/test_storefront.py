"""The embedded storefront: the adapter on the real SQLite ledger, and `/shop` (pages, JSON,
files) over a real server. Products are made by real preview runs (`tests.shop_products`)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest

from core.engine import Engine
from core.errors import BackendError
from core.publishing.catalog import load_catalog
from core.publishing.models import new_product_id
from core.publishing.storefront import StorefrontPublisher, absolute_url, served_base_url
from core.settings import Settings
from http_compat.shop import PAGE_SIZE, ShopProduct, ShopProducts
from tests.http_served import atelier_http
from tests.shop_products import list_on_storefront, product_with_images

pytestmark = pytest.mark.anyio

TEE = load_catalog(None).get("tshirt")


# -- the adapter ---------------------------------------------------------------------------


async def test_storefront_is_always_configured_and_healthy(engine: Engine) -> None:
    storefront = StorefrontPublisher(engine.ledger)
    assert storefront.name == "storefront"
    assert storefront.configured()
    assert (await storefront.health())["ok"] is True


async def test_create_is_a_draft_not_on_the_shelf_and_publish_shows_it(engine: Engine) -> None:
    storefront = StorefrontPublisher(engine.ledger)
    product = await product_with_images(engine)
    assert await storefront.find(product) is None

    draft = await storefront.create(product, TEE, [])
    assert (draft.external_id, draft.url, draft.published) == (
        product.id,
        f"/shop/products/{product.id}",
        False,
    )
    assert await engine.ledger.published_on("storefront") == []
    stored = await engine.ledger.get_product(product.id)
    assert stored is not None and stored.listing("storefront").status == "draft"  # type: ignore[union-attr]

    published = await storefront.publish(product, draft)
    assert published.published and published.url == draft.url
    assert [p.id for p in await engine.ledger.published_on("storefront")] == [product.id]

    hidden = await storefront.unpublish(product, published)
    assert not hidden.published
    assert await engine.ledger.published_on("storefront") == []


async def test_find_returns_what_the_ledger_records_so_a_retry_creates_nothing(engine: Engine) -> None:
    storefront = StorefrontPublisher(engine.ledger)
    product = await product_with_images(engine)
    await storefront.publish(product, await storefront.create(product, TEE, []))

    # A new adapter (a restarted process) finds the same listing in the ledger.
    found = await StorefrontPublisher(engine.ledger).find(product)
    assert found is not None
    assert (found.external_id, found.url, found.published) == (
        product.id,
        f"/shop/products/{product.id}",
        True,
    )


async def test_listing_a_product_not_in_the_ledger_is_a_clear_permanent_error(engine: Engine) -> None:
    storefront = StorefrontPublisher(engine.ledger)
    product = await product_with_images(engine)
    product.id = new_product_id()  # same content, never stored
    with pytest.raises(BackendError, match="not in Atelier's ledger") as caught:
        await storefront.create(product, TEE, [])
    assert caught.value.retryable is False


def test_urls_are_relative_and_made_absolute_by_whoever_knows_the_address(tmp_path: Path) -> None:
    assert (
        absolute_url("/shop/products/prod-abc", "http://shop.lan:9000/")
        == "http://shop.lan:9000/shop/products/prod-abc"
    )
    assert absolute_url("https://x.example/p/1", "http://127.0.0.1:8000") == "https://x.example/p/1"
    wildcard = Settings.from_env({}, home=tmp_path, host="0.0.0.0", port=9001, api_token="t" * 32)
    assert served_base_url(wildcard) == "http://127.0.0.1:9001"
    v6 = Settings.from_env({}, home=tmp_path, host="::1", port=8000)
    assert served_base_url(v6) == "http://[::1]:8000"


# -- /shop over HTTP -----------------------------------------------------------------------


async def test_shop_json_lists_only_published_products_with_absolute_urls(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        shown = await product_with_images(served.engine, "Shown fox", price_cents=2499, seed=1)
        draft = await product_with_images(served.engine, "Draft fox", seed=2)
        hidden = await product_with_images(served.engine, "Hidden fox", seed=3)
        await list_on_storefront(served.engine, shown)
        await list_on_storefront(served.engine, draft, "draft")
        await list_on_storefront(served.engine, hidden, "unpublished")

        document = (await served.http.get("/shop/api/products")).json()
        ShopProducts.model_validate(document)
        assert document["next_offset"] is None
        listed = document["products"]
        assert [p["id"] for p in listed] == [shown.id]
        one = listed[0]
        assert one["title"] == "Shown fox"
        assert (one["price_cents"], one["price"]) == (2499, "$24.99")
        assert (one["type"], one["type_name"]) == ("tshirt", "Unisex t-shirt")
        assert one["url"] == f"{served.url}/shop/products/{shown.id}"
        assert [m["colour"] for m in one["mockups"]] == ["white", "black"]
        assert one["sizes"] == ["S", "M", "L"]

        # Every URL it gives answers with the image itself.
        for url in [m["url"] for m in one["mockups"]] + [one["design"]["url"], one["print_files"][0]["url"]]:
            answer = await served.http.get(url)
            assert answer.status_code == 200, url
            assert answer.headers["content-type"] == "image/png"
            assert answer.content.startswith(b"\x89PNG")

        assert (await served.http.get(f"/shop/api/products/{shown.id}")).json() == one
        for product in (draft, hidden):
            answer = await served.http.get(f"/shop/api/products/{product.id}")
            assert answer.status_code == 404
            assert answer.json()["error"] == "not_found"
            assert (await served.http.get(f"/shop/products/{product.id}")).status_code == 404
            assert (
                await served.http.get(f"/shop/products/{product.id}/images/mockup-white.png")
            ).status_code == 404


async def test_shop_page_shows_the_grid_and_the_product_page_everything_a_buyer_needs(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        product = await product_with_images(
            served.engine, "Fox tee", price_cents=123456, description="Soft cotton.\nPrinted on demand."
        )
        await list_on_storefront(served.engine, product)

        for path in ("/shop", "/shop/"):
            page = await served.http.get(path, follow_redirects=True)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "script-src" not in page.headers["content-security-policy"]
            assert "default-src 'none'" in page.headers["content-security-policy"]
            text = page.text
            assert "Fox tee" in text and "$1,234.56" in text and "Unisex t-shirt" in text
            assert f'href="/shop/products/{product.id}"' in text
            assert f'src="/shop/products/{product.id}/images/mockup-white.png"' in text
            assert "<script" not in text and "http://" not in text and "https://" not in text

        page = (await served.http.get(f"/shop/products/{product.id}")).text
        for colour, filename in (("white", "mockup-white.png"), ("black", "mockup-black.png")):
            assert f'src="/shop/products/{product.id}/images/{filename}"' in page
            assert f'alt="Fox tee in {colour}"' in page
        for size in ("S", "M", "L"):
            assert f"<li>{size}</li>" in page
        assert "Soft cotton.\nPrinted on demand." in page
        assert f'src="/shop/products/{product.id}/images/design.png"' in page  # the design
        assert "256×256 px at 300 DPI" in page
        assert all(re.search(r'\balt="[^"]+"', tag) for tag in re.findall(r"<img[^>]*>", page))


async def test_titles_and_descriptions_are_escaped_everywhere(tmp_path: Path) -> None:
    title = '<script>alert("owned")</script> & "quotes" <img src=x onerror=alert(1)>'
    async with atelier_http(tmp_path) as served:
        product = await product_with_images(served.engine, title, description="<b>bold</b>")
        await list_on_storefront(served.engine, product)
        for path in ("/shop", f"/shop/products/{product.id}"):
            page = (await served.http.get(path, follow_redirects=True)).text
            assert "<script>" not in page and "<img src=x" not in page and "<b>" not in page
            assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
        assert (await served.http.get(f"/shop/api/products/{product.id}")).json()["title"] == title


async def test_bad_ids_and_filenames_are_404_and_other_run_files_are_unreachable(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        product = await product_with_images(served.engine)
        await list_on_storefront(served.engine, product)
        base = f"/shop/products/{product.id}/images"
        for path in (
            "/shop/api/products/prod-NOTANID",
            "/shop/api/products/..%2F..%2Fetc",
            f"/shop/api/products/{new_product_id()}",
            f"{base}/..%2Frun.json",
            f"{base}/.hidden.png",
            f"{base}/image-99.png",
            f"{base}/image-01.png",  # the run's own name for it: files are served by the shop's names only
            "/shop/products/not-a-product/images/design.png",
        ):
            answer = await served.http.get(path)
            assert answer.status_code == 404, path
        # Not HTML's business to say which ids exist: the page of an unknown id is a 404 page.
        page = await served.http.get("/shop/products/prod-000000000000")
        assert page.status_code == 404 and "Not in the shop" in page.text


async def test_files_of_different_runs_with_the_same_name_are_each_served(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        product = await product_with_images(served.engine, seed=1)
        other = await product_with_images(served.engine, seed=2)  # another run: its image-01.png differs
        print_file = other.print_files[0]
        assert print_file.filename == product.design["filename"] == "image-01.png"
        product.files = [*product.mockups, print_file]
        await served.engine.ledger.delete_product(product.id)
        await served.engine.ledger.insert_product(product)
        await list_on_storefront(served.engine, product)

        shown = (await served.http.get(f"/shop/api/products/{product.id}")).json()
        design = await served.http.get(shown["design"]["url"])
        printed = await served.http.get(shown["print_files"][0]["url"])
        assert hashlib.sha256(design.content).hexdigest() == product.design["sha256"]
        assert hashlib.sha256(printed.content).hexdigest() == print_file.sha256 != product.design["sha256"]


async def test_shop_follows_the_bearer_token_and_origin_rules(tmp_path: Path) -> None:
    token = "s" * 40
    async with atelier_http(tmp_path, api_token=token) as served:
        assert (await served.http.get("/shop/api/products")).status_code == 401
        assert (await served.http.get("/shop/")).status_code == 401
        ok = await served.http.get("/shop/api/products", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == {"products": [], "next_offset": None}
    async with atelier_http(tmp_path / "b") as served:
        rebinding = await served.http.get("/shop/api/products", headers={"Host": "attacker.example"})
        assert rebinding.status_code == 421
        cross = await served.http.get(
            "/shop/api/products", headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403


async def test_publishing_through_the_adapter_shows_it_and_unpublishing_takes_it_down(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        storefront = StorefrontPublisher(served.engine.ledger)
        product = await product_with_images(served.engine, "Fox mug", type="mug", price_cents=1499)
        draft = await storefront.create(product, load_catalog(None).get("mug"), [])
        assert (await served.http.get(f"/shop/api/products/{product.id}")).status_code == 404

        published = await storefront.publish(product, draft)
        page = await served.http.get(published.url or "")
        assert page.status_code == 200 and "Fox mug" in page.text and "Mug 11 oz" in page.text
        shown = ShopProduct.model_validate((await served.http.get(f"/shop/api/products/{product.id}")).json())
        assert shown.url == absolute_url(published.url or "", served.url)

        await storefront.unpublish(product, published)
        assert (await served.http.get(published.url or "")).status_code == 404
        assert (await served.http.get("/shop/api/products")).json()["products"] == []


async def test_the_shop_pages_through_many_products(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        first = await product_with_images(served.engine, "Template")
        # Many products of the same files: what is paged is the listing, not the images.
        ids = [first.id]
        await list_on_storefront(served.engine, first)
        for n in range(PAGE_SIZE + 2):
            copy = await served.engine.ledger.insert_product(
                dataclasses.replace(
                    first, id=new_product_id(), title=f"Fox {n}", created_at=first.created_at + n + 1
                )
            )
            await list_on_storefront(served.engine, copy)
            ids.insert(0, copy.id)

        seen, offset = [], 0
        while offset is not None:
            page = (
                await served.http.get("/shop/api/products", params={"limit": 20, "offset": offset})
            ).json()
            seen += [p["id"] for p in page["products"]]
            offset = page["next_offset"]
        assert seen == ids

        grid = (await served.http.get("/shop/")).text
        assert grid.count('class="card"') == PAGE_SIZE and 'href="/shop/?page=2"' in grid
        last = (await served.http.get("/shop/", params={"page": 2})).text
        assert last.count('class="card"') == len(ids) - PAGE_SIZE
        assert 'href="/shop/?page=1"' in last and "?page=3" not in last
        for bad in ({"limit": 0}, {"limit": 500}, {"offset": -1}, {"limit": "x"}):
            answer = await served.http.get("/shop/api/products", params=bad)
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_parameters"


async def test_the_shop_json_is_documented(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/shop/openapi.json")).json()
        assert {
            "/",
            "/products/{id}",
            "/products/{id}/images/{filename}",
            "/api/products",
            "/api/products/{id}",
        } == set(document["paths"])
        assert "ShopProduct" in document["components"]["schemas"]


async def test_shop_stays_at_shop_when_a_contract_is_served_at_the_root(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="pod") as served:
        product = await product_with_images(served.engine)
        await list_on_storefront(served.engine, product)
        assert [p["id"] for p in (await served.http.get("/shop/api/products")).json()["products"]] == [
            product.id
        ]
        assert (await served.http.get("/shop/")).status_code == 200
        assert (await served.http.get("/health")).json()["status"] in ("healthy", "degraded")
