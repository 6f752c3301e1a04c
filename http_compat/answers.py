"""Status answers prepared once and sent again until what they show changes.

Clients poll a run's status, and go on fetching it once it has finished. Such an answer is a
function of the request (path, query, the base URL its links use) and of what it is built from
(its basis: the run as the engine reads it, live progress included, and for some contracts its
log lines), so each contract keeps, per request, the last answer it built and its basis:

- a request's answer is built afresh only when the basis read for it differs from the kept one
  (a run's step, status, files, a new log line...); otherwise the kept bytes are sent again;
- the read itself is spared while the ledger's change marker (`Ledger.change_marker`: SQLite's
  data_version, taken before the read the basis came from) stands, since nothing at all has
  been committed since, by this process or another (the CLI deleting a run, a second server
  retrying one); and, for a run that is not finished, while its live progress (kept in memory,
  not in the ledger: `Engine.live_progress`, taken before the read too) is the same object.

So a retried, deleted or otherwise changed run is never answered from here. Answers that read
more than their basis (a batch's children, a products run's products) are never kept, and their
requests skip the marker.
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


def single(run: Run) -> Run | None:
    """The run, when its answer is built from it alone: not a batch (whose answer reads its children)."""
    return None if run.kind is RunKind.BATCH else run


# A live progress not known to be the basis's: the next request reads the run.
_UNKNOWN = object()


@dataclass(slots=True)
class _Kept(Generic[Basis]):
    # The marker and the run's live progress taken before the read `basis` came from.
    marker: int | None
    progress: object
    final: bool
    run_id: str
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


class KeptAnswers:
    """One contract's kept answers (see the module docstring)."""

    def __init__(self, engine: Engine, size: int = KEPT_ANSWERS) -> None:
        self._engine = engine
        self._size = size
        self._kept: dict[Hashable, _Kept[Any]] = {}
        # Requests whose answers read more than their basis (never kept).
        self._unkept: dict[Hashable, None] = {}

    async def answer(
        self,
        request: Request,
        read: Callable[[], Awaitable[Basis]],
        render: Callable[[Basis], Awaitable[Response]],
        alone: Callable[[Basis], Run | None],
    ) -> Response:
        """The answer to `request`: `render(await read())`, or the one kept for it while still
        right. `alone(basis)` is the run the basis is about when the answer is built from the
        basis alone (it may be kept), None when rendering reads more (it may not)."""
        scope = request.scope
        key = (
            scope["path"],
            scope["query_string"],
            scope.get("root_path", ""),
            scope["scheme"],
            _host(scope),
        )
        if key in self._unkept:
            return await render(await read())
        kept = self._kept.get(key)
        marker = self._engine.ledger.change_marker()
        progress: object = _UNKNOWN
        if kept is not None:
            progress = None if kept.final else self._engine.live_progress(kept.run_id)
            if marker is not None and kept.marker == marker and kept.progress is progress:
                return _Prepared(kept)
        try:
            basis = await read()
        except Exception:
            self._kept.pop(key, None)  # the run is gone (or unreadable): so is its answer
            raise
        if kept is not None and kept.basis == basis:
            kept.marker, kept.progress = marker, progress
            return _Prepared(kept)
        response = await render(basis)
        run = alone(basis)
        if run is not None and response.status_code == 200:
            final = run.status.is_final
            if final:
                progress = None
            elif kept is None or kept.run_id != run.id:
                progress = _UNKNOWN  # not taken before this read
            _make_room(self._kept, key, self._size)
            self._kept[key] = _Kept(
                marker, progress, final, run.id, basis, 200, bytes(response.body), list(response.raw_headers)
            )
        else:
            self._kept.pop(key, None)
            if run is None:
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
