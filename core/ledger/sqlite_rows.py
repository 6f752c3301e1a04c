"""A run's and a file's rows in the SQLite ledger: `Run` and `Artifact` to column values and back.

Kept apart from the adapter's operations (`core.ledger.sqlite`) and the statements they run
(`core.ledger.sqlite_queries`) because it is the one place that knows how a run's field is stored
(enums as their values, `inputs`/`result`/`meta` as compact JSON, `Increment`s as plain numbers)
and the order of a run's and a file's columns. The PostgreSQL adapter reads and writes runs
through it too (its JSON columns come back as JSON text, like SQLite's). It sits on every read and write of a run, so it is written
for speed: a run is read from its row by position in `RUN_COLUMNS`' order (by name,
`sqlite3.Row` compares names one by one), enums come from dicts built once, and JSON is written
by one compact encoder built once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from core.ledger import Increment
from core.models import Artifact, Priority, Run, RunKind, RunStatus

# A run's columns, in the order `run_from_row` reads them.
RUN_COLUMNS = (
    "seq, id, kind, parent_id, status, priority, progress, step, max_steps, message, inputs, result, "
    "error, attempts, max_attempts, timeout_s, idempotency_key, backend, backend_handle, created_at, "
    "started_at, finished_at, meta"
)
# A file's columns, in the order `artifact_from_row` reads them.
ARTIFACT_COLUMNS = "run_id, filename, media_type, size, sha256, storage_key, width, height"
_JSON_COLUMNS = frozenset({"inputs", "result", "meta"})
_ENUMS = (RunStatus, Priority, RunKind)
# Compact JSON, as json.dumps(..., separators=(",", ":")) writes it, from one encoder built once
# (json.dumps builds a new one on every call that passes separators).
to_json = json.JSONEncoder(separators=(",", ":")).encode
_KINDS = {kind.value: kind for kind in RunKind}
_STATUSES = {status.value: status for status in RunStatus}
_PRIORITIES = {priority.value: priority for priority in Priority}


def column_converter(name: str, kind: type) -> Callable[[Any], Any] | None:
    """How column `name` of a run stores a new value of type `kind` (None: as it is)."""
    if name in _JSON_COLUMNS and kind is not type(None):
        return to_json
    if issubclass(kind, _ENUMS):
        return _value_of
    if issubclass(kind, Increment):
        return int
    return None


# An enum member's `_value_` (what its `value` property returns, without the property's cost).
_value_of = attrgetter("_value_")


def new_run_row(run: Run) -> tuple[Any, ...]:
    """A new run's row: every column of `RUN_COLUMNS` but `seq` (the ledger numbers it), in order."""
    return (
        run.id,
        run.kind._value_,
        run.parent_id,
        run.status._value_,
        run.priority._value_,
        run.progress,
        run.step,
        run.max_steps,
        run.message,
        to_json(run.inputs),
        None if run.result is None else to_json(run.result),
        run.error,
        run.attempts,
        run.max_attempts,
        run.timeout_s,
        run.idempotency_key,
        run.backend,
        run.backend_handle,
        run.created_at,
        run.started_at,
        run.finished_at,
        None if run.meta is None else to_json(run.meta),
    )


def run_from_row(row: Sequence[Any]) -> Run:
    """A run from a row whose first columns are `RUN_COLUMNS`, in their order (read by position:
    by name, sqlite3.Row compares names one by one)."""
    (seq, run_id, kind, parent_id, status, priority, progress, step, max_steps, message, inputs, result,
     error, attempts, max_attempts, timeout_s, idempotency_key, backend, backend_handle, created_at,
     started_at, finished_at, meta) = row[:23]  # fmt: skip
    return Run(
        id=run_id,
        seq=seq,
        kind=_KINDS[kind],
        parent_id=parent_id,
        status=_STATUSES[status],
        priority=_PRIORITIES[priority],
        progress=progress,
        step=step,
        max_steps=max_steps,
        message=message,
        inputs=json.loads(inputs),
        result=None if result is None else json.loads(result),
        error=error,
        attempts=attempts,
        max_attempts=max_attempts,
        timeout_s=timeout_s,
        idempotency_key=idempotency_key,
        backend=backend,
        backend_handle=backend_handle,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        meta=None if meta is None else json.loads(meta),
    )


def run_with_artifacts(rows: Sequence[Sequence[Any]]) -> Run | None:
    """The run of `core.ledger.sqlite_queries.RUN_BY_ID`'s (or `RUN_BY_SEQ`'s) rows, with its
    files (None when there are no rows)."""
    if not rows:
        return None
    run = run_from_row(rows[0])
    if rows[0][23] is not None:
        run.artifacts = [artifact_from_row((run.id, *row[23:])) for row in rows]
    return run


def artifact_rows(artifacts: Sequence[Artifact]) -> list[tuple[Any, ...]]:
    """The rows of `artifacts`, in the columns' order of `core.ledger.sqlite_queries.PUT_ARTIFACT`."""
    return [
        (a.run_id, a.filename, a.media_type, a.size, a.sha256, a.storage_key, a.width, a.height)
        for a in artifacts
    ]


def artifact_from_row(row: Sequence[Any]) -> Artifact:
    """A file from a row of `ARTIFACT_COLUMNS`, in their order."""
    run_id, filename, media_type, size, sha256, storage_key, width, height = row[:8]
    return Artifact(
        run_id=run_id,
        filename=filename,
        media_type=media_type,
        size=size,
        sha256=sha256,
        storage_key=storage_key,
        width=width,
        height=height,
    )
