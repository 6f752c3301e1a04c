"""Print-on-demand through MCP, as a model drives it: the catalog, prompts, drafts, and publishing
only with the user's confirmation (asked over elicitation, or `confirm: true` without it).

Every test talks to the real server over the in-process MCP client (the SDK's own), on a real
engine with the preview renderer and the embedded storefront, on the default catalog (full-size
print files). The clients that "are" the user answer elicitation and sampling requests with the
SDK's callbacks, on both the default connection and the classic `initialize` handshake. Nothing
of ours is patched.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ImageContent,
    ResourceLink,
    TextContent,
)
from PIL import Image

from core.engine import Engine
from core.models import RunKind
from core.publishing.prompts import TEMPLATES, compose
from core.settings import Settings
from mcp_server.server import build_mcp

pytestmark = pytest.mark.anyio

PRINTIFY_TOKEN = "pfy-token-do-not-leak-7f3a9c"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Preview renderer, storefront enabled; Printify half-configured (a token but no shop) so it
    is a platform that exists but is not configured, and its token must never show."""
    return Settings.from_env(
        {}, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01, printify_token=PRINTIFY_TOKEN
    )


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """The default connection (2026-07-28: elicitation rides an input-required round) and the
    classic `initialize` handshake (2025: a request mid-call), which hosts like Claude Desktop use."""
    return request.param


class User:
    """The person behind a client that can ask them: answers elicitations, writes sampled prompts."""

    def __init__(self, action: str = "accept", publish: bool = True, reply: str = "") -> None:
        self.action, self.publish, self.reply = action, publish, reply
        self.asked: list[ElicitRequestParams] = []
        self.sampled: list[CreateMessageRequestParams] = []

    async def elicit(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.action == "accept":
            return ElicitResult(action="accept", content={"publish": self.publish})
        return ElicitResult(action=self.action)  # type: ignore[arg-type]

    async def sample(self, context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        self.sampled.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=self.reply), model="host"
        )


def asking(engine: Engine, user: User, mode: str = "auto") -> Client:
    """A client that supports elicitation and sampling, answered by `user`."""
    return Client(
        build_mcp(engine), mode=mode, elicitation_callback=user.elicit, sampling_callback=user.sample
    )


@pytest.fixture
async def plain(engine: Engine, mode: str) -> AsyncIterator[Client]:
    """A client with neither elicitation nor sampling."""
    async with Client(build_mcp(engine), mode=mode) as connected:
        yield connected


async def call(client: Client, tool: str, progress: Any = None, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(120):
        return await client.call_tool(tool, arguments, progress_callback=progress)


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await call(client, tool, **arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await call(client, tool, **arguments)
    assert result.is_error, text_of(result)
    text = text_of(result)
    assert text.startswith(f"Error executing tool {tool}: "), text
    return text.removeprefix(f"Error executing tool {tool}: ")


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def design_base64(side: int = 1024) -> str:
    image = Image.new("RGB", (side, side), (30, 120, 200))
    image.paste((240, 200, 40), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


async def a_draft(client: Client, product_type: str = "poster", **more: Any) -> dict[str, Any]:
    made = await ok(client, "create_products", design=design_base64(), product_types=[product_type], **more)
    assert made["status"] == "completed", made
    [product] = made["products"]
    return product


async def publish_runs(engine: Engine) -> list[str]:
    return [run.id for run in (await engine.list_runs(limit=200)).items if run.kind is RunKind.PUBLISH]


def storefront(product: dict[str, Any]) -> dict[str, Any]:
    [listing] = [item for item in product["listings"] if item["platform"] == "storefront"]
    return listing


# -- the catalog and prompts ----------------------------------------------------------------------


async def test_list_product_types_gives_print_areas_colours_prices_and_platform_mappings(
    plain: Client,
) -> None:
    catalog = await ok(plain, "list_product_types")
    types = {t["key"]: t for t in catalog["product_types"]}
    assert {"tshirt", "hoodie", "poster", "mug"} <= set(types)
    [front] = types["tshirt"]["print_areas"]
    assert (front["name"], front["width"], front["height"], front["dpi"]) == ("front", 4500, 5400, 300)
    assert front["inches"] == "15 x 18 in"
    assert types["tshirt"]["price_cents"] == 2499 and types["tshirt"]["price"] == "24.99"
    assert "black" in types["tshirt"]["colours"] and "M" in types["tshirt"]["sizes"]
    platforms = {p["platform"]: p for p in types["tshirt"]["platforms"]}
    assert platforms["storefront"] == {**platforms["storefront"], "enabled": True, "configured": True}
    assert platforms["printify"]["verified"] is True  # blueprint 12 is a checked fact
    assert platforms["printify"]["configured"] is False  # a token without a shop id
    assert {p["platform"]: p["verified"] for p in types["hoodie"]["platforms"]}["printify"] is False
    assert catalog["enabled_platforms"] == ["storefront"]
    assert PRINTIFY_TOKEN not in json.dumps(catalog)


async def test_compose_prompts_uses_the_listed_templates_by_default_and_is_deterministic(
    plain: Client,
) -> None:
    first = await ok(plain, "compose_prompts", theme="nature", style="watercolour", niche="hikers", count=3)
    again = await ok(plain, "compose_prompts", theme="nature", style="watercolour", niche="hikers", count=3)
    assert first == again
    assert first["prompts"] == compose("nature", "watercolour", "hikers", 3)
    assert first["composed_by"] == "templates" and first["note"] == ""
    assert [t["name"] for t in first["templates"]] == list(TEMPLATES)
    one = await ok(plain, "compose_prompts", theme="nature", template="badge", count=2)
    assert one["prompts"] == compose("nature", "", "", 2, "badge")


async def test_compose_prompts_falls_back_to_templates_when_the_client_cannot_sample(plain: Client) -> None:
    result = await ok(plain, "compose_prompts", theme="nature", count=2, use_model=True)
    assert result["composed_by"] == "templates"
    assert "sampling" in result["note"]
    assert result["prompts"] == compose("nature", "", "", 2)


async def test_compose_prompts_asks_the_hosts_model_when_asked_and_the_client_can_sample(
    engine: Engine, mode: str
) -> None:
    user = User(
        reply='1. a watercolour fox among ferns\n- "an owl on a pine branch"\n\n3) a misty mountain lake'
    )
    async with asking(engine, user, mode) as client:
        result = await ok(
            client, "compose_prompts", theme="nature", style="watercolour", count=3, use_model=True
        )
        unasked = await ok(client, "compose_prompts", theme="nature", count=3)
    assert result["composed_by"] == "model" and result["note"] == ""
    assert result["prompts"] == [
        "a watercolour fox among ferns",
        "an owl on a pine branch",
        "a misty mountain lake",
    ]
    [request] = user.sampled  # only when asked for: the second call used the templates
    assert unasked["composed_by"] == "templates"
    asked_text = request.messages[0].content.text  # type: ignore[union-attr]
    assert "Theme: nature." in asked_text and "Style: watercolour." in asked_text and "3" in asked_text


# -- the whole flow -------------------------------------------------------------------------------


async def test_prompts_become_draft_products_that_are_published_once_the_user_accepts(
    engine: Engine, mode: str
) -> None:
    user = User(action="accept")
    async with asking(engine, user, mode) as client:
        prompts = (await ok(client, "compose_prompts", theme="fox", style="watercolour", count=1))["prompts"]
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        made = await call(client, "create_products", on_progress, prompts=prompts, product_types=["tshirt"])
        assert not made.is_error, text_of(made)
        view = made.structured_content
        assert view is not None and view["status"] == "completed" and view["errors"] == []
        assert progress and [p[0] for p in progress] == sorted(p[0] for p in progress)
        assert any("tshirt print files and mockups made" in (p[2] or "") for p in progress), progress
        [tee] = view["products"]
        assert tee["type"] == "tshirt" and tee["status"] == "draft" and tee["price"] == "24.99"
        assert tee["design"]["prompt"] == prompts[0]
        assert storefront(tee)["status"] == "draft"
        [print_file] = tee["print_files"]
        assert (print_file["width"], print_file["height"], print_file["dpi"]) == (4500, 5400, 300)
        assert sorted(m["colour"] for m in tee["mockups"]) == sorted(
            engine.products.catalog.get("tshirt").colours
        )
        # A few mockups inline, every one linked.
        inline = [b for b in made.content if isinstance(b, ImageContent)]
        links = [b for b in made.content if isinstance(b, ResourceLink)]
        assert 1 <= len(inline) <= 4
        assert sorted(link.uri for link in links) == sorted(m["uri"] for m in tee["mockups"])
        assert "publish_products" in view["next"]

        own = await a_draft(client, "poster", title="Blue square", price_cents=1500)
        assert own["title"] == "Blue square" and own["price_cents"] == 1500 and own["status"] == "draft"
        assert "source" in own["design"] or own["design"].get("sha256")

        published = await ok(client, "publish_products", product_ids=[tee["product_id"], own["product_id"]])
    assert published["published"] is True and published["confirmed_by"] == "elicitation"
    assert published["answer"] == "accepted"
    assert published["status"] == "completed", published
    [question] = user.asked
    assert "storefront" in question.message
    assert f"{tee['title']} (tshirt) at 24.99" in question.message
    assert "Blue square (poster) at 15.00" in question.message
    assert question.requested_schema["properties"]["publish"]["type"] == "boolean"
    for product in published["products"]:
        assert product["status"] == "published"
        listing = storefront(product)
        assert listing["status"] == "published"
        # Where `atelier serve` shows it, by the settings (an MCP call has no URL of its own).
        port = engine.settings.port
        assert listing["url"] == f"http://127.0.0.1:{port}/shop/products/{product['product_id']}"
        assert (await engine.products.get(product["product_id"])).listing("storefront").status == "published"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("action", "publish", "said"),
    [
        ("decline", True, "declined"),
        ("cancel", True, "cancelled"),
        ("accept", False, "accepted without ticking"),
    ],
)
async def test_nothing_is_published_when_the_user_does_not_accept(
    engine: Engine, mode: str, action: str, publish: bool, said: str
) -> None:
    user = User(action=action, publish=publish)
    async with asking(engine, user, mode) as client:
        draft = await a_draft(client)
        # `confirm: true` is the model's word, not the user's: the user is still asked.
        result = await call(client, "publish_products", product_ids=[draft["product_id"]], confirm=True)
    assert not result.is_error, text_of(result)
    view = result.structured_content
    assert view is not None
    assert view["published"] is False and view["run_id"] is None and view["answer"].startswith(said)
    assert "nothing was published" in text_of(result)
    assert len(user.asked) == 1
    assert await publish_runs(engine) == []
    product = await engine.products.get(draft["product_id"])
    assert product.status == "draft" and product.listing("storefront").status == "draft"  # type: ignore[union-attr]


async def test_without_elicitation_publishing_needs_confirm_and_shows_what_it_would_publish(
    engine: Engine, plain: Client
) -> None:
    draft = await a_draft(plain, title="Blue square", price_cents=1500)
    problem = await refused(plain, "publish_products", product_ids=[draft["product_id"]])
    assert problem.startswith("confirm: publishing needs the user's confirmation")
    assert "storefront" in problem
    assert f"product_ids[0]: {draft['product_id']} 'Blue square' (poster) at 15.00" in problem
    assert await publish_runs(engine) == []
    assert (await engine.products.get(draft["product_id"])).status == "draft"

    published = await ok(plain, "publish_products", product_ids=[draft["product_id"]], confirm=True)
    assert published["published"] is True and published["confirmed_by"] == "confirm"
    assert published["answer"] == "confirm: true"
    [product] = published["products"]
    assert product["status"] == "published" and storefront(product)["status"] == "published"


async def test_list_get_and_unpublish(engine: Engine, plain: Client) -> None:
    poster = await a_draft(plain, "poster")
    mug = await a_draft(plain, "mug")
    await ok(plain, "publish_products", product_ids=[mug["product_id"]], confirm=True)

    everything = await ok(plain, "list_products")
    assert [p["product_id"] for p in everything["products"]] == [mug["product_id"], poster["product_id"]]
    assert everything["next_offset"] is None
    published = await ok(plain, "list_products", status="published")
    assert [p["product_id"] for p in published["products"]] == [mug["product_id"]]
    posters = await ok(plain, "list_products", type="poster", limit=1)
    assert [p["product_id"] for p in posters["products"]] == [poster["product_id"]]
    assert posters["next_offset"] == 1

    shown = await call(plain, "get_product", product_id=mug["product_id"])
    assert not shown.is_error and shown.structured_content is not None
    assert shown.structured_content["status"] == "published"
    assert storefront(shown.structured_content)["url"]
    assert any(isinstance(b, ImageContent) for b in shown.content)
    assert any(isinstance(b, ResourceLink) and "/mockups/" in b.uri for b in shown.content)

    hidden = await ok(plain, "unpublish_product", product_id=mug["product_id"])
    assert hidden["status"] == "completed"
    [product] = hidden["products"]
    assert product["status"] == "unpublished" and storefront(product)["status"] == "unpublished"


async def test_product_and_mockup_resources_are_readable(plain: Client) -> None:
    draft = await a_draft(plain, "mug")
    [contents] = (await plain.read_resource(draft["uri"])).contents
    assert json.loads(contents.text)["product_id"] == draft["product_id"]  # type: ignore[union-attr]
    mockup = draft["mockups"][0]
    [image] = (await plain.read_resource(mockup["uri"])).contents
    assert image.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(image.blob))) as opened:  # type: ignore[union-attr]
        assert opened.size == (mockup["width"], mockup["height"])
    # The print file is the run's own image.
    [print_file] = draft["print_files"]
    [blob] = (await plain.read_resource(print_file["uri"])).contents
    with Image.open(io.BytesIO(base64.b64decode(blob.blob))) as opened:  # type: ignore[union-attr]
        assert opened.size == (print_file["width"], print_file["height"])
    for uri in (
        "atelier://products/prod-000000000000",
        f"atelier://products/{draft['product_id']}/mockups/nothing.png",
        "atelier://products/prod-000000000000/mockups/x.png",
    ):
        with pytest.raises(MCPError) as caught:
            await plain.read_resource(uri)
        assert caught.value.code in (-32002, -32602)


# -- bad input --------------------------------------------------------------------------------------


async def test_bad_requests_are_refused_naming_the_argument_and_record_nothing(
    engine: Engine, plain: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refusals: list[tuple[str, dict[str, Any], str]] = [
        (
            "create_products",
            {"design": design_base64(), "product_types": ["sweater"]},
            "product_types: 'sweater' is not a product type (known: hoodie, mug, poster, tshirt)",
        ),
        (
            "create_products",
            {"design": design_base64(), "product_types": ["poster"], "platforms": ["printify"]},
            "platforms: printify is not configured: set ATELIER_PRINTIFY_TOKEN and ATELIER_PRINTIFY_SHOP_ID",
        ),
        (
            "create_products",
            {"design": design_base64(), "product_types": ["poster"], "platforms": ["etsy"]},
            "platforms: 'etsy' is not a platform",
        ),
        ("create_products", {"product_types": ["poster"]}, "design: give either `design`"),
        (
            "create_products",
            {"design": design_base64(), "prompts": ["a fox"], "product_types": ["poster"]},
            "prompts: give either `design`",
        ),
        ("create_products", {"design": "bm90IGFuIGltYWdl", "product_types": ["poster"]}, "design: "),
        ("create_products", {"prompts": ["a fox", "  "], "product_types": ["poster"]}, "prompts[1]: "),
        ("publish_products", {"product_ids": ["prod-000000000000"], "confirm": True}, "product_ids: "),
        ("publish_products", {"product_ids": ["nope"], "confirm": True}, "product_ids: "),
        ("unpublish_product", {"product_id": "prod-000000000000"}, "product_id: "),
        ("get_product", {"product_id": "x"}, "product_id: "),
        ("list_products", {"type": "sweater"}, "type: "),
        ("compose_prompts", {"theme": "  "}, "theme: "),
    ]
    for tool, arguments, expected in refusals:
        problem = await refused(plain, tool, **arguments)
        assert problem.startswith(expected), (tool, problem)
        assert PRINTIFY_TOKEN not in problem
    assert (await engine.list_runs(limit=10)).items == []
    assert caplog.records
    assert not [r for r in caplog.records if PRINTIFY_TOKEN in r.getMessage()]


async def test_publishing_on_a_platform_not_configured_is_refused_before_anyone_is_asked(
    engine: Engine, mode: str
) -> None:
    user = User(action="accept")
    async with asking(engine, user, mode) as client:
        draft = await a_draft(client)
        problem = await refused(
            client, "publish_products", product_ids=[draft["product_id"]], platforms=["printify"]
        )
    assert problem.startswith("platforms: printify is not configured")
    assert user.asked == []
    assert await publish_runs(engine) == []


# -- a second platform, and its secret -------------------------------------------------------------


async def test_products_reach_printify_too_and_its_token_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Drafts and publishing on the storefront and Printify (its faithful fake on loopback), with a
    distinctive token that must appear in no tool result, resource and log record."""
    from tests.fakes.printify import FakePrintify, serve_printify

    caplog.set_level(logging.DEBUG)
    fake = FakePrintify(token=PRINTIFY_TOKEN, shop_id=4242)
    seen: list[str] = []
    async with serve_printify(fake) as url:
        settings = Settings.from_env(
            {},
            home=tmp_path / "home-printify",
            local_step_ms=0,
            retry_backoff_s=0.01,
            printify_token=PRINTIFY_TOKEN,
            printify_shop_id="4242",
            printify_url=url,
        )
        async with Engine.open(settings) as engine, Client(build_mcp(engine)) as client:
            types = await call(client, "list_product_types")
            made = await call(
                client,
                "create_products",
                design=design_base64(),
                product_types=["tshirt"],
                platforms=["storefront", "printify"],
            )
            assert not made.is_error, text_of(made)
            [draft] = made.structured_content["products"]  # type: ignore[index]
            assert {item["platform"]: item["status"] for item in draft["listings"]} == {
                "storefront": "draft",
                "printify": "draft",
            }
            [held] = fake.shop_products(4242)
            assert storefront(draft)["external_id"] == draft["product_id"]
            published = await call(
                client,
                "publish_products",
                product_ids=[draft["product_id"]],
                platforms=["storefront", "printify"],
                confirm=True,
            )
            assert not published.is_error, text_of(published)
            [product] = published.structured_content["products"]  # type: ignore[index]
            assert {item["platform"]: item["status"] for item in product["listings"]} == {
                "storefront": "published",
                "printify": "published",
            }
            assert len(fake.shop_products(4242)) == 1 and held["id"] == fake.shop_products(4242)[0]["id"]
            resource = await client.read_resource(product["uri"])
            for result in (types, made, published):
                seen.append(text_of(result))
                seen.append(json.dumps(result.structured_content))
            seen.append(resource.contents[0].text)  # type: ignore[union-attr]
    assert all(PRINTIFY_TOKEN not in text for text in seen)
    assert not [r for r in caplog.records if PRINTIFY_TOKEN in r.getMessage()]
