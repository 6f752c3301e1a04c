"""The training kind: a run that trains a character's LoRA, as the `RunHandler` of `core.kinds`.

Accepting a request (`validate`, `new_run`): the character must exist and have training images,
and the parameters are checked against the trainer's declaration (`core.training.parameters`).
The run goes to the `training` lane, which has its own concurrency
(`ATELIER_TRAINING_CONCURRENCY`, default 1), so a long training never holds up image runs and
image runs never hold it up. Its inputs record the character, the trainer and every parameter.

Executing it: `prepare` builds the `TrainingJob` from the character as it is now (deleted
meanwhile: the run fails, not retried) and records the run's working folder as its backend
handle, so an Atelier restart hands the run back to the trainer without spending an attempt,
and the trainer resumes from its last checkpoint there. `execute` is the trainer's `train`.
`complete` makes the finished file the character's next LoRA version (`Characters.keep_lora`,
which reads its header first, so a half-written file is never registered) and removes the
working folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from core.backends import ProgressCallback
from core.characters.catalog import Characters
from core.characters.models import Character, slug_of
from core.errors import BackendError, CharacterNotFound, Conflict, InvalidInput
from core.kinds import Attempt, AttemptFailed, Completion, Queueing
from core.ledger import Ledger
from core.models import ACTIVE_STATUSES, Run, RunKind
from core.settings import Settings
from core.training import TrainedLora, Trainer, TrainingImage, TrainingJob
from core.training.parameters import check_parameters

LANE = "training"


class TrainingKind:
    """LoRA training of characters with the configured trainer.

    `on_lora_kept` is told when a new version is kept (the engine refreshes the ComfyUI pool's
    model list so the new LoRA validates at once).
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        characters: Characters,
        trainer: Trainer,
        on_lora_kept: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._characters = characters
        self.trainer = trainer
        self._on_lora_kept = on_lora_kept

    # -- accepting a request ------------------------------------------------------------------

    async def validate(
        self, character_ref: str, params: Mapping[str, Any]
    ) -> tuple[Character, dict[str, Any]]:
        """The character and every parameter's value; `InvalidInput` / `CharacterNotFound` otherwise."""
        if not isinstance(params, Mapping):
            raise InvalidInput("config", "must be an object of training parameters")
        checked = check_parameters(self.trainer.parameters(), params)
        character = await self._characters.get(character_ref)
        if not character.images:
            raise InvalidInput(
                "character",
                "No training images uploaded for this character (add 10-30 images of it first)",
            )
        return character, checked

    def new_run(self, character: Character, params: Mapping[str, Any], queueing: Queueing) -> Run:
        inputs = {
            "character_id": character.id,
            "character_name": character.name,
            "trigger_word": character.trigger_word,
            "trainer": self.trainer.name,
            "base_model": self.trainer.base_model,
            "lora_name": slug_of(character.name),
            "image_count": len(character.images),
            "params": dict(params),
        }
        steps = int(params["steps"])
        return queueing.new_run(
            RunKind.TRAINING, LANE, inputs, steps, timeout_s=self._settings.training_timeout_s
        )

    async def runs_of(self, character_id: str, active_only: bool = False) -> list[Run]:
        """A character's training runs, newest first (training runs are few: a scan is cheap)."""
        statuses = ACTIVE_STATUSES if active_only else None
        runs: list[Run] = []
        cursor = None
        while True:
            page = await self._ledger.list_runs(
                kinds={RunKind.TRAINING}, statuses=statuses, limit=200, cursor=cursor
            )
            runs += [run for run in page.items if run.inputs.get("character_id") == character_id]
            if page.next_cursor is None:
                return runs
            cursor = page.next_cursor

    @staticmethod
    def same_request(existing: Run, character: Character, params: Mapping[str, Any]) -> Run:
        if (
            existing.kind is not RunKind.TRAINING
            or existing.inputs.get("character_id") != character.id
            or (existing.inputs.get("params") != dict(params))
        ):
            raise Conflict(
                f"idempotency key {existing.idempotency_key!r} was used for a different request "
                f"(run {existing.id}); use a new key for new parameters"
            )
        return existing

    # -- executing it (RunHandler) ------------------------------------------------------------

    def workdir(self, run_id: str) -> Path:
        return self._settings.training_dir / run_id

    async def prepare(self, run: Run, attempt: Attempt) -> TrainingJob:
        try:
            character = await self._characters.get(run.inputs["character_id"])
        except CharacterNotFound:
            raise AttemptFailed(
                f"character {run.inputs.get('character_name')!r} was deleted before it could be trained",
                retryable=False,
            ) from None
        if not character.images:
            raise AttemptFailed(
                f"{character.name} has no training images any more (they were removed)", retryable=False
            )
        workdir = self.workdir(run.id)
        try:
            await anyio.to_thread.run_sync(lambda: workdir.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise AttemptFailed(
                f"cannot create the training folder {workdir}: {exc}", retryable=True
            ) from exc
        # Recorded as the run's handle: after a restart the run resumes here without spending an attempt.
        await attempt.record_handle(str(workdir))
        trigger = run.inputs.get("trigger_word", character.trigger_word)
        images = tuple(
            TrainingImage(self._characters.image_path(character, image), _caption(trigger, image.caption))
            for image in character.images
        )
        return TrainingJob(
            run_id=run.id,
            attempt=attempt.number,
            character_id=character.id,
            name=run.inputs.get("lora_name") or slug_of(character.name),
            trigger_word=trigger,
            images=images,
            params=run.inputs["params"],
            workdir=workdir,
        )

    async def execute(self, job: TrainingJob, on_progress: ProgressCallback) -> TrainedLora:
        """Train, writing the trainer's few log lines to the run's log as they come."""
        lines: list[str] = []
        arrived = anyio.Event()

        def on_log(line: str) -> None:
            lines.append(line)
            arrived.set()

        async def write_lines() -> None:
            nonlocal arrived
            while True:
                await arrived.wait()
                arrived = anyio.Event()
                await self._write_log(job.run_id, lines)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(write_lines)
                try:
                    return await self.trainer.train(job, on_progress, on_log=on_log)
                finally:
                    group.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        await self._write_log(job.run_id, lines)
        except BaseExceptionGroup as group_error:
            # The trainer's own error, not a group: the task group only wrapped it (the engine
            # reads `BackendError.retryable`).
            if len(group_error.exceptions) == 1:
                raise group_error.exceptions[0] from None
            raise

    async def _write_log(self, run_id: str, lines: list[str]) -> None:
        while lines:
            try:
                await self._ledger.add_log(run_id, lines.pop(0))
            except Exception:  # a log line is not worth a run: the ledger's trouble is reported elsewhere
                return

    async def complete(self, run: Run, trained: TrainedLora) -> Completion:
        try:
            version = await self._characters.keep_lora(
                run.inputs["character_id"],
                trained.path,
                trainer=self.trainer.name,
                base_model=trained.base_model,
                steps=trained.steps,
                run_id=run.id,
            )
        except ValueError as exc:
            # The file's header does not parse: never registered; another attempt trains again.
            raise BackendError(f"the trainer's LoRA file is incomplete or corrupt ({exc})") from exc
        except CharacterNotFound:
            raise BackendError(
                f"character {run.inputs.get('character_name')!r} was deleted while it trained; "
                "its LoRA was not kept",
                retryable=False,
            ) from None
        await self.forget(run)
        if self._on_lora_kept is not None:
            outcome = self._on_lora_kept()
            if hasattr(outcome, "__await__"):
                await outcome
        resumed = f", resumed from step {trained.resumed_from_step}" if trained.resumed_from_step else ""
        return Completion(
            result={
                "character_id": run.inputs["character_id"],
                "character_name": run.inputs.get("character_name"),
                "version": version.version,
                "lora_file": version.filename,
                "comfyui_name": version.comfyui_name,
                "trainer": version.trainer,
                "base_model": version.base_model,
                "steps": version.steps,
                "sha256": version.sha256,
                "resumed_from_step": trained.resumed_from_step,
            },
            log=f"trained {run.inputs.get('character_name')} LoRA v{version.version} "
            f"({version.trainer}, {version.steps} steps{resumed})",
        )

    async def forget(self, run: Run) -> None:
        """Remove the run's working folder (its dataset copy and checkpoints)."""
        workdir = self.workdir(run.id)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(workdir, ignore_errors=True))


def _caption(trigger_word: str, caption: str) -> str:
    """An image's caption with the trigger word at its front (unless it is already in it)."""
    caption = caption.strip()
    if not caption:
        return trigger_word
    return caption if trigger_word in caption.split() else f"{trigger_word}, {caption}"
