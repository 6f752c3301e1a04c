"""Artifacts as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through obstore.

obstore (Python bindings of the Rust `object_store` crate, which Apache Arrow maintains) is
async, streams both ways, uploads big files in parts by itself and signs requests itself: one
small wheel, no botocore and no aiohttp. It is an optional extra (`pip install
'atelier-mcp[s3]'`), imported only when ATELIER_S3_URL is set.

What the port asks, and how S3 gives it:
- atomic `put`: an S3 PUT (and a multipart upload, at its completion) replaces the object
  whole; a reader gets the old object or the new one.
- `FileNotFoundError` for a missing key, another `OSError` for any other failure, so the engine
  treats a bucket that refuses writes as it treats a full disk (retry, then "storage error").
- no secret in a message: errors carry the key, the operation and S3's error code or the
  kind of network failure, never the request (whose headers hold the signature).
- `health()` writes and removes a probe object at most every few seconds, with a short timeout
  and no retries, and reports an outage rather than raising. Nothing waits on S3 at start-up.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from core.artifacts import CHUNK_BYTES, ArtifactStream, check_key

if TYPE_CHECKING:
    from core.settings import Settings

# Health probes at most this often; monitors may poll far more often.
_PROBE_EVERY_S = 5.0
# A probe that takes longer than this reports the storage down rather than hold up /health.
_PROBE_TIMEOUT_S = 3.0
# S3 deletes up to 1,000 keys per request.
_DELETE_BATCH = 1000
_S3_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,80})</Code>")


class S3Store:
    """`ArtifactStore` in `bucket` at `url`, every key under `prefix`."""

    def __init__(
        self,
        *,
        url: str,
        bucket: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str = "us-east-1",
        prefix: str = "",
        presign_s: int = 0,
    ) -> None:
        try:
            from obstore.store import S3Store as ObjectStore
        except ImportError:  # pragma: no cover - depends on what is installed
            raise RuntimeError(
                "ATELIER_S3_URL is set but obstore is not installed: pip install 'atelier-mcp[s3]'"
            ) from None
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.presign_s = presign_s
        common: dict[str, Any] = {
            "endpoint": self.url,
            "region": region,
            "virtual_hosted_style_request": False,  # path style: what MinIO & co. answer
        }
        if self.prefix:
            common["prefix"] = self.prefix
        # Without keys, obstore looks where AWS's own clients do (AWS_* variables, the instance's role).
        if access_key_id is not None and secret_access_key is not None:
            common.update(access_key_id=access_key_id, secret_access_key=secret_access_key)
        http = self.url.startswith("http://")
        self._objects = ObjectStore(
            bucket,
            client_options={"allow_http": http, "connect_timeout": "5s", "timeout": "300s"},
            retry_config={
                "max_retries": 3,
                "retry_timeout": timedelta(seconds=30),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=5),
                    "base": 2.0,
                },
            },
            **common,
        )
        # Health asks once, quickly: an outage is reported in seconds, not after the retries.
        self._probe_objects = ObjectStore(
            bucket,
            client_options={"allow_http": http, "connect_timeout": "2s", "timeout": f"{_PROBE_TIMEOUT_S}s"},
            retry_config={
                "max_retries": 0,
                "retry_timeout": timedelta(seconds=_PROBE_TIMEOUT_S),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=1),
                    "base": 2.0,
                },
            },
            **common,
        )
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60]
        self._probe_key = f".atelier-probe-{host}-{os.getpid()}"
        self._probed: tuple[float, dict[str, object]] | None = None
        self._probing = anyio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        assert settings.s3_url is not None and settings.s3_bucket is not None
        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        return cls(
            url=settings.s3_url,
            bucket=settings.s3_bucket,
            access_key_id=key_id.get_secret_value() if key_id is not None else None,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            presign_s=settings.s3_presign_s,
        )

    def __repr__(self) -> str:
        return f"S3Store(url={self.url!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def put(self, key: str, data: bytes) -> None:
        import obstore

        key = check_key(key)
        with _as_os_error("write", key):
            await obstore.put_async(self._objects, key, data)
        self._wrote()

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """A multipart upload once the data passes a part's size (5 MiB), completed only when
        every part is in: a failed upload leaves no object behind."""
        import obstore

        key = check_key(key)
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        with _as_os_error("write", key):
            await obstore.put_async(self._objects, key, counted())
        self._wrote()
        return size

    async def read(self, key: str) -> bytes:
        import obstore

        key = check_key(key)
        with _as_os_error("read", key):
            result = await obstore.get_async(self._objects, key)
            return bytes(await result.bytes_async())

    async def stream(self, key: str) -> ArtifactStream:
        import obstore

        key = check_key(key)
        with _as_os_error("read", key):
            result = await obstore.get_async(self._objects, key)
        return ArtifactStream(int(result.meta["size"]), _chunks_of(result, key))

    def local_path(self, key: str) -> Path | None:
        return None

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(check_key(key))}"

    async def signed_url(self, key: str) -> str | None:
        """A presigned GET valid `presign_s` seconds (signed here, no request), when asked for."""
        if not self.presign_s:
            return None
        import obstore

        key = check_key(key)
        with _as_os_error("sign", key):
            return await obstore.sign_async(self._objects, "GET", key, timedelta(seconds=self.presign_s))

    async def delete_prefix(self, prefix: str) -> None:
        import obstore

        keys = [obj["path"] for obj in await self._listed(prefix, recursive=True)]
        for start in range(0, len(keys), _DELETE_BATCH):
            with _as_os_error("delete", prefix):
                await obstore.delete_async(self._objects, keys[start : start + _DELETE_BATCH])

    async def list_prefix(self, prefix: str) -> list[str]:
        """The files directly under `prefix`, as the filesystem store lists a folder."""
        return sorted(obj["path"] for obj in await self._listed(prefix, recursive=False))

    async def health(self) -> dict[str, object]:
        """Writes and removes a probe object (at most every few seconds): an endpoint that is
        down, a missing bucket and refused credentials all show here before a run trips on them."""
        async with self._probing:  # callers meanwhile share the one probe
            now = time.monotonic()
            if self._probed is None or now - self._probed[0] > _PROBE_EVERY_S:
                self._probed = (time.monotonic(), await self._probe())
            return self._probed[1]

    async def _probe(self) -> dict[str, object]:
        import obstore

        report: dict[str, object] = {
            "ok": True,
            "error": None,
            "kind": "s3",
            "endpoint": self.url,
            "bucket": self.bucket,
            "prefix": self.prefix,
        }
        try:
            with anyio.fail_after(_PROBE_TIMEOUT_S + 1), _as_os_error("write", self._probe_key):
                await obstore.put_async(self._probe_objects, self._probe_key, b"ok")
                await obstore.delete_async(self._probe_objects, self._probe_key)
        except TimeoutError:
            report.update(ok=False, error=f"{self.url} did not answer within {_PROBE_TIMEOUT_S:g} s")
        except OSError as exc:
            report.update(ok=False, error=f"bucket {self.bucket!r} at {self.url}: {exc.strerror}")
        return report

    def _wrote(self) -> None:
        if self._probed is not None and not self._probed[1]["ok"]:
            self._probed = None  # a write worked: probe again rather than report the old failure

    async def _listed(self, prefix: str, *, recursive: bool) -> list[dict[str, Any]]:
        import obstore

        folder = check_key(prefix)
        with _as_os_error("list", prefix):
            if recursive:
                objects: list[dict[str, Any]] = []
                async for batch in obstore.list(self._objects, prefix=folder):
                    objects.extend(batch)
                return objects
            listed = await obstore.list_with_delimiter_async(self._objects, prefix=folder)
            return list(listed["objects"])

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


async def _chunks_of(result: Any, key: str) -> AsyncIterator[bytes]:
    with _as_os_error("read", key):
        async for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
            yield bytes(chunk)


@contextmanager
def _as_os_error(action: str, key: str) -> Iterator[None]:
    """obstore's errors as the port's: `FileNotFoundError` or an `OSError` whose words name the
    key and what went wrong, never the request (its URL may be signed, its headers are)."""
    try:
        yield
    except FileNotFoundError as exc:
        if "NoSuchBucket" not in str(exc):
            raise FileNotFoundError(errno.ENOENT, "no such object", key) from None
        # Not a missing file but missing storage: a failure like any other.
        raise OSError(errno.EIO, f"cannot {action}: {_reason(exc)}", key) from None
    except Exception as exc:
        if not (isinstance(exc, OSError) or type(exc).__module__.startswith("obstore")):
            raise  # a bug of ours (a wrong argument), not the storage failing
        refused = isinstance(exc, PermissionError) or type(exc).__name__ in _REFUSED
        raise OSError(
            errno.EACCES if refused else errno.EIO, f"cannot {action}: {_reason(exc)}", key
        ) from None


_REFUSED = {"PermissionDeniedError", "UnauthenticatedError"}


def _reason(exc: BaseException) -> str:
    """S3's error code (`NoSuchBucket`, `AccessDenied`, ...) or the kind of failure, in a few
    words taken from a fixed list: obstore's own message quotes the request."""
    text = str(exc)
    found = _S3_CODE.search(text)
    if found:
        return f"S3 answered {found.group(1)}"
    status = re.search(r"status code: (\d{3})", text)
    if status:
        return f"S3 answered HTTP {status.group(1)}"
    for words, reason in (
        # A timeout first: obstore words it "error sending request" too, with "kind: Timeout".
        ("kind: timeout", "the endpoint timed out"),
        ("timed out", "the endpoint timed out"),
        ("error sending request", "the endpoint cannot be reached"),
        ("connection", "the connection failed"),
        ("dns", "the endpoint's name does not resolve"),
    ):
        if words in text.lower():
            return reason
    return type(exc).__name__
