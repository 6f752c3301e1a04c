"""The ledger's kept counts and filtered pages: they must say what a scan of every run would say.

Counts are kept in `run_counts` by triggers (SQLite's migration 0005, PostgreSQL's 0001) and filtered
pages are merged from index ranges; each test here compares them with the plain answer a full
scan gives, on both adapters (the upgrade of a version 4 SQLite file: SQLite only).
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Collection
from importlib import resources
from pathlib import Path

import pytest

from core.errors import Conflict
from core.ledger import Ledger
from core.ledger.sqlite import SQLiteLedger
from core.models import RunKind, RunStatus
from tests.ledgers import LedgerPlace
from tests.test_ledger import new_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def scanned(place: LedgerPlace | Path) -> list[tuple[str, str, str | None, str | None, int]]:
    """(kind, status, parent_id, idempotency_key, seq) of every run, read by another connection."""
    if isinstance(place, Path):
        place = LedgerPlace("sqlite", path=place)
    return place.raw("SELECT kind, status, parent_id, idempotency_key, seq FROM runs")  # type: ignore[return-value]


def is_top_level(parent_id: str | None, key: str | None) -> bool:
    return parent_id is None and not (key or "").startswith("pod:")


def matching(
    place: LedgerPlace | Path,
    statuses: Collection[RunStatus] | None = None,
    kinds: Collection[RunKind] | None = None,
    top_level: bool = False,
) -> list[int]:
    """Seqs of the runs a filter selects, newest first, by looking at every run."""
    return sorted(
        (
            seq
            for kind, status, parent, key, seq in scanned(place)
            if (not statuses or status in {s.value for s in statuses})
            and (not kinds or kind in {k.value for k in kinds})
            and (not top_level or is_top_level(parent, key))
        ),
        reverse=True,
    )


FILTERS: list[tuple[set[RunStatus] | None, set[RunKind] | None, bool]] = [
    (statuses, kinds, top)
    for statuses in (None, {RunStatus.QUEUED}, {RunStatus.COMPLETED, RunStatus.FAILED}, set(RunStatus))
    for kinds in (None, {RunKind.IMAGE}, {RunKind.IMAGE, RunKind.BATCH, RunKind.POD})
    for top in (False, True)
]


async def assert_counts_match_a_scan(ledger: Ledger, place: LedgerPlace | Path) -> None:
    for statuses, kinds, top in FILTERS:
        expected = len(matching(place, statuses, kinds, top))
        assert await ledger.count_runs(statuses=statuses, kinds=kinds, top_level=top) == expected, (
            statuses,
            kinds,
            top,
        )
    by_status = {s.value: 0 for s in RunStatus}
    for _, status, *_ in scanned(place):
        by_status[status] += 1
    assert await ledger.count_by_status() == by_status


async def test_counts_follow_inserts_status_changes_retries_and_deletes(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    runs = [await ledger.insert_run(new_run()) for _ in range(5)]
    assert await ledger.count_runs(statuses={RunStatus.QUEUED}) == 5

    await ledger.update_run(runs[0].id, status=RunStatus.RUNNING)
    await ledger.update_run(runs[0].id, status=RunStatus.COMPLETED, expect={RunStatus.RUNNING})
    await ledger.update_run(runs[1].id, status=RunStatus.FAILED)
    # A guarded change that does not apply changes no count.
    assert await ledger.update_run(runs[2].id, status=RunStatus.FAILED, expect={RunStatus.RUNNING}) is None
    # A change that leaves the status as it was changes no count either.
    await ledger.update_run(runs[3].id, status=RunStatus.QUEUED, message="still waiting")
    assert await ledger.count_by_status() == {
        "queued": 3,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }

    # A retry puts the failed run back in the queue.
    await ledger.update_run(runs[1].id, status=RunStatus.QUEUED, expect={RunStatus.FAILED})
    assert await ledger.count_runs(statuses={RunStatus.FAILED}) == 0
    assert await ledger.count_runs(statuses={RunStatus.QUEUED}) == 4

    await ledger.delete_run(runs[0].id)
    await ledger.delete_run(runs[4].id)
    assert await ledger.count_runs() == 3
    assert await ledger.count_runs(statuses={RunStatus.COMPLETED}) == 0
    await assert_counts_match_a_scan(ledger, ledger_place)


async def test_batch_children_and_products_parts_are_counted_but_not_as_top_level(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    batch = new_run(kind=RunKind.BATCH)
    children = [new_run(parent_id=batch.id) for _ in range(3)]
    await ledger.insert_runs([batch, *children])
    products = await ledger.insert_run(new_run(kind=RunKind.POD))
    await ledger.insert_run(new_run(idempotency_key=f"pod:{products.id}:design"))
    await ledger.insert_run(new_run())

    assert await ledger.count_runs() == 7
    assert await ledger.count_runs(top_level=True) == 3  # the batch, the products run, the lone image
    assert await ledger.count_runs(kinds={RunKind.IMAGE}, top_level=True) == 1
    assert await ledger.count_runs(parent_id=batch.id) == 3
    assert [r.id for r in (await ledger.list_runs(kinds={RunKind.IMAGE}, top_level=True)).items] == [
        (await ledger.list_runs(limit=1)).items[0].id
    ]

    for child in children:
        await ledger.update_run(child.id, status=RunStatus.COMPLETED)
    assert await ledger.count_runs(statuses={RunStatus.COMPLETED}, top_level=True) == 0
    assert await ledger.count_runs(statuses={RunStatus.COMPLETED}, parent_id=batch.id) == 3

    await ledger.delete_run(batch.id)  # its children go with it
    assert await ledger.count_runs() == 3
    await assert_counts_match_a_scan(ledger, ledger_place)

    # Children removed by the foreign key's cascade alone are uncounted too.
    other = new_run(kind=RunKind.BATCH)
    await ledger.insert_runs([other, new_run(parent_id=other.id), new_run(parent_id=other.id)])
    ledger_place.raw("DELETE FROM runs WHERE id = ?", other.id)
    await assert_counts_match_a_scan(ledger, ledger_place)


async def test_a_transaction_that_fails_leaves_the_counts_as_they_were(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    await ledger.insert_run(new_run(idempotency_key="taken"))
    with pytest.raises(Conflict):
        # The first run would fit; the second reuses a key, so neither is stored nor counted.
        await ledger.insert_runs([new_run(), new_run(idempotency_key="taken")])
    assert await ledger.count_runs() == 1
    await assert_counts_match_a_scan(ledger, ledger_place)


async def test_counts_and_filtered_pages_match_a_scan_after_many_random_changes(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    chance = random.Random(13)
    ids: list[str] = []
    for _ in range(300):
        action = chance.random()
        if action < 0.5 or not ids:
            kind = chance.choice(list(RunKind))
            if kind is RunKind.BATCH:
                batch = new_run(kind=kind)
                children = [new_run(parent_id=batch.id) for _ in range(chance.randint(1, 3))]
                await ledger.insert_runs([batch, *children])
                ids += [batch.id] + [c.id for c in children]
            else:
                key = f"pod:{chance.choice(ids)}:{len(ids)}" if ids and chance.random() < 0.2 else None
                ids.append((await ledger.insert_run(new_run(kind=kind, idempotency_key=key))).id)
        elif action < 0.9:
            await ledger.update_run(chance.choice(ids), status=chance.choice(list(RunStatus)))
        else:
            await ledger.delete_run(chance.choice(ids))
    await assert_counts_match_a_scan(ledger, ledger_place)

    for (statuses, kinds, top), limit in itertools.product(FILTERS, (1, 7, 200)):
        expected = matching(ledger_place, statuses, kinds, top)
        seen: list[int] = []
        cursor = None
        while True:
            page = await ledger.list_runs(
                statuses=statuses, kinds=kinds, top_level=top, limit=limit, cursor=cursor
            )
            seen += [run.seq for run in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == expected, (statuses, kinds, top, limit)
        skipped = await ledger.list_runs(statuses=statuses, kinds=kinds, top_level=top, limit=5, offset=3)
        assert [run.seq for run in skipped.items] == expected[3:8]


def version_4_ledger(path: Path) -> None:
    """A ledger file as Atelier made it before counts were kept (schema version 4)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    for number in (1, 2, 3, 4):
        [script] = [
            entry.read_text()
            for entry in (resources.files("core.ledger") / "migrations").iterdir()
            if entry.name.startswith(f"000{number}_")
        ]
        conn.executescript(script)
    conn.execute("PRAGMA user_version=4")
    rows = []
    for index, (kind, status) in enumerate(
        itertools.product(("image", "batch", "pod"), [s.value for s in RunStatus])
    ):
        rows.append((f"{index:026d}", kind, None, status, None))
    rows.append(("1" * 26, "image", f"{0:026d}", "completed", None))  # a batch child
    rows.append(("2" * 26, "image", None, "failed", f"pod:{2:026d}:design"))  # a products run's part
    conn.executemany(
        "INSERT INTO runs (id, kind, parent_id, status, idempotency_key, priority, inputs, backend, "
        "created_at) VALUES (?, ?, ?, ?, ?, 'normal', '{}', 'local', 1.0)",
        rows,
    )
    conn.close()


async def test_opening_a_version_4_ledger_counts_the_runs_it_already_holds(path: Path) -> None:
    version_4_ledger(path)
    upgraded = SQLiteLedger.open(path)
    try:
        assert upgraded.schema_version == 6
        assert await upgraded.count_runs() == 17
        assert await upgraded.count_runs(statuses={RunStatus.COMPLETED}) == 4
        assert await upgraded.count_runs(statuses={RunStatus.COMPLETED}, top_level=True) == 3
        assert await upgraded.count_runs(kinds={RunKind.IMAGE}, top_level=True) == 5
        await assert_counts_match_a_scan(upgraded, path)
        # and keeps counting from there
        await upgraded.update_run("2" * 26, status=RunStatus.QUEUED)
        await upgraded.delete_run(f"{0:026d}")
        await assert_counts_match_a_scan(upgraded, path)
    finally:
        await upgraded.close()

    reopened = SQLiteLedger.open(path)  # the backfill is not applied twice
    try:
        await assert_counts_match_a_scan(reopened, path)
    finally:
        await reopened.close()


async def test_mean_duration_follows_the_newest_finished_runs_and_every_change(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    images = {RunKind.IMAGE}
    assert await ledger.mean_duration(statuses={RunStatus.COMPLETED}, kinds=images) is None
    old = await ledger.insert_run(new_run(created_at=100.0))
    await ledger.update_run(old.id, status=RunStatus.COMPLETED, started_at=100.0, finished_at=110.0)
    new = await ledger.insert_run(new_run(created_at=200.0))
    await ledger.update_run(
        new.id, status=RunStatus.COMPLETED, finished_at=202.0
    )  # never started: from creation
    assert await ledger.mean_duration(statuses={RunStatus.COMPLETED}, kinds=images) == 6.0
    assert await ledger.mean_duration(statuses={RunStatus.COMPLETED}, kinds=images, newest=1) == 2.0

    # Asked again after a change, by this ledger or by another process, it answers anew.
    await ledger.update_run(new.id, finished_at=204.0)
    assert await ledger.mean_duration(statuses={RunStatus.COMPLETED}, kinds=images) == 7.0
    ledger_place.raw("UPDATE runs SET finished_at = 120.0 WHERE id = ?", old.id)
    assert await ledger.mean_duration(statuses={RunStatus.COMPLETED}, kinds=images) == 12.0
