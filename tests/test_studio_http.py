"""The studio over plain HTTP: the form's refusals name their field, nothing is shown without the
token, the studio moves to /studio when a contract takes the root, thumbnails are made once and
refused for what is not a run's image, and the run actions answer with the right status.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.ids import new_run_id
from core.models import Run
from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

TOKEN = "studio-test-token-0123456789"
SECRET_PROMPT = "a secret garden only the owner may see"


async def made(served: Served, prompt: str = "a red fox", **params: object) -> Run:
    run = await served.engine.submit_image({"prompt": prompt, "width": 64, "height": 64, **params})
    return await served.finished(run.id)


async def test_the_form_names_each_bad_field_in_json_and_in_the_plain_form(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        refused = await served.http.post(
            "/api/generate", json={"prompt": "a fox", "width": "100", "steps": "many"}
        )
        assert refused.status_code == 422
        body = refused.json()
        assert body["error"] == "invalid_parameters" and body["field"] == "width"
        assert {p["field"] for p in body["problems"]} == {"width", "steps"}
        assert "multiple of 8" in body["message"]

        for fields, field in [
            ({"prompt": "   "}, "prompt"),
            ({"prompt": "a fox", "priority": "asap"}, "priority"),
            ({"prompt": "a fox", "size": "huge"}, "size"),
            ({"prompt": "a fox", "colour": "red"}, "colour"),
            ({"operation": "upscale"}, "source"),
        ]:
            answer = await served.http.post("/api/generate", json=fields)
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == field, answer.json()

        # Without the script: the form again, each message under its field and tied to it.
        page = await served.http.post("/generate", data={"prompt": "a fox", "width": "100", "height": "64"})
        assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
        assert 'id="width" name="width"' in page.text
        assert 'aria-invalid="true" aria-describedby="width-error"' in page.text
        assert '<p class="field-error" id="width-error" role="alert">must be a multiple of 8' in page.text
        assert 'value="a fox"' not in page.text  # the prompt is a textarea: kept as its text
        assert ">a fox</textarea>" in page.text
        assert await served.engine.count_runs() == 0

        made_page = await served.http.post("/generate", data={"prompt": "a fox", "size": "512x512"})
        assert made_page.status_code == 303
        run_id = made_page.headers["location"].rsplit("/", 1)[1]
        run = await served.engine.get_run(run_id)
        assert (run.inputs["width"], run.inputs["height"]) == (512, 512) and run.meta == {"door": "studio"}


async def test_without_the_token_nothing_is_shown_and_the_login_opens_the_studio(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, api_token=TOKEN) as served:
        run = await made(served, SECRET_PROMPT)
        for path in (
            "/",
            "/studio/",
            f"/runs/{run.id}",
            "/generate",
            f"/runs/{run.id}/thumbnails/image-01.png",
        ):
            for headers in ({}, {"Cookie": "atelier_session=forged"}, {"Authorization": "Bearer wrong"}):
                page = await served.http.get(path, headers=headers)
                assert page.status_code == 401, (path, headers)
                assert "Log in" in page.text and SECRET_PROMPT not in page.text
                assert "<img" not in page.text and "Inputs" not in page.text
        for method, path in [
            ("GET", "/api/runs"),
            ("GET", "/api/events"),
            ("GET", f"/api/runs/{run.id}"),
            ("POST", "/api/generate"),
            ("POST", f"/api/runs/{run.id}/cancel"),
            ("DELETE", f"/api/runs/{run.id}"),
        ]:
            refused = await served.http.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401, (method, path)
            assert refused.json()["error"] == "unauthorized" and SECRET_PROMPT not in refused.text
        assert (await served.engine.get_run(run.id)).id == run.id  # nothing was deleted

        wrong = await served.http.post("/login", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "not this server&#39;s token" in wrong.text
        logged_in = await served.http.post("/login", data={"token": TOKEN, "next": f"/runs/{run.id}"})
        assert logged_in.status_code == 303 and logged_in.headers["location"] == f"/runs/{run.id}"
        cookie = logged_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
        session = {"Cookie": cookie.split(";", 1)[0]}
        page = await served.http.get(f"/runs/{run.id}", headers=session)
        assert page.status_code == 200 and SECRET_PROMPT in page.text
        listed = await served.http.get("/api/runs", headers=session)
        assert [c["id"] for c in listed.json()["cards"]] == [run.id]
        # The bearer header opens the JSON routes too (a script of one's own).
        bearer = await served.http.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        # The session opens the studio only: the contracts still want the header.
        assert (await served.http.get("/adgen/runs", headers=session)).status_code == 401


async def test_the_studio_is_at_studio_only_when_a_contract_takes_the_root(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="pod") as served:
        run = await made(served, "a lighthouse")
        gallery = await served.http.get("/studio/")
        assert gallery.status_code == 200 and "a lighthouse" in gallery.text
        assert f'href="/studio/runs/{run.id}"' in gallery.text
        assert f"/studio/runs/{run.id}/thumbnails/image-01.png?v=" in gallery.text
        assert 'src="/studio/static/studio.js"' in gallery.text
        thumbnail = await served.http.get(f"/studio/runs/{run.id}/thumbnails/image-01.png")
        assert thumbnail.status_code == 200
        cards = (await served.http.get("/studio/api/runs")).json()["cards"]
        assert cards[0]["url"] == f"/studio/runs/{run.id}"
        root = await served.http.get("/")
        assert "Gallery" not in root.text  # the root is the pod contract's
        assert (await served.http.get(f"/runs/{run.id}")).status_code == 404
    async with atelier_http(tmp_path / "default") as served:
        # Without a root contract: at / and at /studio, each linking within itself.
        run = await made(served, "a lighthouse")
        assert f'href="/runs/{run.id}"' in (await served.http.get("/")).text
        assert f'href="/studio/runs/{run.id}"' in (await served.http.get("/studio/")).text


async def test_a_thumbnail_is_made_once_and_only_for_a_run_image(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run = await made(served, width=512, height=256)
        url = f"/runs/{run.id}/thumbnails/image-01.png"
        first = await served.http.get(url)
        assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
        assert first.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert first.headers["etag"].startswith(f'"{run.artifacts[0].sha256}')
        with Image.open(io.BytesIO(first.content)) as thumbnail:
            assert thumbnail.size == (384, 192)
        cached = list((served.settings.home / "thumbnails" / run.id).iterdir())
        assert len(cached) == 1
        made_at = cached[0].stat().st_mtime_ns

        second = await served.http.get(url)
        assert second.content == first.content and cached[0].stat().st_mtime_ns == made_at
        unchanged = await served.http.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""

        unknown = new_run_id()
        for path in [
            f"/runs/{run.id}/thumbnails/image-02.png",
            f"/runs/{run.id}/thumbnails/.image-01.png",
            f"/runs/{run.id}/thumbnails/%2e%2e%2fledger.sqlite3",
            f"/runs/{run.id}/thumbnails/image-01.png%00",
            f"/runs/{unknown}/thumbnails/image-01.png",
            "/runs/NOT-A-RUN/thumbnails/image-01.png",
            f"/runs/{run.id}/files/..%2f..%2fledger.sqlite3",
        ]:
            refused = await served.http.get(path)
            assert refused.status_code == 404, (path, refused.status_code)
            assert refused.json()["error"] == "not_found"

        # An image gone from storage has no thumbnail: a 404 that says which, not a 500.
        lost = await made(served, "a lost fox")
        path = served.engine.artifact_path(lost.artifacts[0])
        assert path is not None
        path.unlink()
        missing = await served.http.get(f"/runs/{lost.id}/thumbnails/image-01.png")
        assert missing.status_code == 404 and "image-01.png" in missing.json()["message"]

        # A deleted run's thumbnail is gone with it.
        assert (await served.http.delete(f"/api/runs/{run.id}")).status_code == 200
        assert (await served.http.get(url)).status_code == 404
        assert not (served.settings.home / "thumbnails" / run.id).exists()


async def test_run_actions_answer_the_right_status(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run = await made(served)
        cancel = await served.http.post(f"/api/runs/{run.id}/cancel")
        assert cancel.status_code == 409 and cancel.json()["error"] == "conflict"
        assert "already completed" in cancel.json()["message"]
        retry = await served.http.post(f"/api/runs/{run.id}/retry")
        assert retry.status_code == 409 and "only failed or cancelled" in retry.json()["message"]
        unknown = new_run_id()
        for method, path in [
            ("GET", f"/api/runs/{unknown}"),
            ("POST", f"/api/runs/{unknown}/cancel"),
            ("POST", f"/api/runs/{unknown}/again"),
            ("DELETE", f"/api/runs/{unknown}"),
            ("DELETE", "/api/runs/not-a-run"),
            ("GET", f"/runs/{unknown}"),
            ("GET", f"/runs/{unknown}/bundle"),
        ]:
            answer = await served.http.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
        assert (await served.http.put(f"/api/runs/{run.id}/cancel")).status_code == 405

        deleted = await served.http.delete(f"/api/runs/{run.id}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] == run.id
        gone = await served.http.get(f"/runs/{run.id}")
        # A person who follows a stale link gets a page saying so, with a way back.
        assert gone.status_code == 404 and gone.headers["content-type"].startswith("text/html")
        assert "No such run" in gone.text and 'href="/"' in gone.text


async def test_the_gallery_pages_newest_first_and_filters(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        runs = [await made(served, f"fox number {n}") for n in range(5)]
        newest_first = [run.id for run in reversed(runs)]
        seen: list[str] = []
        cursor = ""
        while True:
            page = (await served.http.get("/api/runs", params={"limit": 2, "cursor": cursor})).json()
            assert len(page["cards"]) <= 2
            seen += [card["id"] for card in page["cards"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == newest_first

        async def ids(**query: str) -> list[str]:
            answer = await served.http.get("/api/runs", params=query)
            assert answer.status_code == 200, answer.text
            return [card["id"] for card in answer.json()["cards"]]

        assert await ids(status="completed", kind="image", backend="local") == newest_first
        assert await ids(status="failed") == []
        assert await ids(backend="training") == []
        for query, field in [
            ({"status": "done"}, "status"),
            ({"kind": "video"}, "kind"),
            ({"limit": "0"}, "limit"),
        ]:
            refused = await served.http.get("/api/runs", params=query)
            assert refused.status_code == 422 and refused.json()["field"] == field
        bad_cursor = await served.http.get("/api/runs", params={"cursor": "not-ours"})
        assert bad_cursor.status_code == 422 and bad_cursor.json()["field"] == "cursor"

        page = await served.http.get("/", params={"status": "done"})
        assert page.status_code == 200 and "status: must be one of" in page.text
        assert page.text.count('class="card"') == 5
        filtered = await served.http.get("/", params={"status": "failed"})
        assert filtered.text.count('class="card"') == 0 and "No runs match these filters" in filtered.text
