"""The one place where settings choose adapters."""

from __future__ import annotations

from core.artifacts import ArtifactStore
from core.artifacts.filesystem import FilesystemStore
from core.backends import GenerationBackend
from core.backends.comfyui.workflows import WorkflowLibrary
from core.dispatch import Dispatch, InProcessDispatch
from core.errors import InvalidInput
from core.ledger import Ledger
from core.ledger.sqlite import SQLiteLedger
from core.publishing import Publisher
from core.relay import EventRelay, NoRelay
from core.settings import Settings
from core.training import Trainer


def _not_installed(setting: str, package: str, exc: ImportError) -> InvalidInput:
    """The error of a setting whose library (of the `postgres` extra) is not installed."""
    return InvalidInput(
        setting, f"needs {package}, which is not installed ({exc}): pip install 'atelier-mcp[postgres]'"
    )


def make_ledger(settings: Settings) -> Ledger:
    """PostgreSQL when ATELIER_DATABASE_URL is set (psycopg imported only then), else the SQLite
    file in ATELIER_HOME. Neither waits for a server here: PostgreSQL connects on first use."""
    if settings.database_url is not None:
        try:
            from core.ledger.postgres import PostgresLedger
        except ImportError as exc:
            raise _not_installed("ATELIER_DATABASE_URL", "psycopg", exc) from None
        return PostgresLedger.open(
            settings.database_url.get_secret_value(),
            timeout_s=settings.ledger_busy_timeout_s,
            pool_size=settings.database_pool_size,
        )
    return SQLiteLedger.open(
        settings.ledger_path,
        synchronous=settings.ledger_sync,
        busy_timeout_s=settings.ledger_busy_timeout_s,
    )


def make_relay(settings: Settings) -> EventRelay:
    """Events across nodes through PostgreSQL when ATELIER_DATABASE_URL is set (psycopg imported
    only then), else none: on one box the engine's own events reach everyone."""
    if settings.database_url is None:
        return NoRelay()
    try:
        from core.relay_postgres import PostgresRelay
    except ImportError as exc:
        raise _not_installed("ATELIER_DATABASE_URL", "psycopg", exc) from None
    return PostgresRelay(settings.database_url.get_secret_value())


def make_dispatch(settings: Settings, ledger: Ledger) -> Dispatch:
    """This process's own queues, or with ATELIER_DISPATCH=procrastinate the task queue in the
    ledger's database (procrastinate imported only then), whose jobs the ledger defers in the
    transaction that records their runs."""
    if settings.dispatch == "in-process":
        return InProcessDispatch()
    try:
        from core.dispatch_procrastinate import ProcrastinateDispatch
        from core.ledger.postgres import PostgresLedger
    except ImportError as exc:
        raise _not_installed("ATELIER_DISPATCH", "procrastinate", exc) from None
    if not isinstance(ledger, PostgresLedger):
        raise InvalidInput(
            "ATELIER_DISPATCH", "procrastinate needs the PostgreSQL ledger (ATELIER_DATABASE_URL)"
        )
    dispatch = ProcrastinateDispatch.from_settings(settings)
    ledger.on_insert_runs = dispatch.defer_within
    return dispatch


def make_store(settings: Settings) -> ArtifactStore:
    """Files under ATELIER_HOME; or, with ATELIER_S3_URL set, objects in its bucket."""
    if settings.s3_url is not None:
        from core.artifacts.s3 import S3Store  # obstore is an optional extra

        return S3Store.from_settings(settings)
    return FilesystemStore(settings.artifacts_dir)


def make_workflows(settings: Settings) -> WorkflowLibrary:
    return WorkflowLibrary.load(settings.workflows_dir)


def make_backends(settings: Settings) -> dict[str, GenerationBackend]:
    """The preview renderer always; the ComfyUI pool when it is the configured backend. Both
    take the ComfyUI workflow library: the preview renderer accepts the workflows ComfyUI runs."""
    from core.backends.local import LocalPreviewBackend

    workflows = make_workflows(settings)
    backends: dict[str, GenerationBackend] = {
        "local": LocalPreviewBackend(
            step_ms=settings.local_step_ms,
            concurrency=settings.local_concurrency,
            memory_bytes=settings.render_memory_mb * 1024 * 1024,
            workflows=workflows,
        )
    }
    if settings.backend == "comfyui":
        from core.backends.comfyui.pool import ComfyUIPool

        backends["comfyui"] = ComfyUIPool(
            settings.comfyui_servers, workflows, depth=settings.comfyui_queue_depth
        )
    return backends


def make_trainer(settings: Settings) -> Trainer:
    """The LoRA trainer ATELIER_TRAINER names: the embedded preview trainer, or ai-toolkit."""
    if settings.trainer == "aitoolkit":
        from core.training.aitoolkit import AIToolkitTrainer

        return AIToolkitTrainer(
            directory=settings.aitoolkit_dir,
            python=settings.aitoolkit_python,
            base_model=settings.aitoolkit_base_model,
            grace_s=settings.aitoolkit_grace_s,
        )
    from core.training.preview import PreviewTrainer

    return PreviewTrainer(step_ms=settings.preview_train_step_ms)


def make_publishers(settings: Settings, ledger: Ledger) -> dict[str, Publisher]:
    """Every platform products can be listed on (each says whether it is configured)."""
    from core.publishing.printify import PrintifyPublisher
    from core.publishing.shopify import ShopifyPublisher
    from core.publishing.storefront import StorefrontPublisher

    return {
        "storefront": StorefrontPublisher(ledger),
        "printify": PrintifyPublisher.from_settings(settings),
        "shopify": ShopifyPublisher(settings),
    }
