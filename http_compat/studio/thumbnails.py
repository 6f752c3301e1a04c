"""Thumbnails of run images: made once, kept on disk, served as immutable files.

`GET <prefix>/runs/{id}/thumbnails/{filename}` answers a WebP at most `SIDE` pixels on its
longer side. The first request decodes the image (in a worker thread, `MAKING_AT_ONCE` at a
time, so a gallery of fresh runs cannot hold dozens of decoded PNGs at once) and writes
`<home>/thumbnails/<run id>/<filename>-<sha256 prefix>.webp`; every later one sends that file.
The file's name carries the image's hash, so a retry that replaces `image-01.png` under the same
name gets a new thumbnail, never the old one (whose file goes when the new one is made).

The run is looked up on every request: a deleted run's thumbnail is a 404 even while its file
is still on disk, and that request removes the folder (the studio's own delete removes it at
once). The id and file name are checked (`core.ids`) before any path is made of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from io import BytesIO
from pathlib import Path

import anyio
import anyio.to_thread
from PIL import Image, ImageOps
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from core.engine import Engine
from core.errors import ArtifactNotFound, RunNotFound
from core.ids import check_filename, check_run_id
from core.models import Artifact
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.responses import find_artifact
from http_compat.studio.errors import filename_of, run_id_of

SIDE = 384
QUALITY = 80
MAKING_AT_ONCE = 2
IMMUTABLE = "private, max-age=31536000, immutable"

log = logging.getLogger("atelier.studio")


class Thumbnails:
    """The thumbnails of run images, cached in `folder` (one subfolder per run)."""

    def __init__(self, engine: Engine, folder: Path) -> None:
        self._engine = engine
        self.folder = folder
        self._making = anyio.CapacityLimiter(MAKING_AT_ONCE)

    def path(self, artifact: Artifact) -> Path:
        return self.folder / artifact.run_id / f"{artifact.filename}-{artifact.sha256[:16]}.webp"

    def forget(self, run_id: str) -> None:
        """Remove a run's thumbnails (the run is gone)."""
        shutil.rmtree(self.folder / check_run_id(run_id), ignore_errors=True)

    async def get(self, run_id: str, filename: str) -> tuple[Artifact, Path]:
        """The image and its thumbnail's file, made now if it was never made.

        Raises `RunNotFound` / `ArtifactNotFound` (a file that is not an image is not found)."""
        check_run_id(run_id)
        check_filename(filename)
        try:
            run = await self._engine.get_run(run_id)
        except RunNotFound:
            self.forget(run_id)
            raise
        artifact = find_artifact(run, filename)
        if not artifact.media_type.startswith("image/"):
            raise ArtifactNotFound(run_id, filename)
        path = self.path(artifact)
        if path.is_file():
            return artifact, path
        async with self._making:
            if not path.is_file():  # made by another request while this one waited
                try:
                    await self._make(artifact, path)
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    # A file gone from storage or not an image after all: no thumbnail, and a
                    # line in the log for whoever looks after the storage.
                    log.warning("no thumbnail of %s/%s: %s", run_id, filename, exc)
                    raise ArtifactNotFound(run_id, filename) from None
        return artifact, path

    async def _make(self, artifact: Artifact, path: Path) -> None:
        source = self._engine.artifact_path(artifact)
        if source is None or not source.is_file():
            _, data = await self._engine.read_artifact(artifact.run_id, artifact.filename)
            await anyio.to_thread.run_sync(_make, BytesIO(data), path)
        else:
            await anyio.to_thread.run_sync(_make, source, path)
        # The thumbnail of the file this name held before a retry is no longer anybody's.
        for old in path.parent.glob(f"{artifact.filename}-*.webp"):
            if old != path:
                old.unlink(missing_ok=True)


def _make(source: Path | BytesIO, path: Path) -> None:
    """Decode `source`, shrink it to fit `SIDE`, and write it to `path` as WebP (atomically)."""
    with Image.open(source) as image:
        image.draft("RGB", (SIDE, SIDE))  # JPEGs decode at a reduced size straight away
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            image.save(tmp, "WEBP", quality=QUALITY, method=4)
            tmp.replace(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def add_thumbnails(api: Api, engine: Engine, settings: Settings) -> Thumbnails:
    """Declare `GET /runs/{run_id}/thumbnails/{filename}` on `api`; returns the cache (for deletes)."""
    thumbnails = Thumbnails(engine, settings.home / "thumbnails")

    @api.route(
        "GET",
        "/runs/{run_id}/thumbnails/{filename}",
        summary="A run image's thumbnail (WebP, at most 384 px a side)",
        produces="image/webp",
    )
    async def thumbnail(request: Request) -> Response:
        try:
            artifact, path = await thumbnails.get(run_id_of(request), filename_of(request))
        except (RunNotFound, ArtifactNotFound) as exc:
            raise ApiError(404, str(exc), code="NOT_FOUND") from None
        headers = {"Cache-Control": IMMUTABLE, "ETag": f'"{artifact.sha256}-{SIDE}"'}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type="image/webp", headers=headers)

    return thumbnails
