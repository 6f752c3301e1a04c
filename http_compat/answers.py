"""Answers to a finished run's status GET, prepared once and reused until the ledger changes.

Clients poll a run's status, and go on fetching it once it has finished. Such an answer is a
function of what the ledger holds (the run's row and files, for some contracts its log lines)
and of the request (path, query, the base URL its links use), so each contract keeps the answers
it built for finished runs, keyed by the request, with what they were built from and the
ledger's change marker (`Ledger.change_marker`: SQLite's data_version) taken before reading it:

- while the marker stands, nothing at all has been committed to the ledger, by this process or
  another (the CLI deleting a run, a second server retrying one): the answer is sent as kept;
- once it has moved, the run is read again (one query), and the answer is reused only if what
  it is built from compares equal to what it was built from; otherwise it is built afresh.

So a retried, deleted or otherwise changed run is never answered from here. Queued and running
runs (their progress lives in memory, not in the ledger) are never kept, nor are runs whose
answer reads more than the run (a batch's children, a products run's products). A request whose
last answer could not be kept (a run still going) skips the marker: once its run has finished,
the next request takes it, and keeps that answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.models import Run, RunKind

Basis = TypeVar("Basis")
# Enough for every run a few clients poll at once; each entry is one answer's bytes.
KEPT_ANSWERS = 512


def finished_alone(run: Run) -> bool:
    """Whether the run's answer may be kept: it has finished, and it is not a batch."""
    return run.status.is_final and run.kind is not RunKind.BATCH


@dataclass(slots=True)
class _Kept(Generic[Basis]):
    marker: int
    basis: Basis
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class _Prepared(Response):
    """A kept answer sent again: its bytes and headers as they were (a fresh header list, since
    middleware such as CORS appends to the one it is sent)."""

    def __init__(self, kept: _Kept[Any]) -> None:
        self.status_code = kept.status
        self.body = kept.body
        self.raw_headers = list(kept.headers)
        self.background = None


class FinishedAnswers:
    """One contract's kept answers (see the module docstring)."""

    def __init__(self, engine: Engine, size: int = KEPT_ANSWERS) -> None:
        self._engine = engine
        self._size = size
        self._kept: dict[Hashable, _Kept[Any]] = {}
        # Requests whose last answer could not be kept (their runs are still going).
        self._unkept: dict[Hashable, None] = {}

    async def answer(
        self,
        request: Request,
        read: Callable[[], Awaitable[Basis]],
        render: Callable[[Basis], Awaitable[Response]],
        keep: Callable[[Basis], bool],
    ) -> Response:
        """The answer to `request`: `render(await read())`, or the one kept for it while still
        right. `keep(basis)` says whether an answer built from `basis` may be kept at all."""
        scope = request.scope
        key = (
            scope["path"],
            scope["query_string"],
            scope.get("root_path", ""),
            scope["scheme"],
            _host(scope),
        )
        if key in self._unkept:
            basis = await read()
            if keep(basis):
                del self._unkept[key]  # finished: the next request takes a marker, and keeps its answer
            return await render(basis)
        marker = self._engine.ledger.change_marker()
        kept = self._kept.get(key)
        if kept is not None and marker is not None and kept.marker == marker:
            return _Prepared(kept)
        try:
            basis = await read()
        except Exception:
            self._kept.pop(key, None)  # the run is gone (or unreadable): so is its answer
            raise
        if kept is not None and marker is not None and kept.basis == basis:
            kept.marker = marker
            return _Prepared(kept)
        response = await render(basis)
        if marker is not None and response.status_code == 200 and keep(basis):
            _make_room(self._kept, key, self._size)
            self._kept[key] = _Kept(marker, basis, 200, bytes(response.body), list(response.raw_headers))
        else:
            self._kept.pop(key, None)
            _make_room(self._unkept, key, self._size)
            self._unkept[key] = None
        return response


def _make_room(entries: dict[Hashable, Any], key: Hashable, size: int) -> None:
    """Make room for `key`, dropping the oldest entries."""
    while key not in entries and len(entries) >= size:
        del entries[next(iter(entries))]


def _host(scope: dict[str, Any]) -> bytes:
    for name, value in scope["headers"]:
        if name == b"host":
            return value
    return b""
