"""Errors a caller can act on. Front doors map these to their own shapes and status codes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class AtelierError(Exception):
    """Base of every error the engine raises on purpose; its text is safe to show a user."""


class FieldProblem(NamedTuple):
    """One bad field of a request and what is wrong with it, e.g. ("width", "must be ... (got 100)")."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class InvalidInput(AtelierError):
    """One or more request fields are out of range or malformed. Nothing was recorded.

    `field` and `problem` are the first bad field's; `problems` lists every one, and the text
    names them all on one line ("width: ...; steps: ...").
    """

    def __init__(self, field: str, problem: str, *, more: Iterable[FieldProblem] = ()) -> None:
        self.field = field
        self.problem = problem
        self.problems = (FieldProblem(field, problem), *more)
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def of(cls, problems: Iterable[FieldProblem]) -> InvalidInput:
        """All of `problems` (at least one) in one error."""
        first, *more = problems
        return cls(first.field, first.problem, more=more)


class RunNotFound(AtelierError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} does not exist (it may have been deleted)")


class ArtifactNotFound(AtelierError):
    def __init__(self, run_id: str, filename: str) -> None:
        super().__init__(f"run {run_id!r} has no file {filename!r}")


class CharacterNotFound(AtelierError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"Character {ref} not found (list_characters shows the ones that exist)")


class ProductNotFound(AtelierError):
    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        super().__init__(f"product {product_id!r} does not exist (list_products shows the ones that do)")


class Conflict(AtelierError):
    """The request is valid but the run's state does not allow it (e.g. retry a running run)."""


class HomeLocked(AtelierError):
    """Another Atelier process owns this data directory's scheduler."""


class LedgerUnavailable(AtelierError):
    """The ledger cannot take a change now (another process holds its write lock past the busy
    timeout, the disk is full, the file is read-only). Nothing was changed; trying again later can
    succeed, so front doors answer 503."""


class BackendError(Exception):
    """A backend could not produce a run's outputs.

    `retryable` says whether trying again can succeed (a lost connection can; a missing
    checkpoint or invalid workflow cannot).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)
