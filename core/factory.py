"""The one place where settings choose adapters."""

from __future__ import annotations

from core.artifacts import ArtifactStore
from core.artifacts.filesystem import FilesystemStore
from core.backends import GenerationBackend
from core.ledger import Ledger
from core.ledger.sqlite import SQLiteLedger
from core.settings import Settings


def make_ledger(settings: Settings) -> Ledger:
    return SQLiteLedger.open(settings.ledger_path, synchronous=settings.ledger_sync)


def make_store(settings: Settings) -> ArtifactStore:
    return FilesystemStore(settings.artifacts_dir)


def make_backends(settings: Settings) -> dict[str, GenerationBackend]:
    from core.backends.local import LocalPreviewBackend

    return {
        "local": LocalPreviewBackend(step_ms=settings.local_step_ms, concurrency=settings.local_concurrency)
    }
