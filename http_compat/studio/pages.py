"""Rendering the studio's pages (Jinja2, from `templates/`, with the studio's headers), its
login and logout, and its static files. The pages themselves are modules of their own
(`gallery`, `run_page`, `generate`).

Every page is a full HTML document that reads well before `studio.js` runs; the script then
adds live updates and actions. Links are made from `prefix`, the path the studio was reached
under (`""` at the root, `"/studio"`), so the two mounts each link within themselves.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.studio.session import COOKIE, session_value

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Only our own script, stylesheet and images; no inline script, no framing, no other origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# A log line's time of day (UTC), to the millisecond: lines of one run are seconds apart.
templates.filters["clock"] = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def prefix_of(request: Request) -> str:
    """The path the studio was reached under: `""` at the root, `"/studio"` otherwise."""
    return request.scope.get("root_path", "").rstrip("/")


def render(name: str, prefix: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from `templates/<name>`, with the studio's headers."""
    html = templates.get_template(name).render(prefix=prefix, **context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def not_found_page(prefix: str, what: str, section: str, logged_in: bool) -> HTMLResponse:
    """The 404 page of a run, character or product a person followed a link to: it says so, and
    links back to the list (`section` is the nav entry and its path, "gallery" being `/`)."""
    back, back_text = ("/", "See every run") if section == "gallery" else (f"/{section}", f"See every {what}")
    return render(
        "missing.html",
        prefix,
        status=404,
        section=section,
        what=what,
        back=back,
        back_text=back_text,
        logged_in=logged_in,
    )


def login_prompt(prefix: str, error: str | None = None, next_path: str = "") -> HTMLResponse:
    """The login form, answered with 401 to a page asked for without a session: it shows no data."""
    response = render("login.html", prefix, status=401, error=error, next_path=next_path)
    response.headers["WWW-Authenticate"] = 'Bearer realm="atelier"'
    return response


def safe_next(prefix: str, value: str) -> str:
    """Where to go after logging in: a path of the studio's own, never another site (`//evil`)."""
    if value.startswith(prefix + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return prefix + "/"


def add_pages(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the studio's login, logout and static files on `api`."""
    token = settings.api_token.get_secret_value().encode() if settings.api_token is not None else None

    @api.route("GET", "/login", summary="The login form (when a token is set)", produces="text/html")
    async def login_form(request: Request) -> Response:
        prefix = prefix_of(request)
        if token is None:
            return RedirectResponse(prefix + "/", status_code=303)
        return login_prompt(prefix, next_path=safe_next(prefix, request.query_params.get("next", "")))

    @api.route("POST", "/login", summary="Log in with the API token", produces="text/html")
    async def login(request: Request) -> Response:
        prefix = prefix_of(request)
        if token is None:
            return RedirectResponse(prefix + "/", status_code=303)
        form = await request.form()
        given = str(form.get("token", "")).strip().encode()
        next_path = safe_next(prefix, str(form.get("next", "")))
        if not given or not hmac.compare_digest(given, token):
            return login_prompt(prefix, error="That is not this server's token.", next_path=next_path)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE,
            session_value(token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @api.route("POST", "/logout", summary="Forget this browser's session", produces="text/html")
    async def logout(request: Request) -> Response:
        response = RedirectResponse(prefix_of(request) + "/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @api.route(
        "GET", "/static/{name}", summary="The studio's script, stylesheet and icons", produces="text/plain"
    )
    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        media_type = STATIC_TYPES.get(path.suffix)
        # Only the files of static/ itself, by their plain names.
        if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
            raise ApiError(404, f"no static file {name[:80]!r}", code="NOT_FOUND")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
