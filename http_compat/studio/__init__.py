"""The studio: Atelier's own web page, a third front door over the engine and its event bus.

Served by `atelier serve` at `/` (when no `--root-contract` takes the root) and always at
`/studio`: one app, mounted at both, whose links are made from the prefix it was reached
under (`request.scope["root_path"]`), so each copy links within itself.

Decisions, stated once:
- Server-rendered pages (Jinja2 templates, autoescaped: prompts are user input) and one small
  script of our own (`static/studio.js`, no build step, no framework): a page is readable the
  moment its HTML arrives, and the script only adds what a page cannot do alone (live updates,
  actions, the form's field errors). Nothing comes from a CDN: Atelier runs offline, and every
  script, stylesheet and image is served from here (`Content-Security-Policy` says so).
- Who may look: the same Host/Origin guard as every route. With ATELIER_API_TOKEN set, a browser
  cannot send a bearer header when it follows a link, so a page without credentials answers
  the login prompt (401, no data); the token typed there becomes a session cookie
  (`http_compat.studio.session`), HttpOnly and SameSite=Strict, accepted on the studio's paths
  only (the contracts still want the bearer header). Without a token (loopback), no login.
- One shape of a run for every view: `views.card` is what the gallery's HTML, its JSON pages
  (`GET /api/runs`) and the live channel (`GET /api/events`) show, and `studio.js` builds the
  same markup as `templates/_card.html` from it. A run page that sees its run change status
  re-reads itself from the server rather than rebuild its HTML in the script.
- Pages (`gallery`, `run_page`, `generate`) are modules of their own, each with its script
  module in `static/` (`studio.js` holds what they share and loads the page's one).
- The gallery lists top-level runs (a batch's runs are on its page), newest first, over the
  ledger's cursor; status and kind are the ledger's filters, backend is applied to the pages
  read, reading at most `gallery.SCAN_LIMIT` runs per request (the ledger keeps no index on it).
- Thumbnails (`thumbnails`): WebP, 384 px, made once in a worker thread and kept under
  `<home>/thumbnails/<run id>/`, named by the image's hash; URLs carry `?v=<hash>` so an
  immutable cache never shows an image a retry replaced. The run is looked up on every
  request, so a deleted run's thumbnail is a 404 at once.
- Errors are Atelier's `{"error", "message"}`, plus `field` and `problems` (every bad field
  with its own message) for invalid input (422), so the form shows each next to its input.
  A malformed id or file name in a path is a 404, like an unknown one. Cancel of a finished run
  and retry of one that is not failed or cancelled are 409s.
- The generate form works without the script too (`POST /generate`: 303 to the new run, or the
  form again, 422, each message under its field); with it, `POST /api/generate` (JSON). Both
  read the fields the same way and leave validation to the engine (`ImageSpec`), so the
  studio's rules are every door's. Runs it makes record `meta = {"door": "studio"}`, the run
  page's "made through"; runs of doors that record none (MCP, the CLI) say so.
- "Same again, another seed" resubmits the run's stored request without its seed (the stored
  source by hash, the character by id: its LoRA as it is now); "use as source" opens the form
  with `atelier://runs/<id>/images/<file>`, which `core.sources` reads.
- Characters, products and status (`characters`, `products`, `status`): their forms send JSON
  and are refused field by field (`fields`, the same shape as above); uploads are judged by
  `core.characters.uploads`, one reason per refused file; training progress and the loss chart
  come from the one live channel; publishing needs `confirm: true`, sent only from the page's
  confirmation dialog; status reads only kept counts, the `finished_at` index and the engine's
  own health checks (platform checks kept 30 s), never the whole ledger.
"""

from __future__ import annotations

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.studio.actions import add_actions
from http_compat.studio.characters import add_characters
from http_compat.studio.errors import studio_error
from http_compat.studio.gallery import add_gallery
from http_compat.studio.generate import add_generate
from http_compat.studio.live import add_live
from http_compat.studio.pages import add_pages
from http_compat.studio.products import add_products
from http_compat.studio.run_page import add_run_page
from http_compat.studio.status import add_status
from http_compat.studio.thumbnails import add_thumbnails


def build(engine: Engine, settings: Settings) -> Api:
    """The studio as an `Api` (its JSON routes documented at `/studio/docs`), to mount."""
    api = Api(
        name="studio",
        title="Atelier studio",
        version="1",
        description="Atelier's web studio: pages, and the JSON routes its script uses.",
        render_error=studio_error,
    )
    add_pages(api, engine, settings)
    add_gallery(api, engine, settings)
    add_run_page(api, engine, settings)
    add_generate(api, engine, settings)
    thumbnails = add_thumbnails(api, engine, settings)
    add_actions(api, engine, settings, thumbnails.forget)
    add_live(api, engine, settings)
    add_characters(api, engine, settings)
    add_products(api, engine, settings)
    add_status(api, engine, settings)
    return api
