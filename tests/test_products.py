"""Print-on-demand through the engine on the embedded storefront: designs to print files and
mockups to products to listings; refusals that name what is wrong; durability across attempts."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import anyio
import pytest
from PIL import Image

from core.engine import Engine
from core.errors import InvalidInput
from core.models import RunKind, RunStatus
from core.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01)


def design_png(side: int, colour: tuple[int, int, int] = (30, 120, 200)) -> str:
    image = Image.new("RGB", (side, side), colour)
    image.paste((240, 200, 40), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def finished(engine: Engine, run_id: str) -> dict:
    run = await engine.wait(run_id, timeout_s=120)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.result is not None
    return run.result


async def test_a_prompt_becomes_a_tshirt_and_a_hoodie_with_print_files_and_mockups(engine: Engine) -> None:
    run = await engine.products.submit(
        {"designs": [{"prompt": "a watercolour fox", "seed": 3}], "product_types": ["tshirt", "hoodie"]}
    )
    assert run.kind is RunKind.POD and run.backend == "publishing"
    result = await finished(engine, run.id)
    assert result["errors"] == []
    assert [p["type"] for p in result["products"]] == ["tshirt", "hoodie"]
    design = result["designs"][0]
    assert design["prompt"] == "a watercolour fox" and design["run_id"]
    for summary in result["products"]:
        product = await engine.products.get(summary["id"])
        assert product.status == "draft"
        [listing] = product.listings
        assert (
            listing.platform == "storefront"
            and listing.status == "draft"
            and listing.external_id == product.id
        )
        area = engine.products.catalog.get(product.type).print_areas["front"]
        [print_file] = product.print_files
        assert (print_file.width, print_file.height, print_file.dpi) == (area.width, area.height, area.dpi)
        _, data = await engine.read_artifact(print_file.run_id, print_file.filename)
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (area.width, area.height)
            assert round(image.info["dpi"][0]) == area.dpi
        assert sorted(m.name for m in product.mockups) == sorted(
            engine.products.catalog.get(product.type).colours
        )


async def test_publishing_makes_a_draft_visible_and_unpublishing_hides_it(engine: Engine) -> None:
    made = await finished(
        engine,
        (
            await engine.products.submit(
                {"designs": [{"source": design_png(1024)}], "product_types": ["poster"]}
            )
        ).id,
    )
    [summary] = made["products"]
    published = await finished(engine, (await engine.products.submit_publish([summary["id"]])).id)
    assert published["errors"] == []
    product = await engine.products.get(summary["id"])
    assert product.status == "published" and product.listing("storefront").status == "published"  # type: ignore[union-attr]
    assert [p.id for p in await engine.ledger.published_on("storefront")] == [product.id]
    await finished(engine, (await engine.products.submit_publish([product.id], action="unpublish")).id)
    assert await engine.ledger.published_on("storefront") == []


async def test_a_design_too_small_for_one_type_is_refused_for_it_and_the_others_are_made(
    engine: Engine,
) -> None:
    run = await engine.products.submit(
        {"designs": [{"source": design_png(300)}], "product_types": ["poster", "mug"]}
    )
    result = await finished(engine, run.id)
    assert [p["type"] for p in result["products"]] == ["mug"]
    [error] = result["errors"]
    assert "poster" in error and "300x300" in error and "5400x7200" in error and "300 DPI" in error


async def test_bad_requests_name_what_is_wrong(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="'cap' is not a product type"):
        await engine.products.submit({"designs": ["a fox"], "product_types": ["cap"]})
    with pytest.raises(InvalidInput, match="printify is not configured: set ATELIER_PRINTIFY_TOKEN"):
        await engine.products.submit(
            {"designs": ["a fox"], "product_types": ["tshirt"], "platforms": ["printify"]}
        )
    with pytest.raises(InvalidInput, match="designs"):
        await engine.products.submit({"designs": [], "product_types": ["tshirt"]})
    with pytest.raises(InvalidInput, match=r"designs\[0\].source"):
        await engine.products.submit(
            {"designs": [{"source": "data:image/png;base64,bm90IGFuIGltYWdl"}], "product_types": ["tshirt"]}
        )
    with pytest.raises(InvalidInput, match="price_cents"):
        await engine.products.submit({"designs": ["a fox"], "product_types": ["tshirt"], "price_cents": 0})
    with pytest.raises(InvalidInput, match="does not exist"):
        await engine.products.submit_publish(["prod-000000000000"])


async def test_a_malformed_catalog_file_stops_start_up_naming_the_file_and_the_problem(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text(
        json.dumps({"product_types": {"tote": {"name": "Tote", "print_areas": {"front": {"width": 10}}}}})
    )
    settings = Settings.from_env({}, home=tmp_path / "home", catalog=bad)
    with pytest.raises(InvalidInput, match=r"ATELIER_CATALOG: product type 'tote': .*catalog.json"):
        async with Engine.open(settings):
            pass
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "product_types": {
                    "tote": {
                        "name": "Tote bag",
                        "print_areas": {"front": {"width": 3000, "height": 3000, "dpi": 300}},
                        "colours": {"natural": "#efe6d2"},
                        "sizes": ["one size"],
                        "price_cents": 1899,
                    }
                }
            }
        )
    )
    async with Engine.open(
        Settings.from_env({}, home=tmp_path / "home2", catalog=good, local_step_ms=0)
    ) as engine:
        assert {"tshirt", "hoodie", "poster", "mug", "tote"} <= set(engine.products.catalog.types)
        result = await finished(
            engine,
            (
                await engine.products.submit(
                    {"designs": [{"source": design_png(800)}], "product_types": ["tote"]}
                )
            ).id,
        )
        assert [p["type"] for p in result["products"]] == ["tote"]


async def test_a_run_stopped_midway_lists_each_product_once_after_restart(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", local_step_ms=20)
    async with Engine.open(settings) as engine:
        run = await engine.products.submit(
            {
                "designs": [{"prompt": "a lighthouse", "steps": 30}],
                "product_types": ["tshirt", "mug"],
                "publish": True,
            }
        )
        with anyio.fail_after(30):  # stop while its design is being generated
            while not (await engine.list_runs(kind="image", status="running")).items:
                await anyio.sleep(0.02)
    async with Engine.open(Settings.from_env({}, home=tmp_path / "home", local_step_ms=0)) as engine:
        result = await finished(engine, run.id)
        assert len(result["products"]) == 2
        for summary in result["products"]:
            product = await engine.products.get(summary["id"])
            assert [(x.platform, x.status) for x in product.listings] == [("storefront", "published")]
        designs = (await engine.list_runs(kind="image")).items
        assert (
            len([r for r in designs if r.inputs.get("operation", "txt2img") == "txt2img"]) == 1
        )  # generated once
        assert len(await engine.products.list()) == 2


async def test_cancelling_a_products_run_cancels_the_design_it_is_waiting_for(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", local_step_ms=50)
    async with Engine.open(settings) as engine:
        run = await engine.products.submit(
            {"designs": [{"prompt": "a slow fox", "steps": 150}], "product_types": ["mug"]}
        )
        with anyio.fail_after(30):
            while not (designs := (await engine.list_runs(kind="image", status="running")).items):
                await anyio.sleep(0.02)
        await engine.cancel(run.id)
        with anyio.fail_after(30):
            while (await engine.get_run(designs[0].id)).status is not RunStatus.CANCELLED:
                await anyio.sleep(0.02)
        assert (await engine.get_run(run.id)).status is RunStatus.CANCELLED
        assert await engine.products.list() == []
