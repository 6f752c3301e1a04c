"""Desktop studio backend (../shared/contracts/desktop.md), served at `/desktop`.

The package: `generation` declares the three generation routes, `history` the history and file
routes, `app_settings` the settings routes (and the defaults a generation takes from them),
`realtime` the progress socket, `views` what clients see of runs, `shapes` the document's
bodies, `envelope` its error envelope. `build` assembles them, in the order routes are matched.

Mapping onto the engine:
- A generation is an Atelier image run; its `id` is the run's integer `seq` (the ledger's
  sequence number), so ids are the integers the document's client expects and every image run
  has one whichever door made it. History lists top-level image runs (batch items are left out;
  their batch is not an image), newest first; all of them have `type` "image".
- `negativePrompt` -> `negative_prompt`, `cfgScale` -> `cfg`, `strength` -> `denoise`,
  `seedImage` / `imagePath` -> `source`. Errors name the contract's fields, never the engine's.
- Envelopes: success `{success: true, data, message?}`; error `{success: false, error, code,
  details?}` with the document's codes: INVALID_PROMPT (prompt empty or over 4000 characters),
  INVALID_PARAMETERS (any other bad request, 400, malformed JSON included), NOT_FOUND (404),
  API_TIMEOUT (504: the generation did not finish in time), API_ERROR (500: the generation
  failed, or an unexpected server error), STORAGE_ERROR (500: a file could not be read or
  written), DATABASE_ERROR (500: the ledger could not be read or written); plus
  PAYLOAD_TOO_LARGE (413) and METHOD_NOT_ALLOWED (405), which the document has no word for.
  Validation errors carry `details: {"errors": [{loc, msg, type}]}`; engine refusals carry
  `details: {"field": ...}`.

Decisions where the document is vague:
- Generation is synchronous, as the document shows: the three POSTs wait for the run and answer
  200 `{id, prompt, filePath, url, seed, created_at}`. A failed (or cancelled) run answers 500
  API_ERROR "Generation failed: <reason>". A run still going at the deadline (600 s; the
  Atelier extension `?wait=<seconds>` (0..3600) changes it) answers 504 API_TIMEOUT with
  `details: {id, status}`: the run goes on and shows in history. A client that hangs up
  mid-wait does not stop its run either.
- `?wait=0` is a client asking not to wait, so it never gets the timeout error: the document's
  clients treat API_TIMEOUT as a failure of the generation service, which it is not. It answers
  the run as it stands: 200 as above if it is already done, 500 API_ERROR if it already failed,
  else 202 `{success: true, data}` with the same fields (`filePath` and `url` null) plus the
  extension `status`, queued or generating; `/ws/generation` (`taskId` is the `id`) or
  `GET /api/history/{id}` follow it from there.
- Missing width/height/steps/cfgScale take the persisted settings' defaults (defaultWidth,
  defaultHeight, defaultSteps, defaultCfgScale), which start at the document's 512, 512, 25, 7.5.
  Unknown request fields are a 400 (a typo such as `cfg_scale` must not be ignored silently).
- image-to-image takes `seedImage`, `prompt`, `strength` (0..1, default 0.7), `steps`,
  `cfgScale`, and as extensions `negativePrompt` and `seed`; its image keeps the source's size.
  upscale takes `imagePath` and `scale` (an integer 1..8, default 2). `seedImage` / `imagePath`
  may be the `filePath` or `url` this contract returned (mapped back to the run's image, no
  fetch), a `data:` URL or base64, a path inside a folder Atelier may read (ATELIER_HOME/inputs,
  ATELIER_INPUT_DIRS), or a loopback URL; anything else is a 400 naming the field (its message
  names those folders by setting, not by their place on the server's disk).
- `filePath` is `/generated/<id>/<filename>`, relative to the contract's base URL (never the
  machine's real path: a remote client must not learn the server's file layout); `url` is the
  absolute URL of `GET /generated/{id}/{filename}`, which serves the file. A run with several
  images shows its first; a run without an image yet has `filePath` and `url` null.
  `created_at` is ISO 8601 UTC with `Z`.
- `GET /api/history`: `limit` 1..200 (default 50), `offset` >= 0, `type` image|video (video:
  no rows, `total` 0: Atelier makes images); `total` counts every matching run. Rows and the
  detail add `status` (queued, generating, completed, failed) as an extension; the detail also
  adds `error` and gives `parameters.cfgScale` (null where the operation has no such setting).
  `DELETE` removes the run and its files, stopping it first if it is still going.
- Settings live in the ledger (document `desktop/settings`), so they survive restarts. PUT merges
  a partial update; unknown fields and nulls are a 400; the answer holds the full settings.
  `storagePath` is kept and reported but not used: Atelier keeps its files in its own store
  (ATELIER_HOME/artifacts); it must be a plain path string of at most 500 characters.
- `/ws/generation` broadcasts the progress of every image run, whichever door made it:
  `{type: "progress", taskId: "<id>", progress: 0..100, status}`; status queued, generating,
  completed or failed (a cancelled run is reported "failed"; failed messages add the extension
  `error`, "cancelled" for a cancelled run).
  On connect the socket first sends one message per run still queued or generating, so a
  client that connects mid-generation sees it. Messages from the client are ignored.
- `GET /health` is `{status: "ok", version: "0.1.0"}`: the API is up (the document asks no more).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.contracts.desktop import app_settings, generation, history, realtime
from http_compat.contracts.desktop.envelope import ErrorBody, render_error, route
from http_compat.contracts.desktop.shapes import Health
from http_compat.responses import json_response

VERSION = "0.1.0"


def build(engine: Engine, settings: Settings) -> Api:
    """The Desktop studio contract over `engine`."""
    api = Api(
        name="desktop",
        title="Desktop studio backend (Atelier)",
        version=VERSION,
        description="The desktop studio's generation, history and settings API, served by Atelier "
        "over its engine.",
        render_error=render_error,
        error_model=ErrorBody,
        invalid_status=400,
    )

    @route(api, "GET", "/health", summary="Is the API running", responses={200: Health})
    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "version": VERSION})

    generation.declare(api, engine, settings)
    history.declare(api, engine)
    app_settings.declare(api, engine)
    realtime.declare(api, engine)
    return api
