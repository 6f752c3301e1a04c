"""What the studio shows of a run, one shape for the gallery's HTML, its JSON and its live channel."""

from __future__ import annotations

from typing import Any

from core.backends import Progress
from core.models import Run

PROMPT_EXCERPT = 140  # characters of the prompt a card shows


def excerpt(text: str, limit: int = PROMPT_EXCERPT) -> str:
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
        "prompt": excerpt(prompt) if isinstance(prompt, str) and prompt else run.kind.value,
        "progress": round(run.progress, 4),
        "step": run.step,
        "max_steps": run.max_steps,
        "created_at": run.created_at,
        "error": run.error,
        "url": f"{prefix}/runs/{run.id}",
        "thumbnails": [f"{prefix}/runs/{run.id}/thumbnails/{a.filename}" for a in images],
        "image_count": len(images),
    }


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
