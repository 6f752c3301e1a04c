"""Run bundles: a ZIP of a run's outputs plus its `run.json`, kept in the data directory.

A bundle is written when a front door asks for a download, and reused while the run stays
completed; the engine discards it when the run is deleted or an attempt completes again, so a
bundle never shows files of an earlier attempt.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anyio

from core.artifacts import ArtifactStore
from core.errors import Conflict
from core.models import Run, RunStatus


@dataclass(slots=True, frozen=True)
class Bundle:
    """A ZIP of a run's outputs (and its `run.json`), written to the data directory."""

    run_id: str
    path: Path
    size: int
    files: list[str]


class Bundles:
    """The bundles of runs, one `<run id>.zip` per run in `folder`; file contents come from `store`."""

    def __init__(self, folder: Path, store: ArtifactStore) -> None:
        self._folder = folder
        self._store = store

    def path(self, run_id: str) -> Path:
        return self._folder / f"{run_id}.zip"

    def discard(self, run_id: str) -> None:
        """Remove the run's bundle, if one was written."""
        self.path(run_id).unlink(missing_ok=True)

    async def write(self, run: Run, *, reuse: bool = False) -> Bundle:
        """Write a ZIP of the run's images plus `run.json` (inputs, seeds, timings); with `reuse`,
        return the one already written if there is one.

        Files are copied into the archive from disk one by one, never all held in memory (from an
        S3 bucket: streamed to a scratch folder beside the bundles first).
        """
        if not run.artifacts:
            raise Conflict(f"run {run.id} is {run.status.value} and has no outputs to bundle yet")
        path = self.path(run.id)
        if reuse and run.status is RunStatus.COMPLETED and path.is_file():
            names = [a.filename for a in run.artifacts] + ["run.json"]
            return Bundle(run.id, path, path.stat().st_size, names)
        manifest = json.dumps(run.to_dict(), indent=2).encode()
        self._folder.mkdir(parents=True, exist_ok=True)
        # Files the store keeps elsewhere (an S3 bucket) are streamed to a scratch folder first.
        with tempfile.TemporaryDirectory(dir=self._folder, prefix=f".{run.id}.") as scratch:
            files: list[tuple[str, Path | bytes]] = []
            for artifact in run.artifacts:
                local = self._store.local_path(artifact.storage_key)
                if local is None:
                    local = Path(scratch) / artifact.filename
                    await _download(self._store, artifact.storage_key, local)
                files.append((artifact.filename, local))
            await anyio.to_thread.run_sync(_write_zip, path, [*files, ("run.json", manifest)])
        return Bundle(run.id, path, path.stat().st_size, [name for name, _ in files] + ["run.json"])


async def _download(store: ArtifactStore, key: str, to: Path) -> None:
    opened = await store.stream(key)
    try:
        async with await anyio.open_file(to, "wb") as file:
            async for chunk in opened:
                await file.write(chunk)
    finally:
        await opened.aclose()


def _write_zip(path: Path, files: list[tuple[str, Path | bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    # PNGs are already compressed; storing them keeps bundling as fast as copying.
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files:
            method = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            if isinstance(content, Path):
                archive.write(content, name, compress_type=method)
            else:
                archive.writestr(name, content, compress_type=method)
    tmp.replace(path)
