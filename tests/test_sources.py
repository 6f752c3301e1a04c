"""Source images for image-to-image and upscaling: every way a request may name one, and the refusals.

Files live in temp folders; URLs are served by a real Starlette app under uvicorn on a free
loopback port. Nothing here contacts any other address: non-loopback URLs must be refused
before any network access.
"""

from __future__ import annotations

import base64
import io
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from core.errors import InvalidInput
from core.ids import new_run_id
from core.sources import LoadedImage, SourcePolicy, host_is_allowed, inspect_image, load_source
from tests.slow_http import trickling_server

pytestmark = pytest.mark.anyio

MAX_BYTES = 200_000


# --- helpers --------------------------------------------------------------------------------


def encoded(width: int, height: int, image_format: str = "PNG", *, noise: bool = False) -> bytes:
    """An image file's bytes: a two-colour picture, or noise (which compresses badly)."""
    if noise:
        image = Image.effect_noise((width, height), 80).convert("RGB")
    else:
        image = Image.new("RGB", (width, height), (200, 40, 40))
        image.paste((20, 90, 200), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.fixture
def policy(allowed: Path) -> SourcePolicy:
    return SourcePolicy(input_dirs=(allowed,), fetch_hosts=frozenset(), max_bytes=MAX_BYTES)


async def no_run_images(run_id: str, filename: str | None) -> bytes:
    raise AssertionError(f"a run image was read for {run_id}/{filename}, but none was named")


class RunImages:
    """Stands in for the engine's run store: records what was asked for, answers with one PNG."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[str, str | None]] = []

    async def __call__(self, run_id: str, filename: str | None) -> bytes:
        self.calls.append((run_id, filename))
        return self.data


async def load(value: str, policy: SourcePolicy) -> LoadedImage:
    with anyio.fail_after(10):
        return await load_source(value, policy, no_run_images)


async def refused(value: str, policy: SourcePolicy) -> str:
    """Load a source that must be refused; the problem a user is told."""
    with pytest.raises(InvalidInput) as raised, anyio.fail_after(10):
        await load_source(value, policy, no_run_images)
    assert raised.value.field == "source"
    assert str(raised.value).startswith("source: ")
    return raised.value.problem


# --- base64 ---------------------------------------------------------------------------------


async def test_bare_base64_png_loads_with_its_size(policy: SourcePolicy) -> None:
    data = encoded(48, 32)
    loaded = await load(b64(data), policy)
    assert loaded.data == data
    assert (loaded.media_type, loaded.width, loaded.height, loaded.origin) == ("image/png", 48, 32, "base64")


async def test_a_data_url_loads(policy: SourcePolicy) -> None:
    data = encoded(40, 24)
    loaded = await load(f"data:image/png;base64,{b64(data)}", policy)
    assert loaded.data == data
    assert (loaded.width, loaded.height) == (40, 24)


async def test_base64_wrapped_over_lines_loads(policy: SourcePolicy) -> None:
    data = encoded(64, 64, noise=True)
    wrapped = base64.encodebytes(data).decode()
    assert "\n" in wrapped.strip()
    assert (await load(wrapped, policy)).data == data


async def test_base64_jpeg_starting_like_a_path_loads_as_a_jpeg(policy: SourcePolicy) -> None:
    data = encoded(32, 32, "JPEG", noise=True)
    value = b64(data)
    assert value.startswith("/9j/")
    loaded = await load(value, policy)
    assert loaded.data == data
    assert (loaded.media_type, loaded.width, loaded.height) == ("image/jpeg", 32, 32)


async def test_webp_data_url_loads(policy: SourcePolicy) -> None:
    loaded = await load(f"data:image/webp;base64,{b64(encoded(20, 30, 'WEBP'))}", policy)
    assert (loaded.media_type, loaded.width, loaded.height) == ("image/webp", 20, 30)


async def test_bytes_that_are_not_an_image_are_refused(policy: SourcePolicy) -> None:
    problem = await refused(b64(b"these are certainly not the pixels you are looking for " * 10), policy)
    assert problem == "is not a readable image (PNG, JPEG or WebP expected)"


async def test_a_gif_is_refused_naming_the_accepted_formats(policy: SourcePolicy) -> None:
    problem = await refused(b64(encoded(32, 32, "GIF")), policy)
    assert "GIF" in problem
    assert "PNG, JPEG or WebP expected" in problem


async def test_a_data_url_that_is_not_base64_is_refused(policy: SourcePolicy) -> None:
    problem = await refused("data:image/svg+xml,<svg></svg>", policy)
    assert "base64" in problem


async def test_base64_over_the_size_limit_is_refused_naming_the_limit(allowed: Path) -> None:
    small = SourcePolicy(input_dirs=(allowed,), fetch_hosts=frozenset(), max_bytes=2_000)
    data = encoded(64, 64, noise=True)
    assert len(data) > 2_000
    assert "2,000" in await refused(b64(data), small)
    # Just over the limit: decoded first, then refused by its byte count.
    just_over = data[:2_001]
    assert "2,000" in await refused(b64(just_over), small)


@pytest.mark.parametrize(("width", "height"), [(8, 8), (5000, 10), (4100, 16), (16, 4097)])
async def test_images_too_small_or_too_big_are_refused_with_their_size(
    policy: SourcePolicy, width: int, height: int
) -> None:
    problem = await refused(b64(encoded(width, height)), policy)
    assert f"is {width}x{height}" in problem
    assert "16..4096" in problem


def test_inspect_image_names_the_byte_limit_and_its_setting() -> None:
    data = encoded(64, 64, noise=True)
    with pytest.raises(InvalidInput) as raised:
        inspect_image(data, 1_000)
    assert raised.value.field == "source"
    assert "1,000" in raised.value.problem
    assert "ATELIER_MAX_INPUT_BYTES" in raised.value.problem
    assert inspect_image(data, len(data)).width == 64


def test_a_truncated_jpeg_is_refused() -> None:
    data = encoded(64, 64, "JPEG", noise=True)
    with pytest.raises(InvalidInput) as raised:
        inspect_image(data[: len(data) // 2], MAX_BYTES)
    assert raised.value.field == "source"


# --- files ----------------------------------------------------------------------------------


async def test_a_file_inside_an_allowed_folder_loads(policy: SourcePolicy, allowed: Path) -> None:
    data = encoded(50, 40)
    path = allowed / "nested" / "fox.png"
    path.parent.mkdir()
    path.write_bytes(data)
    loaded = await load(str(path), policy)
    assert loaded.data == data
    assert (loaded.width, loaded.height, loaded.origin) == (50, 40, str(path))


async def test_a_file_outside_the_allowed_folders_is_refused_naming_the_setting(
    policy: SourcePolicy, allowed: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "fox.png"
    outside.parent.mkdir()
    outside.write_bytes(encoded(32, 32))
    problem = await refused(str(outside), policy)
    assert "outside the folders" in problem
    assert str(allowed) in problem
    assert "ATELIER_INPUT_DIRS" in problem


async def test_a_system_file_is_refused_naming_the_setting(policy: SourcePolicy) -> None:
    system_file = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path("/etc/passwd")
    problem = await refused(str(system_file), policy)
    assert "ATELIER_INPUT_DIRS" in problem
    assert "root:" not in problem


async def test_a_symlink_inside_the_allowed_folder_pointing_outside_is_refused(
    policy: SourcePolicy, allowed: Path, tmp_path: Path
) -> None:
    target = tmp_path / "secret.png"
    target.write_bytes(encoded(32, 32))
    link = allowed / "innocent.png"
    link.symlink_to(target)
    assert "ATELIER_INPUT_DIRS" in await refused(str(link), policy)
    folder_link = allowed / "linked-folder"
    folder_link.symlink_to(tmp_path, target_is_directory=True)
    assert "ATELIER_INPUT_DIRS" in await refused(str(folder_link / "secret.png"), policy)


async def test_dot_dot_out_of_the_allowed_folder_is_refused(
    policy: SourcePolicy, allowed: Path, tmp_path: Path
) -> None:
    (tmp_path / "escaped.png").write_bytes(encoded(32, 32))
    assert "ATELIER_INPUT_DIRS" in await refused(f"{allowed}/../escaped.png", policy)
    assert "ATELIER_INPUT_DIRS" in await refused("../escaped.png", policy)
    assert "ATELIER_INPUT_DIRS" in await refused("nested/../../escaped.png", policy)


async def test_a_relative_path_starts_at_the_first_allowed_folder(
    policy: SourcePolicy, allowed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (allowed / "harbour").mkdir()
    (allowed / "harbour" / "dusk.png").write_bytes(encoded(40, 24))
    (allowed / "fox.png").write_bytes(encoded(32, 48))
    # The process's working directory plays no part, even when it holds a file of that name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fox.png").write_bytes(encoded(64, 64))
    for value, size in (("harbour/dusk.png", (40, 24)), ("fox.png", (32, 48)), ("./fox.png", (32, 48))):
        loaded = await load(value, policy)
        assert ((loaded.width, loaded.height), loaded.origin) == (size, value)


async def test_a_path_really_outside_is_refused_listing_every_allowed_folder(
    allowed: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    both = SourcePolicy(input_dirs=(allowed, photos), fetch_hosts=frozenset(), max_bytes=MAX_BYTES)
    (tmp_path / "stray.png").write_bytes(encoded(32, 32))
    for value in ("../stray.png", str(tmp_path / "stray.png")):
        problem = await refused(value, both)
        assert f"outside the folders tools may read: {allowed}, {photos}" in problem
        assert f"a relative path starts at {allowed}" in problem
        assert "ATELIER_INPUT_DIRS" in problem


@pytest.mark.parametrize(
    ("value", "said"),
    [
        pytest.param("fox\0.png", "NUL byte", id="nul-relative"),
        pytest.param("/tmp/fox\0.png", "NUL byte", id="nul-absolute"),
        pytest.param("~nosuchuser/x.png", "home folder of 'nosuchuser', which is unknown", id="unknown-user"),
        pytest.param("~nosuchuser", "", id="unknown-user-bare"),
        pytest.param("~atelier-nobody-9f3/inputs/x.png", "'atelier-nobody-9f3'", id="unknown-user-deep"),
        pytest.param("deep.dir/" * 600 + "fox.png", "", id="path-too-long"),
        pytest.param("a/" + "b" * 300 + ".png", "", id="name-too-long"),
    ],
)
async def test_paths_the_system_cannot_take_are_named_input_errors(
    policy: SourcePolicy, value: str, said: str
) -> None:
    problem = await refused(value, policy)
    assert said in problem
    assert problem.strip() and "Traceback" not in problem


async def test_home_folder_paths_expand_for_a_known_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "fox.png").write_bytes(encoded(32, 32))
    home_policy = SourcePolicy(
        input_dirs=(tmp_path / "inputs",), fetch_hosts=frozenset(), max_bytes=MAX_BYTES
    )
    assert (await load("~/inputs/fox.png", home_policy)).width == 32
    assert "outside the folders" in await refused("~/elsewhere.png", home_policy)


async def test_a_symlink_loop_in_the_allowed_folder_is_a_named_error(
    policy: SourcePolicy, allowed: Path
) -> None:
    (allowed / "loop.png").symlink_to(allowed / "loop.png")
    assert "loop.png" in await refused(str(allowed / "loop.png"), policy)
    assert "loop.png" in await refused("loop.png", policy)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
async def test_an_unreadable_file_in_the_allowed_folder_is_a_named_error(
    policy: SourcePolicy, allowed: Path
) -> None:
    locked = allowed / "locked.png"
    locked.write_bytes(encoded(32, 32))
    locked.chmod(0)
    assert "Permission denied" in await refused(str(locked), policy)


async def test_a_missing_file_in_the_allowed_folder_is_reported(policy: SourcePolicy, allowed: Path) -> None:
    problem = await refused(str(allowed / "nope.png"), policy)
    assert "does not exist" in problem
    assert "nope.png" in problem


async def test_a_folder_is_not_a_source(policy: SourcePolicy, allowed: Path) -> None:
    (allowed / "album.d").mkdir()
    assert "is not a file" in await refused(str(allowed / "album.d"), policy)


async def test_a_file_over_the_size_limit_is_refused_naming_the_limit(allowed: Path) -> None:
    small = SourcePolicy(input_dirs=(allowed,), fetch_hosts=frozenset(), max_bytes=2_000)
    path = allowed / "big.png"
    path.write_bytes(encoded(64, 64, noise=True))
    assert "2,000" in await refused(str(path), small)


async def test_refusals_outside_the_allowed_folders_do_not_tell_whether_a_file_exists(
    policy: SourcePolicy, tmp_path: Path
) -> None:
    present = tmp_path / "present.png"
    present.write_bytes(encoded(32, 32))
    assert "ATELIER_INPUT_DIRS" in await refused(str(present), policy)
    assert "ATELIER_INPUT_DIRS" in await refused(str(tmp_path / "absent.png"), policy)


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.com/x.png", "example.com"),
        ("https://images.example.org/fox.webp", "images.example.org"),
        ("http://127.0.0.1@example.com/x.png", "example.com"),
        ("http://0.0.0.0:8188/view?filename=x.png", "0.0.0.0"),
    ],
)
async def test_a_url_off_loopback_is_refused_before_any_request(
    policy: SourcePolicy, url: str, host: str
) -> None:
    with anyio.fail_after(1):  # a refusal, not a connection attempt that timed out
        problem = await refused(url, policy)
    assert f"'{host}'" in problem
    assert "ATELIER_FETCH_HOSTS" in problem


def test_loopback_is_always_allowed_and_other_hosts_only_when_listed() -> None:
    listed = frozenset({"images.example.com"})
    for host in ("127.0.0.1", "127.9.8.7", "localhost", "LOCALHOST", "::1", "[::1]"):
        assert host_is_allowed(host, frozenset()), host
    assert host_is_allowed("images.example.com", listed)
    for host in ("example.com", "cdn.images.example.com", "localhost.example.com", "0.0.0.0", "10.0.0.1"):
        assert not host_is_allowed(host, listed), host


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    """A real HTTP server on a free loopback port; its base URL."""
    fox = encoded(72, 40)

    async def fox_png(request: Request) -> Response:
        return Response(fox, media_type="image/png")

    async def missing(request: Request) -> Response:
        return Response("no such picture", status_code=404)

    async def moved(request: Request) -> Response:
        return RedirectResponse("/fox.png", status_code=302)

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            while True:  # a body that never ends: only a reader that stops in time finishes
                yield b"\0" * 16_384
                await anyio.sleep(0)

        return StreamingResponse(chunks(), media_type="image/png")

    app = Starlette(
        routes=[
            Route("/fox.png", fox_png),
            Route("/missing.png", missing),
            Route("/moved.png", moved),
            Route("/endless.png", endless),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(5):
            while not server.started:
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
    sock.close()


async def test_an_image_served_on_loopback_loads(policy: SourcePolicy, image_server: str) -> None:
    loaded = await load(f"{image_server}/fox.png", policy)
    assert (loaded.media_type, loaded.width, loaded.height) == ("image/png", 72, 40)
    assert loaded.data == encoded(72, 40)
    assert loaded.origin == f"{image_server}/fox.png"


async def test_a_404_names_the_status(policy: SourcePolicy, image_server: str) -> None:
    problem = await refused(f"{image_server}/missing.png", policy)
    assert "404" in problem
    assert f"{image_server}/missing.png" in problem


async def test_redirects_are_not_followed(policy: SourcePolicy, image_server: str) -> None:
    assert "302" in await refused(f"{image_server}/moved.png", policy)


async def test_an_endless_body_is_cut_off_at_the_limit(allowed: Path, image_server: str) -> None:
    small = SourcePolicy(input_dirs=(allowed,), fetch_hosts=frozenset(), max_bytes=100_000)
    with anyio.fail_after(5):
        problem = await refused(f"{image_server}/endless.png", small)
    assert "100,000" in problem


async def test_a_url_that_trickles_fails_at_the_fetch_deadline_naming_it(allowed: Path) -> None:
    # Each byte comes well within httpx's per-read timeout: only a deadline on the whole fetch stops it.
    hurried = SourcePolicy(
        input_dirs=(allowed,), fetch_hosts=frozenset(), max_bytes=MAX_BYTES, fetch_timeout_s=1.5
    )
    with trickling_server(interval=0.2) as trickle:
        started = anyio.current_time()
        with anyio.fail_after(10):
            problem = await refused(trickle.url, hurried)
        took = anyio.current_time() - started
        assert trickle.closed.acquire(timeout=5)  # the connection was let go
    assert problem == f"the URL {trickle.url} did not answer in full within 1.5 s (ATELIER_FETCH_TIMEOUT_S)"
    assert 1.4 < took < 5


async def test_a_closed_loopback_port_is_reported_as_unreachable(policy: SourcePolicy) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    problem = await refused(f"http://127.0.0.1:{port}/fox.png", policy)
    assert "could not fetch" in problem


async def test_a_malformed_loopback_url_is_refused_naming_source(policy: SourcePolicy) -> None:
    await refused("http://127.0.0.1:abc/fox.png", policy)


# --- run references -------------------------------------------------------------------------


async def test_run_references_ask_for_the_right_run_image(policy: SourcePolicy) -> None:
    run_id = new_run_id()
    runs = RunImages(encoded(96, 64))
    cases = [
        (
            f"atelier://runs/{run_id}/images/image-02.png",
            (run_id, "image-02.png"),
            f"atelier://runs/{run_id}/images/image-02.png",
        ),
        (f"{run_id}/image-01.png", (run_id, "image-01.png"), f"atelier://runs/{run_id}/images/image-01.png"),
        (
            f"{run_id}/images/image-03.png",
            (run_id, "image-03.png"),
            f"atelier://runs/{run_id}/images/image-03.png",
        ),
        (run_id, (run_id, None), f"atelier://runs/{run_id}"),
        (f"atelier://runs/{run_id}", (run_id, None), f"atelier://runs/{run_id}"),
    ]
    for value, call, origin in cases:
        with anyio.fail_after(5):
            loaded = await load_source(value, policy, runs)
        assert runs.calls[-1] == call, value
        assert (loaded.width, loaded.height, loaded.origin) == (96, 64, origin)
    assert len(runs.calls) == len(cases)


async def test_a_run_reference_with_a_bad_file_name_is_refused_unread(policy: SourcePolicy) -> None:
    run_id = new_run_id()
    runs = RunImages(encoded(32, 32))
    for value in (f"{run_id}/..", f"atelier://runs/{run_id}/images/.hidden"):
        with pytest.raises(InvalidInput) as raised:
            await load_source(value, policy, runs)
        assert raised.value.field == "source"
    assert runs.calls == []


async def test_what_the_run_store_refuses_is_passed_on(policy: SourcePolicy) -> None:
    async def gone(run_id: str, filename: str | None) -> bytes:
        raise InvalidInput("source", f"run {run_id!r} does not exist (it may have been deleted)")

    run_id = new_run_id()
    with pytest.raises(InvalidInput) as raised:
        await load_source(run_id, policy, gone)
    assert run_id in raised.value.problem


@pytest.mark.parametrize("value", ["", "   ", "a picture of a fox, please!"])
async def test_values_that_name_no_source_say_what_is_expected(policy: SourcePolicy, value: str) -> None:
    problem = await refused(value, policy)
    assert "file path" in problem
    assert "base64" in problem
