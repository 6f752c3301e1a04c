"""Training as callers see it (`engine.training`): queue a character's training, its training
runs, the trainer's parameters and health, and deleting a character (never while it trains).

Submitting checks the queueing terms and the request (`core.training.kind`), then ends in the
engine's one accept path (`core.kinds.Accept`), which records, publishes and queues the run
like any other. One training of a character at a time: its next version would race the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.characters.catalog import Characters
from core.errors import Conflict
from core.kinds import Accept, Queueing
from core.models import Priority, Run
from core.settings import Settings
from core.training.kind import TrainingKind


class Trainings:
    """A character's LoRA training runs with the configured trainer.

    `live` brings a run's progress up to date, as `Engine.get_run` answers it.
    """

    def __init__(
        self,
        settings: Settings,
        characters: Characters,
        kind: TrainingKind,
        accept: Accept,
        live: Callable[[Run], Run],
    ) -> None:
        self._settings = settings
        self._characters = characters
        self._kind = kind
        self._accept = accept
        self._live = live

    async def submit(
        self,
        character: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Run:
        """Queue a training run of `character` (id or name) with the trainer's `params`.

        Refused (`Conflict`) while the same character has a training queued or running: its next
        version would race the other. The run lives in the `training` lane (see `core.training.kind`).
        """
        # A training's time limit is its own (ATELIER_TRAINING_TIMEOUT_S).
        queueing = Queueing.check(
            priority, idempotency_key, max_attempts, None, meta, default_attempts=self._settings.max_attempts
        )
        found, checked = await self._kind.validate(character, params or {})

        async def new_run() -> list[Run]:
            busy = await self.runs_of(found.id, active_only=True)
            if busy:
                raise Conflict(
                    f"{found.name} is already being trained (run {busy[0].id}, {busy[0].status.value}); "
                    "wait for it or cancel it first"
                )
            return [self._kind.new_run(found, checked, queueing)]

        return await self._accept(
            queueing,
            new_run,
            log=f"queued: train {found.name} with {self._kind.trainer.name} ({checked['steps']} steps)",
            same_request=lambda existing: self._kind.same_request(existing, found, checked),
        )

    async def runs_of(self, character_id: str, *, active_only: bool = False) -> list[Run]:
        """A character's training runs, newest first (only queued and running ones if `active_only`)."""
        return [self._live(r) for r in await self._kind.runs_of(character_id, active_only)]

    async def delete_character(self, ref: str) -> None:
        """Delete a character with its images and LoRA files; refused (`Conflict`) while it trains.

        Finished runs that used it keep their images and their record of which version they used.
        """
        character = await self._characters.get(ref)
        busy = await self.runs_of(character.id, active_only=True)
        if busy:
            raise Conflict(
                f"{character.name} is being trained (run {busy[0].id}); cancel that run first, then delete it"
            )
        await self._characters.delete(character.id)

    def parameters(self) -> dict[str, Any]:
        """The configured trainer: its name, base model and parameters (the MCP schema and Isengard's `/info`)."""
        trainer = self._kind.trainer
        return {
            "trainer": trainer.name,
            "base_model": trainer.base_model,
            "parameters": {name: p.to_dict() for name, p in trainer.parameters().items()},
        }

    async def health(self) -> dict[str, Any]:
        """Whether training can start now (`{"ok": ...}` and, if not, why)."""
        return await self._kind.trainer.health()
