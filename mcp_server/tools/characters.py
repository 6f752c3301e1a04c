"""Tools for characters: create and change them, give them training images, train their LoRAs.

Decisions:
- A character is named by its id (`char-...`) or its name, whatever its case, in every tool.
- add_character_images takes sources exactly as transform_image does (a run's image, a file in
  an allowed folder, an allowed URL, base64), read under the same source policy
  (`engine.images.read_source`); what the bytes are is then judged by the one training-image check
  (`core.characters.uploads`), so a refused file gets its precise reason ("SVG is not
  accepted", "needs at least 256 pixels"). Each refused source is named by its index with its
  reason and the good ones are kept: a partly refused call is a success that lists what it refused.
- train_character's training parameters are built from the trainer's declaration
  (`engine.training.parameters()`): types, ranges, choices and defaults in the schema are the
  trainer's own, and a parameter the trainer does not use says so.
- delete_character while the character trains is a tool error saying to cancel the training run
  first (the product decision of issue 11): deleting never stops a training behind one's back.
- Errors name the argument they are about, like every other tool: a missing character is
  `character: ...`, a name already taken is `name: ...`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from core.characters.catalog import Upload
from core.characters.models import MAX_CAPTION_CHARS, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS
from core.engine import Engine
from core.errors import Conflict, InvalidInput
from mcp_server import character_views as cviews
from mcp_server.character_views import (
    CharacterDeleted,
    CharacterList,
    CharacterView,
    ImagesAdded,
    RefusedSource,
)
from mcp_server.tools.shared import (
    CREATES,
    READ_ONLY,
    STOPS,
    ToolList,
    WaitSeconds,
    run_result,
    tool_errors,
    wait_reporting,
)
from mcp_server.views import RunView

MAX_SOURCES_PER_CALL = 50
_RUN_IMAGE = re.compile(r"^atelier://runs/(?P<run>[0-9a-z]{26})(?:/images/(?P<file>[^/]+))?$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=_\-\s]+")

CharacterRef = Annotated[
    str,
    Field(description="Its id (char-...) or name (any case).", min_length=1, max_length=100),
]
Name = Annotated[
    str, Field(description="Its name, unique whatever the case.", min_length=1, max_length=MAX_NAME_CHARS)
]
Description = Annotated[
    str | None,
    Field(description="Who or what it is, in a sentence or two.", max_length=MAX_DESCRIPTION_CHARS),
]
TriggerWord = Annotated[
    str | None,
    Field(
        description="The word that calls up the LoRA in prompts: 2..48 of a-z, 0-9, _. "
        "Default: from the name (Mara -> mara_person).",
        max_length=100,
    ),
]
Sources = Annotated[
    list[str],
    Field(
        description=(
            "Images of it, each as transform_image's source: atelier://runs/<id>/images/<file> "
            "(or <run_id>/<file>, or a run id), a path in an allowed folder, an http(s) URL on this "
            "machine, or base64 PNG/JPEG/WebP (or a data: URL)."
        ),
        min_length=1,
        max_length=MAX_SOURCES_PER_CALL,
    ),
]
Captions = Annotated[
    list[str] | None,
    Field(
        description="One caption per source ('' for none), at most "
        f"{MAX_CAPTION_CHARS} characters; training puts the trigger word in front.",
        max_length=MAX_SOURCES_PER_CALL,
    ),
]
PriorityName = Annotated[
    Literal["low", "normal", "high", "urgent"], Field(description="Higher starts first.")
]
# train_character's own parameters: a trainer may not declare one of these names.
_TRAIN_TOOL_PARAMETERS = {"character", "priority", "idempotency_key", "wait_seconds", "ctx"}


def tools(engine: Engine, *, expose_paths: bool) -> list[Tool]:
    """create_character, list_characters, get_character, update_character, delete_character,
    add_character_images, remove_character_image and train_character over `engine`."""
    found = ToolList()

    async def shown(ref: str, text: str = "") -> CallToolResult:
        character = await engine.characters.get(ref)
        training = await engine.training.runs_of(character.id)
        return await cviews.character_result(
            engine, character, training, expose_paths=expose_paths, text=text
        )

    @found.tool(CREATES, structured_output=True)
    async def create_character(
        name: Name, description: Description = None, trigger_word: TriggerWord = None
    ) -> Annotated[CallToolResult, CharacterView]:
        """Create a character (a person, creature or object to train a LoRA of). Cheap, instant.

        Returns the character with its id and trigger word. Next: add 10-30 images of it with
        add_character_images, then train_character. A name already in use is refused.
        """
        with character_errors():
            made = await engine.characters.create(name, description or "", trigger_word)
            return await shown(
                made.id, f"Created {made.name} ({made.id}), trigger word {made.trigger_word!r}"
            )

    @found.tool(READ_ONLY, structured_output=True)
    async def list_characters() -> CharacterList:
        """Every character: id, name, trigger word, how many images and LoRA versions. Cheap.

        get_character shows one in full (images, versions, training runs).
        """
        with character_errors():
            return CharacterList(characters=[cviews.summary(c) for c in await engine.characters.list()])

    @found.tool(READ_ONLY, structured_output=True)
    async def get_character(character: CharacterRef) -> Annotated[CallToolResult, CharacterView]:
        """One character in full: its training images (a few as small thumbnails, every one as a
        resource link), its LoRA versions (trainer, steps, the file and whether ComfyUI can load it),
        the active version, its training runs, and the trainer's parameters train_character takes.
        """
        with character_errors():
            return await shown(character)

    @found.tool(CREATES, structured_output=True)
    async def update_character(
        character: CharacterRef,
        name: Annotated[
            str | None, Field(description="A new name.", min_length=1, max_length=MAX_NAME_CHARS)
        ] = None,
        description: Description = None,
        trigger_word: TriggerWord = None,
        active_version: Annotated[
            int | None,
            Field(description="The LoRA version generation uses (e.g. 1 to go back to v1).", ge=1, le=10_000),
        ] = None,
    ) -> Annotated[CallToolResult, CharacterView]:
        """Change a character's name, description, trigger word or active LoRA version (only what is given).

        Finished runs keep the character and version they used. A changed trigger word applies to
        trainings and generations from now on.
        """
        with character_errors():
            changed = await engine.characters.update(
                character,
                name=name,
                description=description,
                trigger_word=trigger_word,
                active_version=active_version,
            )
            return await shown(changed.id, f"Updated {changed.name} ({changed.id})")

    @found.tool(STOPS, structured_output=True)
    async def delete_character(character: CharacterRef) -> Annotated[CallToolResult, CharacterDeleted]:
        """Delete a character for good: its training images and LoRA files (installed copies too).

        Runs that used it keep their images. Refused while it is being trained: cancel that
        training run first (cancel_run), then delete.
        """
        with character_errors():
            before = await engine.characters.get(character)
            await engine.training.delete_character(before.id)
            view = CharacterDeleted(
                character_id=before.id,
                name=before.name,
                deleted=True,
                images_removed=len(before.images),
                versions_removed=len(before.versions),
            )
            text = (
                f"Deleted {before.name} ({before.id}) with its {len(before.images)} image(s) and "
                f"{len(before.versions)} LoRA version(s). Runs that used it keep their images."
            )
            return CallToolResult(
                content=[TextContent(type="text", text=text)], structured_content=view.model_dump(mode="json")
            )

    @found.tool(CREATES, structured_output=True)
    async def add_character_images(
        character: CharacterRef, sources: Sources, captions: Captions = None
    ) -> Annotated[CallToolResult, ImagesAdded]:
        """Add training images to a character: PNG, JPEG or WebP, at least 256 pixels a side (by
        default), no duplicates, at most 200 per character (by default). EXIF/GPS are stripped.

        Good images are kept; each refused source is listed with its reason (the call still
        succeeds). 10-30 varied images train best; then call train_character. Base64 travels in
        the call (over HTTP about one full-size image fits): prefer paths, URLs or run images.
        """
        with character_errors():
            if captions is not None and len(captions) != len(sources):
                raise InvalidInput(
                    "captions",
                    f"must have one caption per source (got {len(captions)} for {len(sources)} sources)",
                )
            target = await engine.characters.get(character)
            added: list[cviews.CharacterImageView] = []
            refused: list[RefusedSource] = []
            for index, source in enumerate(sources):
                try:
                    data, origin = await engine.images.read_source(source)
                except InvalidInput as exc:
                    refused.append(RefusedSource(index=index, source=_shown(source), reason=exc.problem))
                    continue
                name = await _filename_for(engine, source, origin)
                # One source at a time: each refusal is then known to be this source's.
                report = await engine.characters.add_images(
                    target.id, [Upload(name, data, captions[index] if captions else "")]
                )
                target = report.character
                added += [cviews.image_view(target, image) for image in report.added]
                refused += [
                    RefusedSource(index=index, source=_shown(source), reason=reason)
                    for _, reason in report.refused
                ]
            view = ImagesAdded(
                character_id=target.id,
                name=target.name,
                added=added,
                refused=refused,
                image_count=len(target.images),
                next=cviews.character_next_step(engine, target, []),
            )
            lines = [f"Added {len(added)} image(s) to {target.name}; it has {len(target.images)} now."]
            if refused:
                lines.append(f"Refused {len(refused)}:")
                lines += [f"- sources[{r.index}] ({r.source[:80]}): {r.reason}" for r in refused]
            lines.append(view.next)
            return CallToolResult(
                content=[TextContent(type="text", text="\n".join(lines))],
                structured_content=view.model_dump(mode="json"),
            )

    @found.tool(STOPS, structured_output=True)
    async def remove_character_image(
        character: CharacterRef,
        filename: Annotated[
            str, Field(description="The image's filename, as get_character lists it.", min_length=1)
        ],
    ) -> Annotated[CallToolResult, CharacterView]:
        """Remove one training image from a character (its LoRA versions already trained are kept)."""
        with character_errors():
            changed = await engine.characters.remove_image(character, filename)
            return await shown(changed.id, f"Removed {filename} from {changed.name}")

    found.tools.append(_train_character(engine, expose_paths=expose_paths))
    return found.tools


def _train_character(engine: Engine, *, expose_paths: bool) -> Tool:
    """train_character, its training parameters taken from the trainer's declaration."""
    declared = engine.training.parameters()
    trainer, parameters = declared["trainer"], declared["parameters"]
    found = ToolList()
    clashing = set(parameters) & _TRAIN_TOOL_PARAMETERS
    if clashing:
        raise ValueError(
            f"trainer {trainer!r} declares {sorted(clashing)}, which train_character uses itself"
        )

    async def train_character(
        character: str,
        priority: str = "normal",
        idempotency_key: str | None = None,
        wait_seconds: float = 20,
        ctx: Context | None = None,
        **params: Any,
    ) -> CallToolResult:
        with character_errors():
            given = {name: value for name, value in params.items() if value is not None}
            run = await engine.training.submit(
                character, given, priority=priority, idempotency_key=idempotency_key
            )
            run = await wait_reporting(engine, run, wait_seconds, ctx)
            return await run_result(engine, run, expose_paths=expose_paths)

    # The SDK reads a tool's schema from its function's signature: this one is built from the
    # trainer's declaration, so what the schema advertises is what the trainer checks and uses.
    own = [
        _parameter("character", CharacterRef),
        *(_parameter(name, _parameter_type(spec), spec["default"]) for name, spec in parameters.items()),
        _parameter("priority", PriorityName, "normal"),
        _parameter(
            "idempotency_key",
            Annotated[str | None, Field(description="The same key again returns the same run.")],
            None,
        ),
        _parameter("wait_seconds", WaitSeconds, 20),
        _parameter("ctx", Context | None, None),
    ]
    train_character.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        own, return_annotation=Annotated[CallToolResult, RunView]
    )
    train_character.__annotations__ = {p.name: p.annotation for p in own} | {
        "return": Annotated[CallToolResult, RunView]
    }
    train_character.__doc__ = f"""Train the character's LoRA from its images with the {trainer} trainer.

        Needs images first (add_character_images); one training per character at a time. Queues
        a training run (its own lane: image runs are not held up) and waits up to `wait_seconds`,
        reporting step, loss and ETA. Returns the run; once done, `result.version` is the new LoRA
        version, made active. Still running: call wait_for_run; cancel_run stops it. The preview
        trainer takes seconds (a colour style, not a diffusion LoRA); aitoolkit takes a GPU tens of
        minutes. Parameters left out take the trainer's defaults.
        """
    found.tool(CREATES, structured_output=True, engine_rules=False)(train_character)
    return found.tools[0]


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _parameter_type(spec: dict[str, Any]) -> Any:
    """A training parameter's type for the schema, from its declaration (type, range, choices)."""
    # The default is the schema's own `default`: the words need not repeat it.
    words = spec["description"]
    if not spec.get("wired", True):
        words += " (not used by this trainer)"
    words += "."
    bounds = {"ge": spec["min"], "le": spec["max"]} if "min" in spec and "max" in spec else {}
    kind: Any
    if spec.get("choices"):
        kind = Literal[tuple(spec["choices"])]  # type: ignore[valid-type]
    elif spec["type"] == "int":
        kind = int
    elif spec["type"] == "float":
        kind = float
    elif spec["type"] == "bool":
        kind = bool
    else:
        kind = str
    if kind not in (int, float):
        bounds = {}
    return Annotated[kind | None, Field(description=words, **bounds)]


@contextmanager
def character_errors() -> Iterator[None]:
    """`tool_errors`, with conflicts named by the argument they are about."""
    with tool_errors():
        try:
            yield
        except Conflict as exc:
            text = str(exc)
            field = "trigger_word" if "trigger word" in text else "name" if "named" in text else "character"
            raise ToolError(f"{field}: {text}") from None


def _shown(source: str) -> str:
    """A source as a message may show it: base64 data is described, not echoed."""
    if source.startswith("data:"):
        return f"data: URL ({len(source):,} characters)"
    if len(source) >= 64 and _BASE64_TEXT.fullmatch(source):
        return f"base64 data ({len(source):,} characters)"
    text = source if source.isprintable() else repr(source)
    return text if len(text) <= 120 else text[:117] + "..."


async def _filename_for(engine: Engine, source: str, origin: str) -> str | None:
    """The name a source's image is stored under: its run and file, its path's or URL's last part,
    or none for base64 (the catalog then names it by its hash). Only safe characters are kept:
    the name is ours, so an odd one must never be why an image is refused."""
    if origin == "base64":
        return None
    match = _RUN_IMAGE.fullmatch(origin)
    if match:
        file = match["file"]
        if file is None:
            run = await engine.get_run(match["run"])
            file = run.artifacts[0].filename if run.artifacts else "image"
        raw = f"{match['run']}-{file}"
    elif origin.startswith(("http://", "https://")):
        raw = unquote(PurePosixPath(urlsplit(origin).path).name)
    else:
        raw = PurePosixPath(source.replace("\\", "/")).name
    cleaned = _NAME_CHARS.sub("_", raw).lstrip("._-")[:100]
    return cleaned or None
