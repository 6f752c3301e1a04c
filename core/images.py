"""The image kind: what an `image` run asks for, and how it is made and kept.

Accepting a request: `validate` asks the backend new runs go to which workflow the request
runs with (filling in its defaults), fetches and checks the source of an image-to-image or
upscale run (`core.sources`), parses the `ImageSpec` and asks that backend whether it can
succeed. `new_runs` (one run) and `new_batch` (a batch parent and its image runs) make what
the engine records, with the queueing terms it checked: each source's bytes are stored first
(`keep_source`) so every attempt, and a retry after a restart, reads the same image; the runs
go in the lane of the configured backend. `same_request` answers a repeated idempotency key.
`list_workflows` and `list_models` say what requests can name on the configured backend (the
engine holds this object as `engine.images` for callers to ask), and `refresh_models` has the
backends read their model lists again once a trained LoRA is installed.

Executing it, as the `RunHandler` of `core.kinds`: `prepare` builds the backend's `Job` (the
source read back from storage), `execute` runs it on the run's backend, `complete` saves each
image as an artifact `image-NN.<ext>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio

from core import batches
from core.artifacts import ArtifactStore, input_key, run_key
from core.backends import NO_WORKFLOWS, GenerationBackend, ImageOutput, Job, ProgressCallback
from core.characters.catalog import Characters
from core.characters.generation import with_character
from core.errors import ArtifactNotFound, CharacterNotFound, Conflict, InvalidInput, RunNotFound
from core.ids import random_seed
from core.kinds import Attempt, AttemptFailed, Completion, Queueing
from core.models import OPERATIONS, Artifact, ImageSpec, Run, RunKind, SourceImage
from core.settings import Settings
from core.sources import SourcePolicy, fetch_source, load_source

# Largest side an upscale may produce.
MAX_UPSCALED_SIDE = 8192


@dataclass(slots=True, frozen=True)
class ImageWork:
    """One attempt of an image run, ready to hand to its backend."""

    backend: GenerationBackend
    job: Job


class ImageKind:
    """Image generation, image-to-image and upscaling on the configured backends.

    `find_run` looks a run up the way the engine's `get_run` does (a source may be another
    run's image).
    """

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore,
        backends: Mapping[str, GenerationBackend],
        find_run: Callable[[str], Awaitable[Run]],
        characters: Characters,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backends = backends
        self._find_run = find_run
        self._characters = characters
        self._sources = SourcePolicy(
            input_dirs=tuple(settings.allowed_input_dirs),
            fetch_hosts=frozenset(settings.allowed_fetch_hosts),
            max_bytes=settings.max_input_bytes,
            fetch_timeout_s=settings.fetch_timeout_s,
        )

    # -- what runs can name -------------------------------------------------------------------

    def list_workflows(self) -> dict[str, Any]:
        """The workflows runs can name on the configured backend, with their parameters; and user
        files that failed to load."""
        backend = self._backends.get(self._settings.backend)
        catalog = backend.workflows if backend is not None else NO_WORKFLOWS
        return {"workflows": catalog.describe(), "problems": catalog.problems}

    async def list_models(self) -> dict[str, Any]:
        """Model files installed on the configured backend, by kind."""
        backend = self._backends.get(self._settings.backend)
        models = await backend.models() if backend is not None else {}
        return {"backend": self._settings.backend, "models": models}

    async def refresh_models(self) -> None:
        """A LoRA was installed: backends re-read their model lists so it validates at once."""
        for backend in self._backends.values():
            await backend.refresh_models()

    # -- accepting a request ------------------------------------------------------------------

    async def validate(self, given: dict[str, Any]) -> tuple[ImageSpec, bytes | None]:
        """The validated spec (workflow defaults filled in, source fetched) and the source's bytes."""
        given = await with_character(given, self._characters, self._settings.backend)
        operation = given.get("operation", "txt2img")
        if operation not in OPERATIONS:
            raise InvalidInput("operation", f"must be one of {', '.join(OPERATIONS)} (got {operation!r})")
        asked = set(given)
        backend = self._backends.get(self._settings.backend)
        workflow = backend.workflow_for(operation, given.get("workflow")) if backend is not None else None
        if workflow is not None:
            given = {**workflow.defaults, **given, "workflow": workflow.name}
        raw_source = given.pop("source", None)
        loaded = None
        if operation == "txt2img":
            if raw_source is not None:
                raise InvalidInput(
                    "source", "is only for image-to-image and upscale (transform_image, upscale_image)"
                )
        else:
            if raw_source is None:
                raise InvalidInput(
                    "source", f"is required for {operation}: a run's image, a file path, a URL or base64"
                )
            if isinstance(raw_source, Mapping):  # already stored (a retry of a stored spec)
                given["source"] = raw_source
            else:
                loaded = await load_source(raw_source, self._sources, self._read_run_image)
                given["source"] = SourceImage(
                    sha256=hashlib.sha256(loaded.data).hexdigest(),
                    media_type=loaded.media_type,
                    width=loaded.width,
                    height=loaded.height,
                    origin=loaded.origin,
                ).model_dump()
        spec = ImageSpec.parse(given if "seed" in given else {**given, "seed": random_seed()})
        if workflow is not None:
            workflow.check(spec, asked)
        if spec.operation == "upscale" and spec.source is not None:
            side = max(spec.source.width, spec.source.height) * spec.effective_scale
            if side > MAX_UPSCALED_SIDE:
                raise InvalidInput(
                    "scale",
                    f"would make a {side:.0f}-pixel side; the largest is {MAX_UPSCALED_SIDE} (use a smaller scale)",
                )
        if backend is not None:
            backend.check(spec)
        return spec, loaded.data if loaded else None

    async def _read_run_image(self, run_id: str, filename: str | None) -> bytes:
        """A run's image as a source: the named file, or its first one."""
        try:
            run = await self._find_run(run_id)
            artifacts = [a for a in run.artifacts if filename in (None, a.filename)]
            if not artifacts:
                raise ArtifactNotFound(run_id, filename or "(any image)")
            return await self._store.read(artifacts[0].storage_key)
        except (RunNotFound, ArtifactNotFound) as exc:
            raise InvalidInput("source", str(exc)) from None

    async def read_source(self, value: str) -> tuple[bytes, str]:
        """The bytes a source string names, under image-to-image's source policy, and their origin."""
        return await fetch_source(value, self._sources, self._read_run_image)

    async def keep_source(self, spec: ImageSpec, source: bytes | None) -> None:
        """Store a fetched source's bytes where every attempt of the run reads them."""
        if source is not None and spec.source is not None:
            await self._store.put(input_key(spec.source.sha256, spec.source.media_type), source)

    def new_run(self, spec: ImageSpec, queueing: Queueing) -> Run:
        """A queued image run for `spec`, in the configured backend's lane."""
        max_steps = 1 if spec.operation == "upscale" else spec.steps
        return queueing.new_run(RunKind.IMAGE, self._settings.backend, spec.stored(), max_steps)

    async def new_runs(self, spec: ImageSpec, source: bytes | None, queueing: Queueing) -> list[Run]:
        """The run to record for a validated request (see `validate`), its source kept first."""
        await self.keep_source(spec, source)
        return [self.new_run(spec, queueing)]

    async def new_batch(
        self,
        items: Sequence[Mapping[str, Any]],
        item_meta: Sequence[Mapping[str, Any] | None] | None,
        queueing: Queueing,
    ) -> list[Run]:
        """A batch parent and one image run per item, the parent first (see `core.batches`).

        Every item is validated before any source is kept; an invalid one names its index.
        """
        specs = await batches.validate_items(items, self.validate)
        parent = batches.new_parent(len(specs), queueing)
        children = []
        for (spec, source), meta in zip(specs, item_meta or [None] * len(specs), strict=True):
            await self.keep_source(spec, source)
            child = self.new_run(
                spec, replace(queueing, idempotency_key=None, meta=dict(meta) if meta else None)
            )
            batches.attach(parent, child)
            children.append(child)
        return [parent, *children]

    @staticmethod
    def same_request(existing: Run, asked: ImageSpec, seed_given: bool) -> Run:
        """`existing` if it was made by the same request; else `Conflict` (the key was reused)."""
        wanted = asked.stored()
        if not seed_given:
            # A request without a seed matches whatever seed the first one was given.
            wanted["seed"] = existing.inputs.get("seed")
        if wanted != existing.inputs:
            raise Conflict(
                f"idempotency key {existing.idempotency_key!r} was used for a different request "
                f"(run {existing.id}); use a new key for new parameters"
            )
        return existing

    # -- executing it (RunHandler) ------------------------------------------------------------

    async def prepare(self, run: Run, attempt: Attempt) -> ImageWork:
        backend = self._backends[run.backend]
        spec = ImageSpec.model_validate(run.inputs)
        job = Job(
            run_id=run.id,
            attempt=attempt.number,
            spec=spec,
            resume_handle=attempt.resume_handle,
            record_handle=attempt.record_handle,
            ticket=attempt.ticket,
            shutting_down=attempt.shutting_down,
        )
        try:
            if spec.source is not None:
                job.source = await self._store.read(input_key(spec.source.sha256, spec.source.media_type))
        except OSError as exc:
            raise AttemptFailed(
                f"its source image cannot be read from the data directory ({exc})", retryable=False
            ) from exc
        # The preview renderer applies preview styles; a diffusion LoRA is for ComfyUI only.
        if spec.character is not None and spec.character.trainer == "preview" and run.backend == "local":
            job.styles = (await self._character_style(spec),)
        return ImageWork(backend, job)

    async def _character_style(self, spec: ImageSpec) -> tuple[bytes, float]:
        """The preview style of the character version the run names: its file's bytes and strength."""
        use = spec.character
        assert use is not None
        try:
            character = await self._characters.get(use.id)
            version = next(v for v in character.versions if v.version == use.version)
            data = await anyio.Path(self._characters.lora_path(character, version)).read_bytes()
        except (CharacterNotFound, StopIteration, OSError) as exc:
            raise AttemptFailed(
                f"character {use.name!r} LoRA v{use.version} is gone (deleted since the run was made): {exc}",
                retryable=False,
            ) from None
        return data, min(use.strength, 1.0)  # a style is fully applied at 1

    async def forget(self, run: Run) -> None:
        return None  # an image run keeps nothing beyond its files

    async def execute(self, work: ImageWork, on_progress: ProgressCallback) -> list[ImageOutput]:
        return await work.backend.run(work.job, on_progress)

    async def complete(self, run: Run, outputs: list[ImageOutput]) -> Completion:
        artifacts = []
        for index, output in enumerate(outputs, start=1):
            filename = f"image-{index:02d}.{output.extension}"
            key = run_key(run.id, filename)
            await self._store.put(key, output.data)
            artifacts.append(
                Artifact(
                    run_id=run.id,
                    filename=filename,
                    media_type=output.media_type,
                    size=len(output.data),
                    sha256=hashlib.sha256(output.data).hexdigest(),
                    storage_key=key,
                    width=output.width,
                    height=output.height,
                )
            )
        return Completion(
            result={"images": [a.filename for a in artifacts]},
            artifacts=artifacts,
            log=f"completed with {len(artifacts)} image(s)",
        )
