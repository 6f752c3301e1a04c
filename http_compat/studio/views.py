"""What the studio shows of a run, one shape for the gallery's HTML, its JSON and its live channel."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from core.backends import Progress
from core.models import Artifact, Run

PROMPT_EXCERPT = 140  # characters of the prompt a card shows


def excerpt(text: str, limit: int = PROMPT_EXCERPT) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def card(run: Run, prefix: str) -> dict[str, Any]:
    """A run as a gallery card: what it is, how far it is, and its images' thumbnail URLs."""
    prompt = run.inputs.get("prompt")
    images = [a for a in run.artifacts if a.media_type.startswith("image/")]
    return {
        "id": run.id,
        "kind": run.kind.value,
        "status": run.status.value,
        "backend": run.backend,
        "prompt": excerpt(prompt) if isinstance(prompt, str) and prompt else untitled(run),
        "progress": round(run.progress, 4),
        "step": run.step,
        "max_steps": run.max_steps,
        "created_at": run.created_at,
        "error": run.error,
        "parent_id": run.parent_id,
        "url": f"{prefix}/runs/{run.id}",
        "thumbnails": [thumbnail_url(prefix, a) for a in images],
        "image_count": len(images),
        "placeholder": PLACEHOLDERS.get(run.status.value, run.kind.value),
    }


# What a card shows where a run has no image (yet); a finished run of another kind, its kind.
PLACEHOLDERS = {"queued": "waiting…", "running": "working…", "failed": "no image", "cancelled": "no image"}


def untitled(run: Run) -> str:
    """What a card calls a run without a prompt: an upscale by its factor, else its kind."""
    if run.inputs.get("operation") == "upscale":
        return f"Upscale ×{run.inputs.get('scale', 2.0):g}"
    return run.kind.value


def thumbnail_url(prefix: str, artifact: Artifact) -> str:
    """Where an image's thumbnail is served. The `v` (its content's hash) changes when a retry
    replaces the file under the same name, so a browser never shows a cached thumbnail of the old one."""
    return f"{prefix}/runs/{artifact.run_id}/thumbnails/{artifact.filename}?v={artifact.sha256[:16]}"


def image_url(prefix: str, artifact: Artifact) -> str:
    """Where an image is served full size (versioned like its thumbnail)."""
    return f"{prefix}/runs/{artifact.run_id}/files/{artifact.filename}?v={artifact.sha256[:16]}"


def progress(run_id: str, report: Progress) -> dict[str, Any]:
    """A progress step for the live channel (a trainer's loss and time left when it reports them)."""
    return {
        "id": run_id,
        "step": report.step,
        "max_steps": report.max_steps,
        "progress": round(report.fraction, 4),
        "message": report.message,
        "loss": report.loss,
        "eta_s": report.eta_s,
    }


# What each front door is called on a run page (`run.meta["door"]`, recorded by the door).
DOORS = {
    "studio": "the studio (this web page)",
    "adgen": "the adgen API (/adgen)",
    "comfygen": "the comfygen API (/comfygen)",
    "pod": "the POD engine API (/pod)",
    "isengard": "the isengard API (/isengard)",
    "desktop": "the desktop API (/desktop)",
}
NO_DOOR = "MCP or the command line (they record no door)"


def door(run: Run) -> str:
    """Which front door made the run, as far as the run records it."""
    name = (run.meta or {}).get("door")
    if not isinstance(name, str) or not name:
        return NO_DOOR
    return DOORS.get(name, name)


def when(ts: float | None) -> str:
    """A moment as a person reads it: `2026-12-07 16:46:25 UTC` ("" for never)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """`0.4 s`, `12 s`, `3 min 05 s`, `2 h 01 min` ("" when unknown)."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def timings(run: Run) -> list[tuple[str, str, str]]:
    """(label, text, ISO datetime) of the run's moments, and how long it took or has taken."""
    rows = [("Created", when(run.created_at), iso(run.created_at))]
    if run.started_at is not None:
        rows.append(("Started", when(run.started_at), iso(run.started_at)))
    if run.finished_at is not None:
        rows.append(("Finished", when(run.finished_at), iso(run.finished_at)))
    if run.started_at is not None and run.finished_at is not None:
        rows.append(("Took", duration(run.finished_at - run.started_at), ""))
    if run.started_at is not None:
        rows.append(("Waited in the queue", duration(run.started_at - run.created_at), ""))
    return rows


def input_rows(run: Run) -> list[tuple[str, str]]:
    """The run's inputs as (label, text), the ones a person looks for first, then the rest."""
    inputs = dict(run.inputs)
    rows: list[tuple[str, str]] = []

    def take(key: str, label: str, shown: Any = None) -> None:
        value = inputs.pop(key, None)
        if value is not None and value != "":
            rows.append((label, str(shown(value) if shown else value)))

    take("operation", "Operation", lambda v: OPERATION_NAMES.get(v, v))
    take("prompt", "Prompt")
    take("negative_prompt", "Negative prompt")
    take("seed", "Seed")
    if "width" in inputs and "height" in inputs:
        rows.append(("Size", f"{inputs.pop('width')} × {inputs.pop('height')}"))
    take("steps", "Steps")
    take("cfg", "CFG")
    take("workflow", "Workflow")
    take("checkpoint", "Checkpoint")
    take(
        "loras",
        "LoRAs",
        lambda v: ", ".join(f"{x['name']} ({x.get('strength', 1.0):g})" for x in v) or "none",
    )
    take(
        "character",
        "Character",
        lambda v: (
            f"{v['name']} (LoRA v{v['version']}, strength {v['strength']:g}, trigger {v['trigger_word']})"
        ),
    )
    take("source", "Source", lambda v: v.get("origin") or f"an image of {v['width']} × {v['height']}")
    take("denoise", "Denoise")
    take("scale", "Scale")
    take("sampler", "Sampler")
    take("scheduler", "Scheduler")
    take("count", "Images")
    for key, value in inputs.items():
        shown = value if isinstance(value, str | int | float) else json.dumps(value, ensure_ascii=False)
        rows.append((key.replace("_", " ").capitalize(), excerpt(str(shown), 400)))
    return rows


OPERATION_NAMES = {"txt2img": "text to image", "img2img": "image to image", "upscale": "upscale"}
