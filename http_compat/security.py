"""Who may reach the HTTP app: loopback by default, a bearer token beyond it."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import InvalidInput
from core.settings import Settings
from http_compat.errors import ApiError, ErrorRenderer
from http_compat.studio.session import StudioGate


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token to guard it."""
    if not is_loopback(settings.host) and settings.api_token is None:
        raise InvalidInput(
            "host",
            f"{settings.host} is reachable from other machines; set ATELIER_API_TOKEN "
            "(clients then send 'Authorization: Bearer <token>') or bind to 127.0.0.1",
        )


def bearer_token(authorization: bytes) -> bytes:
    """The token of an `Authorization: Bearer <token>` header (b"" if it is not one). The scheme is
    case-insensitive (RFC 7235) and spaces around the token are tolerated."""
    parts = authorization.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return b""
    return parts[1].strip()


class BearerAuth:
    """Every request needs `Authorization: Bearer <token>` once a token is configured; a refusal
    is a 401 in the envelope of the contract the path belongs to (`renderer_for`).

    On the studio's paths (`studio`), a session cookie stands for the header, the login form and
    its assets are open to all, and a page asked for without either gets the login prompt."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        renderer_for: Callable[[str], ErrorRenderer],
        studio: StudioGate | None = None,
    ) -> None:
        self.app = app
        self._expected = token.encode()
        self.renderer_for = renderer_for
        self.studio = studio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = bearer_token(dict(scope["headers"]).get(b"authorization", b""))
            # Constant time, and a missing token compares like a wrong one.
            if not hmac.compare_digest(given, self._expected) or not given:
                if self.studio is not None:
                    decision = self.studio.decide(scope)
                    if decision == "pass":
                        await self.app(scope, receive, send)
                        return
                    if decision == "login":
                        await self.studio.login_prompt(scope)(scope, receive, send)
                        return
                refusal = ApiError(
                    401,
                    "this Atelier server needs a token: send 'Authorization: Bearer <ATELIER_API_TOKEN>'",
                    code="UNAUTHORIZED",
                    headers={"WWW-Authenticate": 'Bearer realm="atelier"'},
                )
                await self.renderer_for(scope.get("path", "/"))(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)
