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
"""

from __future__ import annotations

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import atelier_error
from http_compat.studio.characters import add_characters
from http_compat.studio.live import add_live
from http_compat.studio.pages import add_pages
from http_compat.studio.products import add_products
from http_compat.studio.status import add_status


def build(engine: Engine, settings: Settings) -> Api:
    """The studio as an `Api` (its JSON routes documented at `/studio/docs`), to mount."""
    api = Api(
        name="studio",
        title="Atelier studio",
        version="1",
        description="Atelier's web studio: pages, and the JSON routes its script uses.",
        render_error=atelier_error,
    )
    add_pages(api, engine, settings)
    add_live(api, engine, settings)
    add_characters(api, engine, settings)
    add_products(api, engine, settings)
    add_status(api, engine, settings)
    return api
