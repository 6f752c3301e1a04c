"""The ledger port: durable storage of runs, their artifacts and logs."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from core.characters.models import Character, CharacterImage, LoraVersion
from core.models import Artifact, LogEntry, Page, Priority, Run, RunKind, RunStatus
from core.publishing.models import Listing, Product


class Increment(int):
    """An `update_run` value that adds to the column instead of replacing it."""


class CharacterLedger(Protocol):
    """Characters, their training images and LoRA versions; each call one transaction."""

    async def insert_character(self, character: Character) -> Character:
        """Store a new character. `Conflict` names the taken name or trigger word."""
        ...

    async def get_character(self, character_id: str) -> Character | None: ...

    async def find_character_by_name(self, name: str) -> Character | None:
        """The character with this name, whatever its case."""
        ...

    async def list_characters(self) -> list[Character]:
        """Every character, oldest first, with its images and versions."""
        ...

    async def update_character(self, character_id: str, **changes: Any) -> Character | None:
        """Change name, description, trigger_word or active_version; None if it does not exist."""
        ...

    async def delete_character(self, character_id: str) -> bool: ...

    async def add_character_images(
        self, character_id: str, images: Sequence[CharacterImage], max_images: int
    ) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
        """Add what fits (no duplicate content or name, at most `max_images`): (added, [(filename, reason)])."""
        ...

    async def remove_character_image(self, character_id: str, filename: str) -> CharacterImage | None: ...

    async def add_lora_version(self, character_id: str, version: LoraVersion) -> None:
        """Record a trained LoRA version and make it active."""
        ...


class ProductLedger(Protocol):
    """Products and their listings on platforms; each call one transaction."""

    async def insert_product(self, product: Product) -> Product:
        """Store a new product; one with the same id already stored is returned as it is."""
        ...

    async def get_product(self, product_id: str) -> Product | None: ...

    async def list_products(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Product]: ...

    async def published_on(self, platform: str, limit: int = 200, offset: int = 0) -> list[Product]: ...

    async def update_product(self, product_id: str, **changes: Any) -> Product | None: ...

    async def delete_product(self, product_id: str) -> bool: ...

    async def put_listing(self, product_id: str, listing: Listing) -> None: ...


class Ledger(CharacterLedger, ProductLedger, Protocol):
    """Every state change is one call, and each call is one transaction."""

    async def insert_run(self, run: Run, log: str | None = None) -> Run:
        """Store a new run; returns it with its `seq`. Raises `Conflict` on a reused idempotency key."""
        ...

    async def insert_runs(self, runs: Sequence[Run], log: str | None = None) -> list[Run]:
        """Store several runs in one transaction (a batch and its children), in order, all or none."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    def change_marker(self) -> int | None:
        """A number that moves whenever a transaction is committed to the ledger, by this process or
        another: what was read while it stands has not changed since (so an answer built from it
        can be reused). None when the ledger cannot tell."""
        ...

    async def find_by_idempotency_key(self, key: str) -> Run | None: ...

    async def find_by_key_prefix(self, prefix: str, limit: int = 1000) -> list[Run]:
        """Runs whose idempotency key starts with `prefix` (a kind's parts of a run), oldest first."""
        ...

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        offset: int = 0,
    ) -> Page:
        """Runs newest first; `cursor` is the `next_cursor` of the previous page (or skip `offset`).

        `top_level` leaves out the children of batches and the image runs a products run makes
        for itself (idempotency keys `pod:<run>:...`).
        """
        ...

    async def count_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
    ) -> int:
        """How many runs `list_runs` with the same filters would page through."""
        ...

    async def mean_duration(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        top_level: bool = False,
        newest: int = 200,
    ) -> float | None:
        """Mean seconds from start (or creation) to finish of the finished runs among the
        `newest` that `list_runs` with the same filters lists first (None if there are none)."""
        ...

    async def get_run_by_seq(self, seq: int) -> Run | None:
        """The run with this `seq` (for contracts with integer ids)."""
        ...

    async def finished_before(self, cutoff: float, statuses: Collection[RunStatus]) -> list[str]:
        """Ids of top-level runs in `statuses` that finished before `cutoff` (epoch seconds)."""
        ...

    async def finished_since(self, since: float) -> dict[str, int]:
        """How many top-level runs finished at or after `since` (epoch seconds), by final status;
        costs the runs found, not the ledger (an index on `finished_at`)."""
        ...

    async def get_document(self, key: str) -> Any:
        """A small JSON document a front door keeps (None if never written)."""
        ...

    async def put_document(self, key: str, value: Any) -> None: ...

    async def update_run(
        self,
        run_id: str,
        *,
        expect: Collection[RunStatus] | None = None,
        log: str | None = None,
        log_level: str = "info",
        artifacts: Sequence[Artifact] = (),
        replace_artifacts: bool = False,
        **changes: Any,
    ) -> Run | None:
        """Apply `changes` if the run's status is in `expect` (any, if None).

        Returns the updated run, or None if it does not exist or was not in an expected state.
        """
        ...

    async def add_log(self, run_id: str, message: str, level: str = "info") -> None: ...

    async def logs(self, run_id: str, limit: int = 1000) -> list[LogEntry]: ...

    async def delete_run(self, run_id: str) -> list[Artifact]:
        """Delete a run, its children, logs and artifact rows; returns the artifacts it had."""
        ...

    async def runs_in(self, statuses: Collection[RunStatus]) -> list[Run]:
        """Every run in one of `statuses`, oldest first (used for recovery)."""
        ...

    async def statuses_of(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        """The current status of each run that still exists."""
        ...

    async def queued_refs(self) -> list[tuple[str, str, Priority, int]]:
        """(id, backend, priority, seq) of every queued run: what another process may have added."""
        ...

    async def count_by_status(
        self, *, kinds: Collection[RunKind] | None = None, top_level: bool = False
    ) -> dict[str, int]:
        """How many runs (of `kinds`; `top_level` as in `list_runs`) are in each status, every status named."""
        ...

    async def close(self) -> None: ...
