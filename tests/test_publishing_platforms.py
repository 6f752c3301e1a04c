"""Publishing to Printify and Shopify through the engine, against their fakes as real servers:
products created and published on each, one platform failing while the others keep theirs, a
wrong token refused without a retry storm, a lost answer never making a second product, a
`kill -9` mid-publish, and the tokens never showing anywhere."""

from __future__ import annotations

import base64
import io
import logging
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from core.engine import Engine
from core.models import RunStatus
from core.settings import Settings
from tests.fakes.printify import FakePrintify, serve_printify
from tests.fakes.shopify import FakeShopify, serve_fake
from tests.procs import atelier_command, atelier_env, free_port

pytestmark = pytest.mark.anyio

PRINTIFY_TOKEN = "pfy-SECRET-7f3a9c1e2b"
SHOPIFY_TOKEN = "shpat_SECRET_55e1d0c9a7"


def design() -> str:
    image = Image.new("RGB", (1024, 1024), (20, 90, 160))
    image.paste((250, 210, 60), (256, 256, 768, 768))
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@asynccontextmanager
async def platforms(
    **printify_options: Any,
) -> AsyncIterator[tuple[FakePrintify, FakeShopify, dict[str, str]]]:
    printify = FakePrintify(token=PRINTIFY_TOKEN, **printify_options)
    shopify = FakeShopify(access_tokens=(SHOPIFY_TOKEN,))
    async with serve_printify(printify) as printify_url, serve_fake(shopify) as shopify_url:
        yield (
            printify,
            shopify,
            {
                "ATELIER_ENABLED_PLATFORMS": "storefront,printify,shopify",
                "ATELIER_PRINTIFY_URL": printify_url,
                "ATELIER_PRINTIFY_TOKEN": PRINTIFY_TOKEN,
                "ATELIER_PRINTIFY_SHOP_ID": str(next(iter(printify.shops))),
                "ATELIER_SHOPIFY_STORE": shopify.store,
                "ATELIER_SHOPIFY_URL": shopify_url,
                "ATELIER_SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN,
            },
        )


def settings_of(tmp_path: Path, env: dict[str, str], **overrides: Any) -> Settings:
    return Settings.from_env(env, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01, **overrides)


async def made(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    run = await engine.wait((await engine.products.submit(request)).id, timeout_s=120)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.result is not None
    return run.result


def by_platform(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for product in result["products"]:
        for listing in product["listings"]:
            found.setdefault(listing["platform"], []).append(listing)
    return found


async def test_products_are_created_and_published_on_every_platform(tmp_path: Path) -> None:
    async with platforms() as (printify, shopify, env), Engine.open(settings_of(tmp_path, env)) as engine:
        result = await made(
            engine,
            {"designs": [{"source": design()}], "product_types": ["tshirt", "hoodie"], "publish": True},
        )
        assert result["errors"] == []
        listings = by_platform(result)
        for platform in ("storefront", "printify", "shopify"):
            assert [x["status"] for x in listings[platform]] == ["published", "published"], platform
            assert all(x["external_id"] and x["url"] for x in listings[platform])
        held = printify.shop_products()
        assert sorted(p["blueprint_id"] for p in held) == [12, 77]
        assert all(any(tag.startswith("atelier:prod-") for tag in p["tags"]) for p in held)
        assert sorted(p.status for p in shopify.products.values()) == ["ACTIVE", "ACTIVE"]
        health = await engine.products.platform_health()
        assert health["printify"]["ok"] and health["shopify"]["ok"] and health["storefront"]["ok"]


async def test_one_platform_down_keeps_the_others_products_and_names_the_failure(tmp_path: Path) -> None:
    async with platforms() as (printify, shopify, env):
        shopify.fail_next(1000, 503)
        async with Engine.open(settings_of(tmp_path, env, max_attempts=2)) as engine:
            result = await made(
                engine, {"designs": [{"source": design()}], "product_types": ["tshirt"], "publish": True}
            )
    listings = by_platform(result)
    assert (
        listings["printify"][0]["status"] == "published"
        and listings["storefront"][0]["status"] == "published"
    )
    assert listings["shopify"][0]["status"] == "failed"
    assert len(result["errors"]) == 1 and result["errors"][0].startswith("shopify: ")
    assert len(printify.shop_products()) == 1  # the retried attempt did not make a second one


async def test_a_wrong_token_is_a_clear_error_without_a_retry_storm(tmp_path: Path) -> None:
    async with platforms() as (printify, _, env):
        env = {
            **env,
            "ATELIER_PRINTIFY_TOKEN": "not-the-token",
            "ATELIER_ENABLED_PLATFORMS": "storefront,printify",
        }
        async with Engine.open(settings_of(tmp_path, env, max_attempts=3)) as engine:
            result = await made(
                engine, {"designs": [{"source": design()}], "product_types": ["tshirt"], "publish": True}
            )
    assert by_platform(result)["storefront"][0]["status"] == "published"
    [error] = result["errors"]
    assert "printify" in error and "ATELIER_PRINTIFY_TOKEN" in error
    assert len(printify.requests) <= 2 and printify.shop_products() == []


async def test_a_lost_answer_never_makes_a_second_product(tmp_path: Path) -> None:
    async with platforms() as (printify, _, env):
        printify.lose_next_answer("/products.json")
        env = {**env, "ATELIER_ENABLED_PLATFORMS": "printify"}
        async with Engine.open(settings_of(tmp_path, env)) as engine:
            result = await made(
                engine, {"designs": [{"source": design()}], "product_types": ["mug"], "publish": True}
            )
    assert result["errors"] == []
    assert len(printify.shop_products()) == 1


async def test_tokens_never_show_in_logs_ledger_results_or_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with platforms() as (printify, shopify, env):
        shopify.fail_next(2, 503)
        printify.rate_limit_next(1, 0.05)
        settings = settings_of(tmp_path, env, max_attempts=2)
        async with Engine.open(settings) as engine:
            result = await made(
                engine, {"designs": [{"source": design()}], "product_types": ["tshirt"], "publish": True}
            )
            status = await engine.status()
            health = await engine.products.platform_health()
            import httpx

            from http_compat.app import build_app

            transport = httpx.ASGITransport(app=build_app(engine, settings))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                documents = [
                    (await http.get(f"/{prefix}/openapi.json")).text
                    for prefix in ("pod", "isengard", "shop", "adgen")
                ]
                pod_health = (await http.get("/pod/health")).text
    shown = [repr(result), repr(status), repr(health), pod_health, *documents, repr(settings)]
    shown += [record.getMessage() for record in caplog.records]
    for path in (settings.home / "ledger.sqlite3", settings.home / "ledger.sqlite3-wal"):
        if path.exists():
            shown.append(path.read_bytes().decode("latin-1"))
    for secret in (PRINTIFY_TOKEN, SHOPIFY_TOKEN, "SECRET"):
        assert not any(secret in text for text in shown), secret


async def test_kill_9_mid_publish_then_restart_leaves_one_product_per_design_and_type(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with platforms(latency_s=0.15) as (printify, shopify, env):
        port = free_port()
        command = [*atelier_command(), "serve", "--port", str(port)]
        server_env = atelier_env(home, **env, ATELIER_LOCAL_STEP_MS="0")
        first = subprocess.Popen(
            command, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            client = Settings.from_env(env, home=home)
            async with Engine.open(client, role="client") as engine:
                run = await engine.products.submit(
                    {
                        "designs": [{"source": design()}],
                        "product_types": ["tshirt", "hoodie"],
                        "publish": True,
                    }
                )
            with anyio.fail_after(60):  # the first product exists on Printify; the rest is under way
                while not printify.shop_products():
                    await anyio.sleep(0.02)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        second = subprocess.Popen(
            command, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            async with Engine.open(client, role="client") as engine:
                done = await engine.wait(run.id, timeout_s=120)
        finally:
            second.terminate()
            second.wait(10)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.result is not None and done.result["errors"] == []
    assert sorted(p["blueprint_id"] for p in printify.shop_products()) == [12, 77]
    assert len(shopify.products) == 2
    conn = sqlite3.connect(home / "ledger.sqlite3")
    try:
        rows = conn.execute(
            "SELECT platform, status, COUNT(*) FROM listings GROUP BY platform, status"
        ).fetchall()
    finally:
        conn.close()
    assert sorted(rows) == [
        ("printify", "published", 2),
        ("shopify", "published", 2),
        ("storefront", "published", 2),
    ]
    assert os.path.exists(home)
