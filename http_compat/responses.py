"""Answering: JSON, timestamps, the contract's own base URL, and run files streamed from storage."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from core.engine import Engine
from core.errors import ArtifactNotFound
from core.models import Artifact, Run

# A Host header `request.url` would take as it is: a name or address and maybe a port, nothing
# a URL parser would split on, strip or lower-case differently.
_PLAIN_HOST = re.compile(rb"[0-9a-z.\-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=dict(headers or {}))


def iso(ts: float | None, *, millis: bool = False, zulu: bool = True) -> str | None:
    """Epoch seconds as ISO 8601 UTC: `2025-01-15T10:30:00Z` (`.000Z` with millis)."""
    return None if ts is None else _iso(ts, millis, zulu)


# Status answers show the same few timestamps (a run's creation, start, finish) again and again.
@functools.lru_cache(maxsize=4096)
def _iso(ts: float, millis: bool, zulu: bool) -> str:
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z") if zulu else text


def base_url(request: HTTPConnection) -> str:
    """This contract's absolute http(s) base URL as the client reached it, its prefix included
    (Starlette's `request.base_url` stops at the outer app's root)."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is not None and _PLAIN_HOST.fullmatch(host):
        # What `request.url.netloc` would be, without parsing the whole URL (status GETs ask often).
        scheme, netloc = scope.get("scheme", "http"), host.decode("ascii")
    else:
        url = request.url
        scheme, netloc = url.scheme, url.netloc
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{netloc}{scope.get('root_path', '')}".rstrip("/")


async def artifact_response(engine: Engine, run: Run, filename: str) -> Response:
    """One of a run's files, streamed: from disk where the store keeps it there, else chunk by
    chunk from the store (an S3 bucket), never held whole; or, with ATELIER_S3_PRESIGN_S set, a
    redirect to a presigned URL of the bucket. Raises `ArtifactNotFound` for a name the run does not
    have, `FileNotFoundError` for a file the storage has lost."""
    artifact = find_artifact(run, filename)
    path = engine.artifact_path(artifact)
    headers = {"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{artifact.sha256}"'}
    if path is not None and path.is_file():
        return FileResponse(path, media_type=artifact.media_type, headers=headers)
    signed = await engine.artifact_url(artifact)
    if signed is not None:
        # The bucket serves the bytes; the redirect itself expires with the URL, so it is not kept.
        return RedirectResponse(signed, status_code=307, headers={"Cache-Control": "no-store"})
    opened = await engine.stream_artifact(artifact)
    headers["Content-Length"] = str(opened.size)
    return StreamingResponse(
        opened, media_type=artifact.media_type, headers=headers, background=BackgroundTask(opened.aclose)
    )


def find_artifact(run: Run, filename: str) -> Artifact:
    for artifact in run.artifacts:
        if artifact.filename == filename:
            return artifact
    raise ArtifactNotFound(run.id, filename)


def file_response(path: Path, media_type: str, filename: str) -> Response:
    """A file on disk, streamed, as a download named `filename`."""
    return FileResponse(path, media_type=media_type, filename=filename)
