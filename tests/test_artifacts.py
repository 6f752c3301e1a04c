"""The artifact port, on both adapters: files under a folder, and objects in an S3-compatible bucket
served by a real moto server process on 127.0.0.1 (see tests/s3_server.py).

Each behaviour is checked on both stores; then what only S3 has (an endpoint that is down, a
missing bucket) and, end to end, a run whose image goes to the bucket, is served by a contract
and is gone from the bucket once the run is deleted.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image

from core.artifacts import ArtifactStore, input_key, run_key, run_prefix
from core.artifacts.filesystem import FilesystemStore
from core.artifacts.s3 import S3Store
from core.errors import InvalidInput
from core.factory import make_store
from core.settings import Settings
from tests.http_served import atelier_http
from tests.procs import free_port, serve
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, moto_server

pytestmark = pytest.mark.anyio

RUN = "01JTESTRUN0000000000000000"
OTHER = "01JTESTRUN0000000000000001"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


def s3_store(s3: S3Server, bucket: str | None = None, *, url: str | None = None) -> S3Store:
    return S3Store(
        url=url or s3.url,
        bucket=bucket or s3.new_bucket(),
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        prefix="atelier",
    )


@pytest.fixture(params=["filesystem", "filesystem-slow-disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "artifacts")
    if request.param == "filesystem-slow-disk":
        # Every write counted slow: small files go through the worker thread, as on a slow disk.
        return FilesystemStore(tmp_path / "artifacts", slow_write_s=0.0)
    return s3_store(request.getfixturevalue("s3"))


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await anyio.sleep(0)


async def streamed(store: ArtifactStore, key: str) -> tuple[int, list[bytes]]:
    opened = await store.stream(key)
    return opened.size, [chunk async for chunk in opened]


def no_secret_in(*texts: object) -> None:
    for text in texts:
        assert SECRET_ACCESS_KEY not in str(text)


# -- both stores ---------------------------------------------------------------------------------


async def test_a_file_put_is_read_back_listed_and_located(store: ArtifactStore) -> None:
    await store.put(run_key(RUN, "image-01.png"), b"\x89PNG first")
    await store.put(run_key(RUN, "image-02.png"), b"\x89PNG second")
    await store.put(input_key("ab" * 32, "image/png"), b"source")

    assert await store.read(run_key(RUN, "image-01.png")) == b"\x89PNG first"
    assert await store.read(input_key("ab" * 32, "image/png")) == b"source"
    assert await store.list_prefix(run_prefix(RUN)) == [
        run_key(RUN, "image-01.png"),
        run_key(RUN, "image-02.png"),
    ]
    assert await store.signed_url(run_key(RUN, "image-01.png")) is None  # none unless asked for
    location = store.location(run_key(RUN, "image-01.png"))
    if isinstance(store, S3Store):
        assert location == f"s3://{store.bucket}/atelier/runs/{RUN}/image-01.png"
        assert store.local_path(run_key(RUN, "image-01.png")) is None
    else:
        assert location == str(store.local_path(run_key(RUN, "image-01.png")))
        assert Path(location).read_bytes() == b"\x89PNG first"


async def test_a_big_file_streams_out_in_chunks_with_its_size_known_first(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    await store.put(run_key(RUN, "big.png"), data)
    size, chunks = await streamed(store, run_key(RUN, "big.png"))
    assert size == len(data)
    assert len(chunks) > 1 and max(len(c) for c in chunks) < len(data)
    assert b"".join(chunks) == data


async def test_a_streamed_upload_is_stored_whole_without_being_held(store: ArtifactStore) -> None:
    # 12 MiB in 1 MiB chunks: on S3 a multipart upload (parts of 5 MiB and more).
    data = b"".join(bytes([n]) * (1024 * 1024) for n in range(12))
    written = await store.put_stream(run_key(RUN, "lora.safetensors"), chunks_of(data, 1024 * 1024))
    assert written == len(data)
    assert await store.read(run_key(RUN, "lora.safetensors")) == data
    assert await store.list_prefix(run_prefix(RUN)) == [run_key(RUN, "lora.safetensors")]


async def test_a_failed_streamed_upload_leaves_no_file(store: ArtifactStore) -> None:
    async def breaks_halfway() -> AsyncIterator[bytes]:
        yield b"x" * (6 * 1024 * 1024)
        raise OSError("the source went away")

    with pytest.raises(OSError):
        await store.put_stream(run_key(RUN, "half.bin"), breaks_halfway())
    assert await store.list_prefix(run_prefix(RUN)) == []
    with pytest.raises(FileNotFoundError):
        await store.read(run_key(RUN, "half.bin"))


async def test_an_overwrite_is_seen_whole_or_not_at_all(store: ArtifactStore) -> None:
    key = run_key(RUN, "image-01.png")
    old, new = b"A" * 512 * 1024, b"B" * 512 * 1024
    await store.put(key, old)
    seen: list[bytes] = []

    async def keep_reading() -> None:
        for _ in range(15):
            seen.append(await store.read(key))

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_reading)
        for _ in range(5):
            await store.put(key, new)
            await store.put(key, old)
        await store.put(key, new)
    assert all(data in (old, new) for data in seen)  # never half of one and half of the other
    assert await store.read(key) == new


async def test_a_missing_file_is_file_not_found_on_read_and_stream(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError) as read_error:
        await store.read(run_key(RUN, "image-09.png"))
    with pytest.raises(FileNotFoundError):
        await store.stream(run_key(RUN, "image-09.png"))
    assert await store.list_prefix(run_prefix(RUN)) == []
    await store.delete_prefix(run_prefix(RUN))  # nothing there: nothing to do, no error
    no_secret_in(read_error.value)


async def test_delete_prefix_removes_one_runs_files_only(store: ArtifactStore) -> None:
    await store.put(run_key(RUN, "image-01.png"), b"1")
    await store.put(run_key(RUN, "image-02.png"), b"2")
    await store.put(run_key(OTHER, "image-01.png"), b"other")
    # A run id that the first one is a prefix of, as strings: not the same folder.
    await store.put(f"runs/{RUN}X/image-01.png", b"longer id")

    await store.delete_prefix(run_prefix(RUN))

    assert await store.list_prefix(run_prefix(RUN)) == []
    with pytest.raises(FileNotFoundError):
        await store.read(run_key(RUN, "image-01.png"))
    assert await store.read(run_key(OTHER, "image-01.png")) == b"other"
    assert await store.read(f"runs/{RUN}X/image-01.png") == b"longer id"


async def test_list_prefix_lists_the_files_of_the_folder_itself(store: ArtifactStore) -> None:
    await store.put(run_key(RUN, "b.png"), b"b")
    await store.put(run_key(RUN, "a.png"), b"a")
    await store.put(f"runs/{RUN}/sub/c.png", b"c")
    assert await store.list_prefix(run_prefix(RUN)) == [run_key(RUN, "a.png"), run_key(RUN, "b.png")]


@pytest.mark.parametrize("key", ["/etc/passwd", "runs/../../x", "runs//x", "runs/./x", "runs\\x"])
async def test_a_key_that_leaves_the_store_is_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError, match="leaves the artifact root"):
        await store.put(key, b"x")


async def test_health_is_ok_and_shows_no_secret(store: ArtifactStore, request: pytest.FixtureRequest) -> None:
    health = await store.health()
    assert health["ok"] is True and health["error"] is None
    no_secret_in(json.dumps(health), repr(store))
    if isinstance(store, S3Store):
        assert (health["kind"], health["bucket"], health["endpoint"]) == ("s3", store.bucket, store.url)
        # The probe cleans up after itself.
        assert request.getfixturevalue("s3").keys(store.bucket) == []


# -- S3 only -------------------------------------------------------------------------------------


async def test_health_reports_an_endpoint_that_is_down_quickly_without_raising(s3: S3Server) -> None:
    down = s3_store(s3, "atelier-down", url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    health = await down.health()
    assert time.monotonic() - started < 5
    assert health["ok"] is False
    assert str(health["error"]).startswith(
        f"bucket 'atelier-down' at {down.url}: cannot write: the endpoint cannot be reached"
    )
    no_secret_in(json.dumps(health))
    # Asked again at once: the same answer, without a second probe's wait.
    started = time.monotonic()
    assert await down.health() == health
    assert time.monotonic() - started < 0.1


async def test_writes_to_an_endpoint_that_is_down_fail_as_storage_errors(s3: S3Server) -> None:
    down = s3_store(s3, "atelier-down", url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OSError) as error:
        await down.put(run_key(RUN, "image-01.png"), b"x")
    assert not isinstance(error.value, FileNotFoundError)
    assert error.value.filename == run_key(RUN, "image-01.png")
    assert "cannot write: the endpoint cannot be reached" in str(error.value)
    no_secret_in(error.value)


async def test_health_names_a_missing_bucket(s3: S3Server) -> None:
    health = await s3_store(s3, "no-such-bucket").health()
    assert health["ok"] is False
    assert "NoSuchBucket" in str(health["error"])


async def test_the_prefix_keeps_installs_apart_in_one_bucket(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    ours = s3_store(s3, bucket)
    await ours.put(run_key(RUN, "image-01.png"), b"ours")
    assert s3.keys(bucket) == [f"atelier/runs/{RUN}/image-01.png"]
    assert s3.get(bucket, f"atelier/runs/{RUN}/image-01.png") == b"ours"


async def test_a_presigned_url_serves_the_object_from_the_bucket_itself(s3: S3Server) -> None:
    store = S3Store(
        url=s3.url,
        bucket=s3.new_bucket(),
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        prefix="atelier",
        presign_s=120,
    )
    await store.put(run_key(RUN, "image-01.png"), b"\x89PNG signed")
    url = await store.signed_url(run_key(RUN, "image-01.png"))
    assert url is not None and url.startswith(f"{s3.url}/{store.bucket}/atelier/runs/{RUN}/image-01.png?")
    assert "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url
    no_secret_in(url)
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"\x89PNG signed"


# -- settings ------------------------------------------------------------------------------------


def test_the_filesystem_stays_the_default_and_obstore_is_not_even_imported(tmp_path: Path) -> None:
    script = (
        "import sys; from core.factory import make_store; from core.settings import Settings; "
        f"store = make_store(Settings.from_env({{}}, home={str(tmp_path)!r})); "
        "print(type(store).__name__, 'obstore' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["FilesystemStore", "False"]


def test_s3_settings_choose_the_s3_store(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ATELIER_S3_URL": "http://127.0.0.1:9000/",
            "ATELIER_S3_BUCKET": "atelier",
            "ATELIER_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "ATELIER_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "ATELIER_S3_PREFIX": "studio-a/",
        },
        home=tmp_path,
    )
    store = make_store(settings)
    assert isinstance(store, S3Store)
    assert (store.url, store.bucket, store.prefix) == ("http://127.0.0.1:9000", "atelier", "studio-a")
    no_secret_in(repr(store), repr(settings))


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"ATELIER_S3_URL": "http://127.0.0.1:9000"}, "ATELIER_S3_BUCKET"),
        ({"ATELIER_S3_URL": f"http://key:{SECRET_ACCESS_KEY}@127.0.0.1:9000"}, "not in the URL"),
        ({"ATELIER_S3_URL": "ftp://127.0.0.1:9000", "ATELIER_S3_BUCKET": "atelier"}, "ATELIER_S3_URL"),
        (
            {
                "ATELIER_S3_URL": "http://127.0.0.1:9000",
                "ATELIER_S3_BUCKET": "atelier",
                "ATELIER_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            },
            "set both",
        ),
    ],
)
def test_incomplete_or_unsafe_s3_settings_are_refused_without_echoing_a_secret(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.from_env(environ)
    assert problem in str(refused.value)
    no_secret_in(refused.value)


# -- end to end ----------------------------------------------------------------------------------


def s3_settings(s3: S3Server, bucket: str) -> dict[str, str]:
    return {
        "s3_url": s3.url,
        "s3_bucket": bucket,
        "s3_access_key_id": ACCESS_KEY_ID,
        "s3_secret_access_key": SECRET_ACCESS_KEY,
        "s3_prefix": "studio-a",
    }


async def test_a_run_on_s3_is_served_by_a_contract_and_deleting_it_empties_the_bucket(
    tmp_path: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    async with atelier_http(tmp_path, **s3_settings(s3, bucket)) as served:
        assert isinstance(served.engine.store, S3Store)
        body = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2, "seed": 7}
        response = await served.http.post("/adgen/generate", json=body)
        assert response.status_code == 200, response.text
        run_id = response.json()["run_id"]
        finalized = (await served.http.post(f"/adgen/finalize/{run_id}", params={"wait": 30})).json()
        assert finalized["status"] == "COMPLETED", finalized
        [artifact] = finalized["artifacts"]

        # The image is an object in the bucket, not a file under the data directory.
        key = f"studio-a/runs/{run_id}/{artifact['filename']}"
        assert s3.keys(bucket, "studio-a/runs/") == [key]
        assert not (served.settings.artifacts_dir / "runs").exists()

        image = await served.http.get(artifact["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == s3.get(bucket, key)
        assert int(image.headers["content-length"]) == len(image.content)
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)

        # The other doors read through the same store: the ZIP and the studio's thumbnail.
        download = await served.http.get(f"/adgen/download/{run_id}")
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            assert archive.read(artifact["filename"]) == image.content
        thumbnail = await served.http.get(f"/studio/runs/{run_id}/thumbnails/{artifact['filename']}")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"

        detailed = (await served.http.get("/adgen/health/detailed")).json()
        assert detailed["storage"] == "ok"
        status = json.dumps(await served.engine.status())
        assert bucket in status
        no_secret_in(status)

        assert (await served.http.delete(f"/adgen/runs/{run_id}")).status_code == 204
        assert s3.keys(bucket, "studio-a/runs/") == []
        assert (await served.http.get(artifact["url"])).status_code == 404


async def test_a_file_lost_from_the_bucket_is_an_error_as_on_disk_not_a_broken_200(
    tmp_path: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    async with atelier_http(tmp_path, **s3_settings(s3, bucket)) as served:
        body = {"prompt": "a lighthouse at noon", "width": 64, "height": 64, "steps": 2}
        run_id = (await served.http.post("/adgen/generate", json=body)).json()["run_id"]
        finalized = (await served.http.post(f"/adgen/finalize/{run_id}", params={"wait": 30})).json()
        [artifact] = finalized["artifacts"]
        s3.client.delete_object(Bucket=bucket, Key=f"studio-a/runs/{run_id}/{artifact['filename']}")
        # The ledger has the file and the storage lost it: a server-side error, as with a file
        # deleted from disk (test_http_desktop's lost file), said before any byte is sent.
        response = await served.http.get(artifact["url"])
        assert response.status_code == 500
        no_secret_in(response.text)
        assert (await served.http.get("/adgen/health")).status_code == 200


async def test_with_presigning_a_contract_redirects_to_the_bucket(tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.new_bucket()
    async with atelier_http(tmp_path, **s3_settings(s3, bucket), s3_presign_s=300) as served:
        body = {"prompt": "a lighthouse at dawn", "width": 64, "height": 64, "steps": 2}
        run_id = (await served.http.post("/adgen/generate", json=body)).json()["run_id"]
        finalized = (await served.http.post(f"/adgen/finalize/{run_id}", params={"wait": 30})).json()
        [artifact] = finalized["artifacts"]
        assert artifact["url"] == f"/adgen/runs/{run_id}/files/{artifact['filename']}"  # as without S3

        redirect = await served.http.get(artifact["url"])
        assert redirect.status_code == 307 and redirect.headers["cache-control"] == "no-store"
        location = redirect.headers["location"]
        assert location.startswith(f"{s3.url}/{bucket}/studio-a/runs/{run_id}/{artifact['filename']}?")
        no_secret_in(location)
        image = await served.http.get(artifact["url"], follow_redirects=True)
        assert image.status_code == 200
        assert image.content == s3.get(bucket, f"studio-a/runs/{run_id}/{artifact['filename']}")


async def test_atelier_serve_starts_while_s3_never_answers_and_reports_it(
    tmp_path: Path, s3: S3Server
) -> None:
    # An endpoint that takes connections and never answers them: a start-up that waited on S3
    # would hang there for the client's 300 s request timeout, far past the minute `serve` allows
    # a start-up (a closed port, refused at once, would not tell a waiting start-up apart).
    with socket.socket() as never_answers:
        never_answers.bind(("127.0.0.1", 0))
        never_answers.listen(64)
        endpoint = f"http://127.0.0.1:{never_answers.getsockname()[1]}"
        down = {**s3_settings(s3, "atelier-down"), "s3_url": endpoint}
        env = {f"ATELIER_{name.upper()}": value for name, value in down.items()}
        with serve(tmp_path / "home", env=env, args=["--root-contract", "adgen"]) as server:
            detailed = httpx.get(f"{server.url}/adgen/health/detailed", timeout=30).json()
    assert detailed["ok"] is False
    assert (
        detailed["storage"]
        == f"error: bucket 'atelier-down' at {endpoint}: cannot write: the endpoint timed out"
    )
    no_secret_in(json.dumps(detailed))
