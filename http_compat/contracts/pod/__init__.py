"""POD Engine (../shared/contracts/pod-engine.md), served at `/pod`, with its socket.io events.

The package: `jobs` declares the job, file and generation routes, `health` the health, info and
metrics routes, `realtime` the socket.io channel, `views` what clients see of runs (and how their
requests become engine requests), `shapes` the document's bodies. `build` assembles them.

Mapping onto the engine:
- A job is an Atelier run; its id is `job_<run id>` (the 26-character run id). A bare run id is
  accepted too; anything else is 404 `Job X not found`. The same run whichever door made it:
  image runs made over MCP or another contract are jobs of type `generate` (a batch run:
  `batch`; a products run: `generate`, or `custom` when all its designs were given images),
  with `request` rebuilt from what the run made. Training and publish runs are not jobs.
- Status words: queued -> `pending`, running, completed, failed, cancelled. `progress` is a
  whole percent (0..100). Times (`createdAt`, `startedAt`, `completedAt`) are epoch milliseconds.
  `retryCount` = attempts - 1 (never below 0); `maxRetries` = the run's attempts - 1. A request's
  `maxRetries` (0..19) becomes the engine's `max_attempts` = maxRetries + 1.
- `logs` are the run's log lines: level info -> INFO, warning -> WARNING, error -> ERROR, and the
  line saying it completed (`completed`, `made N product(s)`) -> SUCCESS. `GET /api/jobs` keeps
  the last 50 lines of each job.
- `error` is the run's error once it has failed (null otherwise, even while an earlier attempt's
  error waits for a retry: its log says so).
- Errors are `{"error": "message"}`: validation (wrong types, missing required fields, values
  outside an enum, unknown fields, unknown product types, platforms not configured) 400,
  malformed JSON 400, unknown job 404, too large 413.

Products (designs -> print files and mockups -> products -> listings on the platforms):
- A generate job (`POST /api/generate`, or `POST /api/jobs` type `generate`) is ONE products run
  (`engine.products.submit`, kind `pod`): `{designs: [{prompt}] x count, product_types:
  productTypes, publish: autoPublish, platforms: ATELIER_ENABLED_PLATFORMS, composed_from: {theme,
  style, niche} when composed}`. Its designs are image runs the products run makes (they are parts
  of the job: not listed, counted or reported on socket.io as jobs of their own).
- A generate request is `{prompt?, theme?, style?, niche?, productTypes, count, autoPublish}`.
  `count` 1..16 (default 1) designs; `autoPublish` defaults to true (the document's default).
  A `prompt` is used as is for each design; without one, the prompts are composed from theme,
  style and niche by `core.publishing.prompts.compose` (deterministic, one template per design,
  so three designs get three different prompts). Neither prompt nor theme is a 400. Atelier
  extensions: `width`, `height`, `steps`, `seed` (design n uses seed + n - 1), and the listing's
  `title`, `description`, `price` (in the shop's currency, e.g. 24.99; default: the type's).
- `productTypes` are the catalog's (`tshirt`, `hoodie`, `poster`, `mug`, plus any from
  ATELIER_CATALOG); an unknown one is a 400 naming the known ones.
- Platforms are ATELIER_ENABLED_PLATFORMS (default `storefront`, the shop at `/shop`). One named
  there but not configured makes every products job a 400 naming the settings to set (for
  example `printify is not configured: set ATELIER_PRINTIFY_TOKEN and ATELIER_PRINTIFY_SHOP_ID`):
  the server's configuration is wrong, and a job that silently skipped a platform would be worse.
- A `custom` job (`POST /api/jobs` type `custom`) makes products from your own design images,
  with no generation: `request: {designs: [image, ...] (1..16), productTypes, autoPublish?,
  title?, description?, price?}`, each image an http(s) URL, base64 (or a `data:` URL), or a path
  the server may read (as image-to-image sources: `core.sources`). Its `request` echoes a long
  image (base64) shortened to its first 40 characters and its length.
- `autoPublish: false` makes drafts: listed on each platform but not published (the shop does
  not show them).
- A completed products job's `result` is `{success, generatedImages[{id, url, prompt}],
  products[{platform, productId, url, type}], errors[], totalTime}`:
  `generatedImages` are its designs (for a custom job, the images given, `prompt` ""), ids
  `img_<run id>_<n>`, URLs `/api/files/{jobId}/design-NN.<ext>`; `products` has one entry per
  platform listing that has the platform's product id (`productId` is the platform's id; Atelier
  extensions: `status` draft | published on that platform, `title`, `atelierProductId`);
  `errors` names each product refused (a design too small for a print area, sizes named) and
  each platform that failed, and the other products and platforms stay in `products`.
  `success` is true when at least one product was listed. `totalTime` is milliseconds from start
  to finish. Extension: `files` maps each Atelier product id to its print files and mockups
  `[{role, name, url, width, height, dpi}]`. A products job ends `failed` only when it could do
  nothing (its designs could not be made); platform failures that may pass are retried first.
- `GET /api/files/{jobId}/{filename}` serves a job's files: a products job's print files and
  mockups (its artifacts) and its designs (`design-NN.<ext>`, read from the image run that made
  it or the image given); an image job's images.
- A batch (`POST /api/generate/batch`, or `POST /api/jobs` with type `batch` and `request.items`)
  is one parent run with one products run per item (1..100 items; `engine.products.submit_batch`):
  each item is a generate request made into its own products, exactly as a generate job would
  be, all items checked before any is queued (a bad one is named `items.N`). Its progress is the
  children's combined steps. Once final its `result` is `{results, errors, total}`: `results[i]`
  is item i's generate result, products included (`success: false` with its error for an item
  that failed or was cancelled), `errors` lists
  `item N: error` of each failed item. The children are jobs too (`GET /api/jobs/{child}` works)
  but are not listed on their own.
- Submitting answers 200 `{jobId, job}` with the job as it is then (normally `pending`).
  `priority` is low | normal | high | urgent (default normal); higher runs first.

Listing, managing, health:
- `GET /api/jobs` lists top-level jobs newest first, at most 200 (`limit` extension, 1..200),
  optionally of one `status` (an unknown status is 400).
- Cancel: a pending or running job (a batch: all its unfinished items) -> `{success: true}`; a
  finished one is 400 `Cannot cancel job: it is completed`. Retry: a failed or cancelled job is
  queued again with fresh attempts -> `{success: true}`; otherwise 400 `Cannot retry job: ...`.
- `POST /api/jobs/cleanup {maxAge}` deletes completed and failed jobs (image, batch and products
  runs; never training or publish runs) that finished more than `maxAge` ms ago (default
  86400000, >= 0), with their files and a products job's designs -> `{cleared: n}`. A products
  job with a product still published on a platform is kept: its print files and mockups are
  that product's files (the shop shows its mockups). Deleting a products job also deletes its
  products that exist only in Atelier (drafts and storefront listings); those listed on Printify
  or Shopify stay recorded (`core.publishing.runs`).
- `GET /health`: `services.comfyui` says whether the configured generation backend is up (the
  key keeps the document's name even with the preview renderer); `printify`, `shopify` and
  (extension) `storefront` are true only when configured and answering. `status` is `unhealthy`
  (HTTP 503, same body) when the backend is down; `degraded` when an enabled, configured platform
  does not answer (jobs still list on the others and name its failure) or fewer than 50% of at
  least 10 finished jobs completed; else `healthy`. A platform that is not configured is not an
  outage.
- Metrics count top-level jobs. `averageJobTime` is the mean start-to-finish time (ms) of the
  last 200 completed jobs (0 before any). `successRate` is completed / (completed + failed) in
  percent with 2 decimals (cancelled jobs are not failures; 100 before any job finished).
  `uptime` counts from when this server started; `lastActivity` is the newest change of any
  run (epoch ms; the start time before any).

Realtime: a socket.io server (Engine.IO 4) at `/pod/socket.io/`, and at `/socket.io/` when pod
is the root contract. Starlette's Mount keeps the full path in `scope["path"]` (and moves the
prefix into `root_path`), so the socket.io app is mounted with `socketio_path=None`: whatever
reaches the mount is Engine.IO traffic, whichever prefix it came through. Events:
`job:update {id, status, progress}` on each status change of a job (generate, custom, batch);
`job:progress {id, progress}` when a job's whole percent changes (a batch: its combined
progress; a products job: its steps, designs made, products made, listings done); `log
{message, type, timestamp}` for submitted / started / retrying / completed (SUCCESS) / failed
(ERROR) / cancelled; `metrics` (the `/api/metrics` object) on connect and every 3 s while anyone
is connected. Which browsers may connect is decided in front of the app, as for every route
(`http_compat.origins`): Engine.IO's own origin check and CORS headers are turned off
(`cors_allowed_origins=[]`) so that one policy, and one allow list, governs the channel.
"""

from __future__ import annotations

from starlette.responses import Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api, Endpoint
from http_compat.contracts.pod import health, jobs
from http_compat.contracts.pod.health import Clock
from http_compat.contracts.pod.realtime import Realtime
from http_compat.contracts.pod.shapes import Error
from http_compat.errors import ApiError
from http_compat.responses import json_response


def render_error(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="pod",
        title="POD Engine API (Atelier)",
        version="1.0.0",
        description="The POD Engine's job queue, served by Atelier over its engine: designs are "
        "generated (or given), made into print files and mockups, and listed as products on the "
        "enabled platforms (the embedded storefront, Printify, Shopify).",
        render_error=render_error,
        error_model=Error,
        invalid_status=400,
    )
    clock = Clock()
    realtime = Realtime(engine, clock)
    api.mount("/socket.io", realtime.app())
    api.lifespans.append(realtime.running)
    api.endpoints.append(
        Endpoint(
            "get",
            "/socket.io/",
            "socket.io (Engine.IO 4): job:update, job:progress, metrics and log events",
            None,
            {
                101: (None, "Switching Protocols (or Engine.IO long-polling)"),
                400: (None, "Not a socket.io handshake (Engine.IO answers in its own format)"),
            },
            [],
            "Connect with a socket.io client, path `<prefix>/socket.io`. Events: "
            "`job:update {id, status, progress}`, `job:progress {id, progress}`, "
            "`metrics` (the /api/metrics object, on connect and every few seconds), "
            "`log {message, type, timestamp}`.",
        )
    )
    health.add_routes(api, engine, settings, clock)
    jobs.add_routes(api, engine, settings)
    jobs.add_generation_routes(api, engine, settings)
    return api
