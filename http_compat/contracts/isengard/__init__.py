"""Isengard (../shared/contracts/isengard.md), served at `/isengard`: characters and their training
images, LoRA training jobs, generation (by character too), SSE progress, job logs, client logs,
rate limits and correlation ids.

The package: `generation`, `characters`, `training`, `logs` and `health` declare the routes;
`views` is what clients see of runs and characters; `middleware` the correlation ids and rate
limits; `envelope` the `{"detail": ...}` errors. `build` assembles them.

Mapping onto the engine:
- A generation job is an Atelier run: its id is `gen-<run id>`, the same run whichever door made
  it, so runs made over MCP or another contract are listed too (batches as one job). A training
  job is a training run, `train-<run id>` (also from every door). Any other id or kind: 404.
- Status words are the engine's: queued, running, completed, failed, cancelled ("pending" is
  never produced). `progress` is an integer 0..100; times are ISO 8601 UTC with milliseconds
  and `Z`. Jobs also carry `started_at` and `completed_at`, as the original backend's do.
- A generation job's `config` echoes what the client sent (kept in the run's `meta`), except
  `seed`: null becomes the seed the run actually uses, so the image can be made again. For runs
  from other doors it is read from the run's inputs (`guidance_scale` = cfg, `lora_id` and
  `lora_strength` the character the run used, else null and 1.0, every toggle false).
- `count` (1..16, default 1) is the number of images of the one run. `output_paths` are file
  NAMES (Known Issue 2), `gen-<run id>-<index>.<ext>` with the index from 0, which
  `GET /api/generation/output/{filename}` parses back to the run and its file; any other name
  is a 404 (names are matched whole against that pattern, so no path can reach the disk).
- A character is the engine's character: id `char-` + 12 of [0-9a-z]. Routes take ids only (the
  engine also finds characters by name; here a name, like any malformed id, is a 404
  "Character <id> not found"). `description` is null when empty; `lora_path` is where the active
  LoRA file is on the server's disk (under ATELIER_HOME/characters/<id>/loras/, the same kind of
  path as the document's `output_path` example; its ComfyUI name is not shown here) and
  `lora_trained_at` when that version was made. A training job's `output_path` is the file it
  made, null until it completes and once the character is deleted.
- Errors are `{"detail": "message"}`: validation 400 (as the document says), malformed JSON 400,
  unknown ids 404, conflicts 409, oversized bodies 413, rate limits 429 with `Retry-After`.

Decisions where the document is vague:
- Generation config defaults are the document's example values (1024 x 1024, 20 steps, guidance
  3.5) and its limits are the engine's real ones (sides multiples of 8 in 64..4096, steps 1..150,
  guidance 0..30, seed 0..2**32-1, lora_strength 0..2); an unknown config field is a 400, so a
  misspelt toggle is never silently ignored. `/info` publishes exactly these.
- `lora_id` is a character's id: the run adds its active LoRA at `lora_strength` and puts its
  trigger word at the front of the prompt (the echoed config keeps the prompt as sent). An
  unknown character is 404; one with no trained LoRA yet is 400 naming it. `lora_strength`
  without `lora_id` is ignored (the document always sends it). A toggle set to true is a 400
  naming the toggle and why Atelier cannot do it (checked before `lora_id`).
- Creating a character: `trigger_word` may be left out (it is made from the name). A name or
  trigger word another character has (names whatever their case) is a 409, as is any request
  that conflicts with the state of things rather than being malformed: the document lists no
  409, but a 400 would tell the client its request was wrong when it was only untimely.
  PATCH changes the fields given (null or absent: unchanged).
- DELETE of a character while it is being trained (queued or running) is refused with 409 and a
  detail naming the training job and its cancel URL: cancel first, then delete. Cancelling it
  silently would throw away a training the user started; a 400 would say the request is
  malformed. Deleting removes its images and LoRA files; finished generation jobs keep theirs.
- Uploads: `multipart/form-data`, one part named `files` per image (several at once), optional
  `captions` parts, one per file in the same order (400 if their number differs). Each file goes
  through the engine's one check (type sniffed from the bytes: PNG, JPEG, WebP; at most
  ATELIER_MAX_INPUT_BYTES; fully decoded; pixel cap before decoding; smallest side; duplicates);
  every refused file is in `rejected` with its reason and the good ones of the same upload are
  kept. `uploaded` lists the names the images are stored and served under (the given name made
  safe, with the real type's extension: `photo.jpg` holding a PNG is `photo.png`). A request with
  no `files` parts is 400; a character at its image limit refuses the rest with that reason. The
  whole request may be up to ATELIER_MAX_UPLOAD_BYTES (not the JSON cap): it is streamed, its
  files spooled to disk past 1 MiB and read back one at a time, and past the cap it is a 413.
- Images are listed and served under their stored names with their stored media type; an
  unknown character or file is 404. Deleting an image is allowed while the character trains
  (the running training already has its dataset).
- Training: `config.method` must be "lora" (the default when left out); every other field is a
  parameter the configured trainer declares (`/info`'s `training.parameters`, with ranges and
  defaults), each optional; an undeclared field is a 400. Parameters a trainer accepts but does
  not use are `wired: false` and recorded. The job's `config` echoes every value used (defaults
  filled in), so it always has the document's TrainingConfig fields. 404 for an unknown
  character, 400 "No training images uploaded for this character", 409 while that character
  already has a queued or running training job (its next LoRA version would race the other).
- `/info`'s `training`: `backend` is "ai-toolkit" or "preview" (the embedded preview trainer,
  which learns colours and tone rather than a diffusion LoRA, and says so in `reason`),
  `base_model` the trainer's, `parameters` its declaration with honest `wired` flags.
- Rate limits count every request to the limited endpoint per client host (the socket's peer;
  `X-Forwarded-For` is not trusted, or any client could pick its own bucket), valid or not.
- Health is served at `/health` and `/api/health` (Known Issue 1), and so are `/ready` and
  `/info` (the same router in the original). `/ready` has no redis: Atelier keeps its queue in
  its ledger, so the dependencies are storage, ledger and the generation backend; any of them
  failing makes it `not_ready` with 503. `mode` is "fast-test" with the preview renderer and
  "production" with ComfyUI.
- SSE `/api/generation/{id}/stream` and `/api/training/{id}/stream`: `event: progress` whenever
  what it carries changes (training: with `loss` when the trainer reports it), then one
  `event: complete` for every final state, its `status` saying which (completed, failed or
  cancelled), as the original backend does; a failure's text is in `message` and `error`. There
  is no `event: error`, because browsers' EventSource reserves `error` for a dropped
  connection. The final event also lists a generation's `output_paths` or a training's
  `output_path`.
- `GET /api/jobs/{id}/logs` is JSONL `{timestamp, level, message, job_id}` for `gen-` and
  `train-` ids (a batch's lines include its items').
- `POST /api/client-logs` takes at most 100 entries of at most 2,000 characters each (400
  beyond) and writes each to the `atelier.client` logger at its level with the correlation id;
  answers 204. Fields an entry has beyond the document's are ignored.
- `X-Correlation-ID`: a request's own (1..128 printable ASCII characters, no spaces) or a new
  uuid4 hex, echoed on every response (413s included, so it wraps the body-size cap) and in the
  one line per request logged to `atelier.isengard`.
"""

from __future__ import annotations

import re

from starlette.middleware import Middleware

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.contracts.isengard import characters, generation, health, logs, training
from http_compat.contracts.isengard.envelope import Detail, render_error
from http_compat.contracts.isengard.middleware import CorrelationId, RateLimits
from http_compat.contracts.isengard.views import Jobs
from http_compat.ratelimit import RateLimiter

VERSION = "0.1.0"


def build(engine: Engine, settings: Settings) -> Api:
    """The Isengard contract over `engine`."""
    api = Api(
        name="isengard",
        title="Isengard API (Atelier)",
        version=VERSION,
        description=(
            "Isengard's characters, training images, LoRA training jobs, generation jobs, SSE "
            "progress, job logs and client logs, served by Atelier over its engine."
        ),
        render_error=render_error,
        error_model=Detail,
        invalid_status=400,
    )
    api.middleware.append(Middleware(CorrelationId))
    api.middleware.append(
        Middleware(
            RateLimits,
            rules=[
                ("POST", re.compile(r"/api/generation/?"), RateLimiter(20, 60.0)),
                ("POST", re.compile(r"/api/training/?"), RateLimiter(5, 60.0)),
                ("POST", re.compile(r"/api/characters/[^/]+/images/?"), RateLimiter(30, 60.0)),
            ],
        )
    )
    jobs = Jobs(engine)
    health.declare(api, engine, settings, VERSION)
    # Generation first: routes are matched in order, and its status GETs are the busiest.
    generation.declare(api, engine, settings, jobs)
    characters.declare(api, engine, settings, jobs)
    training.declare(api, engine, settings, jobs)
    logs.declare(api, engine, jobs)
    return api
