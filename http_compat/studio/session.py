"""The studio's login: the API token typed once into a form, kept as a session cookie.

A browser following a link cannot send `Authorization: Bearer`, so with ATELIER_API_TOKEN set
the studio's pages accept a cookie instead. The cookie never holds the token itself: it holds
an HMAC of it (`session_value`), so a cookie read off a disk is no token for the contracts'
APIs, and changing the token logs every browser out. `BearerAuth` asks `StudioGate` what to do
with a request on the studio's paths: let it through (a valid cookie or header, or a public
asset: the login form and its stylesheet), or answer the login prompt (401, no data).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Literal

from starlette.responses import Response
from starlette.types import Scope

COOKIE = "atelier_session"
# What the session cookie is an HMAC of, keyed with the token.
_SESSION_MESSAGE = b"atelier studio session v1"
# Paths under the studio's prefix that anyone may fetch: the login form, and what it looks like.
PUBLIC_PATHS = ("/login", "/static/")


def session_value(token: bytes) -> str:
    """The cookie value that stands for `token` (hex HMAC-SHA256)."""
    return hmac.new(token, _SESSION_MESSAGE, hashlib.sha256).hexdigest()


def cookie_of(scope: Scope) -> str:
    """The session cookie's value in the request's headers ("" if there is none)."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            try:
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
            except Exception:  # a malformed Cookie header is no session
                return ""
            if morsel is not None:
                return morsel.value
    return ""


class StudioGate:
    """For `BearerAuth`, what to do with a request that has no valid bearer header.

    `prefix_of(path)` is the prefix the studio was reached under (`""`, `"/studio"`), or None for
    a path that is not the studio's; `login_page(prefix, next_path)` renders the login prompt."""

    def __init__(
        self,
        token: str,
        prefix_of: Callable[[str], str | None],
        login_page: Callable[[str, str], Response],
    ) -> None:
        self._expected = session_value(token.encode()).encode()
        self.prefix_of = prefix_of
        self.login_page = login_page

    def decide(self, scope: Scope) -> Literal["pass", "login", "refuse"]:
        """`pass` with a valid session or on a public path, `login` for a page asked for without
        one, `refuse` (the contract's 401) for everything else: the studio's JSON and live channel,
        and every path that is not the studio's."""
        path = scope.get("path", "/")
        prefix = self.prefix_of(path)
        if prefix is None:
            return "refuse"
        given = cookie_of(scope)
        if given and hmac.compare_digest(given.encode(), self._expected):
            return "pass"
        rest = path[len(prefix) :]
        if any(rest == p or (p.endswith("/") and rest.startswith(p)) for p in PUBLIC_PATHS):
            return "pass"
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and not rest.startswith("/api/"):
            return "login"
        return "refuse"

    def login_prompt(self, scope: Scope) -> Response:
        path = scope.get("path", "/")
        prefix = self.prefix_of(path) or ""
        return self.login_page(prefix, path)
