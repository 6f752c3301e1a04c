"""The SQL of the SQLite ledger's run operations: filters, list pages, updates, and page cursors.

Kept apart from the adapter's operations (`core.ledger.sqlite`) because how these statements
are written decides what a read costs at 100,000 runs: a list page reads from an index already
in order (`page_query`), a count is a sum over `run_counts` (`count_filters`), a run and its
files are one statement (`RUN_BY_ID`). Fixed statements are built once at import; an update's
is built once per shape of change (the ledger keeps them). A run's columns and their order
belong to its row mapping (`core.ledger.sqlite_rows`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from typing import Any

from core.errors import InvalidInput
from core.ledger import Increment
from core.ledger.records import insert_into
from core.ledger.sqlite_rows import RUN_COLUMNS, column_converter
from core.models import RunKind, RunStatus

_UPDATABLE = frozenset(
    {
        "status", "priority", "progress", "step", "max_steps", "message", "result", "error", "attempts",
        "max_attempts", "timeout_s", "backend", "backend_handle", "started_at", "finished_at", "meta",
    }
)  # fmt: skip
# What `mean_duration` reads of a run (seq too: its pages are ordered by it).
TIMING_COLUMNS = "created_at, started_at, finished_at, seq"
# One run with its files in one statement: a row per file (one with NULL file columns if it has none),
# the file's columns after the run's (`core.ledger.sqlite_rows.run_with_artifacts` reads them by position).
_RUN_WITH_ARTIFACTS = (
    f"SELECT {RUN_COLUMNS}, a.filename, a.media_type, a.size, a.sha256, a.storage_key, a.width, a.height "
    "FROM runs LEFT JOIN artifacts AS a ON a.run_id = runs.id WHERE runs.{key} = ? ORDER BY a.filename"
)
RUN_BY_ID = _RUN_WITH_ARTIFACTS.format(key="id")
RUN_BY_SEQ = _RUN_WITH_ARTIFACTS.format(key="seq")
# One run's row alone, as an update leaves it (read back in the update's transaction: cheaper
# in SQLite than the UPDATE's RETURNING, which copies the row into a temporary table first).
RUN_ROW_BY_ID = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
# A new run's row: every column but `seq`, which the database numbers (SQLite: the row's rowid,
# read as the cursor's `lastrowid`, cheaper than a RETURNING clause, as for updates above).
INSERT_RUN = insert_into("runs", RUN_COLUMNS.removeprefix("seq, "))
# A log line of run ?1, numbered after its run's last one (run_logs is keyed by run and number).
# VALUES with the number as a scalar subquery: as INSERT ... SELECT, SQLite would first copy the
# row into a temporary table, since the SELECT reads the table it inserts into (twice the cost:
# 47k instructions a line against 22k; a run's start and its end write one each).
_NEXT_LOG_ID = "(SELECT COALESCE(MAX(id), 0) + 1 FROM run_logs WHERE run_id = ?1)"
ADD_LOG = f"INSERT INTO run_logs (run_id, id, at, level, message) VALUES (?1, {_NEXT_LOG_ID}, ?2, ?3, ?4)"
# The same for a run that may be gone meanwhile (then nothing is written).
ADD_LOG_IF_RUN = (
    f"INSERT INTO run_logs (run_id, id, at, level, message) SELECT ?1, {_NEXT_LOG_ID}, ?2, ?3, ?4 "
    "FROM runs WHERE id = ?1"
)
# A run's file, written over the one of that name if the run has it already.
PUT_ARTIFACT = (
    "INSERT OR REPLACE INTO artifacts (run_id, filename, media_type, size, sha256, "
    "storage_key, width, height) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

# A run that is neither a batch's child nor a part of a products run (its designs and upscales,
# which core.publishing.products_kind submits with idempotency keys `pod:<run>:...`). Written
# exactly as the `runs_top_level` index and the run_counts triggers of migration 0005 write it, so that
# SQLite can use that partial index.
TOP_LEVEL = "parent_id IS NULL AND (idempotency_key IS NULL OR substr(idempotency_key, 1, 4) != 'pod:')"


def run_filters(
    statuses: Collection[RunStatus] | None,
    kinds: Collection[RunKind] | None,
    parent_id: str | None,
    top_level: bool,
    *,
    top_level_clause: str = TOP_LEVEL,
) -> tuple[str, list[Any]]:
    """The WHERE clause over `runs` (empty when nothing is filtered) and its arguments."""
    where: list[str] = []
    args: list[Any] = []
    if statuses:
        where.append(f"status IN ({', '.join('?' for _ in statuses)})")
        args.extend(s.value for s in statuses)
    if kinds:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        args.extend(k.value for k in kinds)
    if parent_id is not None:
        where.append("parent_id = ?")
        args.append(parent_id)
    if top_level:
        where.append(top_level_clause)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def count_filters(
    statuses: Collection[RunStatus] | None, kinds: Collection[RunKind] | None, top_level: bool
) -> tuple[str, list[Any]]:
    """The WHERE clause over `run_counts` for the runs these filters select."""
    return run_filters(statuses, kinds, None, top_level, top_level_clause="top_level = 1")


def page_query(
    statuses: Collection[RunStatus] | None,
    kinds: Collection[RunKind] | None,
    parent_id: str | None,
    top_level: bool,
    before_seq: int | None,
    *,
    columns: str = RUN_COLUMNS,
    arm_limit: int | None = None,
) -> tuple[str, list[Any]]:
    """The runs a list page reads, to be ordered by `seq DESC` and limited by the caller.

    Filtered by status or kind, it is one arm per (status, kind) pair, each a range of
    `runs_by_status_kind` (or `runs_top_level`) already in `seq` order; SQLite merges the arms
    as it reads them and stops at the limit, so a page costs its own size plus one seek per
    arm, however many runs match in all. (One `status IN (...) AND kind IN (...)` query would
    read and sort every match.) Without those filters the runs are read newest first straight
    from the table (or from `runs_by_parent` for top-level runs or one batch's children).

    PostgreSQL (15) merges the arms only when each has its own ORDER BY and LIMIT (otherwise it
    reads every match and sorts them): `arm_limit` (the page's limit plus its offset) gives each
    arm those, so a page reads at most that many runs an arm, newest first. (SQLite does not
    accept an arm in parentheses, and needs none.)
    """
    if parent_id is not None or not (statuses or kinds):
        clause, args = run_filters(statuses, kinds, parent_id, top_level)
        if before_seq is not None:
            clause += (" AND " if clause else "WHERE ") + "seq < ?"
            args.append(before_seq)
        return f"SELECT {columns} FROM runs {clause}", args
    arm = f"SELECT {columns} FROM runs WHERE status = ? AND kind = ?"
    if top_level:
        arm += f" AND {TOP_LEVEL}"
    if before_seq is not None:
        arm += " AND seq < ?"
    arms, args = [], []
    pairs = [
        (s, k)
        for s in sorted({s.value for s in statuses or RunStatus})
        for k in sorted({k.value for k in kinds or RunKind})
    ]
    if arm_limit is not None and len(pairs) > 1:
        arm = f"({arm} ORDER BY seq DESC LIMIT {int(arm_limit)})"
    for status, kind in pairs:
        arms.append(arm)
        args.extend((status, kind) if before_seq is None else (status, kind, before_seq))
    return " UNION ALL ".join(arms), args


def mean_duration_query(
    statuses: Collection[RunStatus] | None,
    kinds: Collection[RunKind] | None,
    top_level: bool,
    newest: int,
    *,
    limit_arms: bool = False,
) -> tuple[str, list[Any]]:
    """The mean seconds from start (or creation) to finish of the finished runs among the
    `newest` a list with these filters shows first, and its arguments (`limit_arms`: see `page_query`)."""
    sql, args = page_query(
        statuses,
        kinds,
        None,
        top_level,
        None,
        columns=TIMING_COLUMNS,
        arm_limit=newest if limit_arms else None,
    )
    sql = (
        f"SELECT AVG(finished_at - COALESCE(started_at, created_at)) FROM ({sql} ORDER BY seq DESC "
        "LIMIT ?) AS newest WHERE finished_at IS NOT NULL"
    )
    args.append(newest)
    return sql, args


def status_values(expect: Collection[RunStatus] | None) -> tuple[str, ...] | None:
    """The statuses an update expects, as a key of its statement's shape and as its arguments."""
    return None if expect is None else tuple(sorted(s.value for s in expect))


def update_statement(
    columns: tuple[tuple[str, bool], ...], expect: tuple[str, ...] | None, returning: bool = True
) -> str:
    """An UPDATE of one run, returning its row if `returning`: `columns` are (name, added to
    rather than set)."""
    unknown = {name for name, _ in columns} - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{name} = {name} + ?" if add else f"{name} = ?" for name, add in columns) or "seq = seq"
    guard = f" AND status IN ({', '.join('?' for _ in expect)})" if expect is not None else ""
    return f"UPDATE runs SET {sets} WHERE id = ?{guard}" + (f" RETURNING {RUN_COLUMNS}" if returning else "")


def update_of(
    run_id: str,
    expect: Collection[RunStatus] | None,
    changes: dict[str, Any],
    statements: dict[tuple[Any, ...], Any],
    dialect: Callable[[str], str] = str,
    *,
    returning: bool = True,
) -> tuple[str, list[Any]]:
    """The UPDATE of `update_run` and its arguments (returning the run's row if `returning`). Every
    run's transitions pass here, so what depends only on the shape of the change (which columns,
    the types of their values, the statuses expected) is worked out once, in `dialect`, and kept
    in `statements`: the statement, the values to convert (by position, with their
    `column_converter`), the expected statuses' values."""
    values = list(changes.values())
    expected = None if expect is None else tuple(expect)
    shape = (tuple(changes), tuple(map(type, values)), expected)
    known = statements.get(shape)
    if known is None:
        names, kinds, _ = shape
        expected_values = status_values(expected)
        columns = tuple((name, kind is Increment) for name, kind in zip(names, kinds, strict=True))
        converters = (column_converter(name, kind) for name, kind in zip(names, kinds, strict=True))
        known = statements[shape] = (
            dialect(update_statement(columns, expected_values, returning)),
            tuple((index, convert) for index, convert in enumerate(converters) if convert is not None),
            expected_values or (),
        )
    sql, conversions, expected_values = known
    for index, convert in conversions:
        values[index] = convert(values[index])
    values.append(run_id)
    values.extend(expected_values)
    return sql, values


def encode_cursor(seq: int) -> str:
    """The cursor of the page after the run numbered `seq` (opaque to clients)."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The `seq` a cursor from `encode_cursor` resumes before; `InvalidInput` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "seq" or not value.isdigit() or int(value) >= 2**63:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            "cursor", "is not a cursor this server returned; start again without one"
        ) from None
