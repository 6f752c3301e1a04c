"""Which host names and web pages may reach the HTTP app: one Host/Origin policy, applied in front
of every route and channel (REST, WebSocket, SSE, socket.io, `/mcp`, docs pages, `/health`).

Why: with no token (the default on loopback) anything that can make this machine's browser send a
request could drive Atelier. Two doors are closed here, before any route runs:

- DNS rebinding: a page on `attacker.example`, whose name is made to resolve to 127.0.0.1, sends
  `Host: attacker.example:8000`. The Host header must name the bind address, a loopback address
  (`127.0.0.1`, `localhost`, `[::1]`, any port) or a name in ATELIER_ALLOWED_HOSTS; otherwise 421.
  Bound to a wildcard address (0.0.0.0, ::), a token is required anyway (`security.check_bind`)
  and any Host passes unless ATELIER_ALLOWED_HOSTS is set.
- Cross-site requests: a page elsewhere (another port of 127.0.0.1 included: same-site is not
  same-origin) can POST `text/plain` bodies and open WebSockets without any CORS preflight. A
  request whose `Origin` is neither the request's own origin (scheme://Host) nor in
  ATELIER_ALLOWED_ORIGINS, `Origin: null`, or one the browser labels `Sec-Fetch-Site: cross-site`
  or `same-site` is refused with 403, except a plain top-level navigation (GET/HEAD of a
  document: a link to a docs page), whose answer goes to the user's tab, not to the page.

Requests with neither header (curl, SDK clients) pass: browsers always send one of them. Pages
cannot set `Origin` or `Sec-Fetch-*`, so the browser's `Sec-Fetch-Site: same-origin` is trusted
even when a reverse proxy has rewritten Host. Refusals come in the envelope of the contract the
path belongs to (`renderer_for`), with a message saying which setting would let the caller in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings
from http_compat.errors import ApiError, ErrorRenderer
from http_compat.security import is_loopback

WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_PORTS = {"http": 80, "https": 443}
# The request's own scheme as a page's origin would name it.
PAGE_SCHEME = {"http": "http", "ws": "http", "https": "https", "wss": "https"}

Origin = tuple[str, str, int]  # (scheme, host name, port), ports made explicit


def host_and_port(value: str) -> tuple[str, int | None] | None:
    """A Host header (`name`, `name:port`, `[v6]:port`) as (lower-case name, port); None if malformed."""
    if not value or any(c in value for c in "@/?#\\ \t"):
        return None
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    return (name, port) if name else None


def parse_origin(value: str) -> Origin | None:
    """`scheme://host[:port]` as (scheme, host, port); None for `null` or anything malformed."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[parts.scheme]


def origin_text(origin: Origin) -> str:
    """An origin as browsers send it: default ports left out, IPv6 in brackets."""
    scheme, host, port = origin
    name = f"[{host}]" if ":" in host else host
    return f"{scheme}://{name}" if DEFAULT_PORTS[scheme] == port else f"{scheme}://{name}:{port}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Who may call: the bind address, extra host names, and the web origins allowed cross-origin."""

    bound_host: str
    allowed_hosts: frozenset[tuple[str, int | None]] = frozenset()
    allowed_origins: frozenset[Origin] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        hosts = (host_and_port(host) for host in settings.allowed_host_names)
        origins = (parse_origin(origin) for origin in settings.allowed_origin_list)
        return cls(
            bound_host=settings.host.strip().strip("[]").lower().rstrip("."),
            allowed_hosts=frozenset(host for host in hosts if host is not None),
            allowed_origins=frozenset(origin for origin in origins if origin is not None),
        )

    @property
    def cors_origins(self) -> list[str]:
        """The allowed origins as browsers spell them (for CORS answers)."""
        return sorted(origin_text(origin) for origin in self.allowed_origins)

    def host_refusal(self, host: str | None) -> str | None:
        """Why a request with this Host header is refused, or None when it may pass."""
        parsed = host_and_port(host or "")
        if parsed is None:
            return (
                f"the Host header {host!r} is missing or malformed" if host else "the Host header is missing"
            )
        name, port = parsed
        if (name, None) in self.allowed_hosts or (name, port) in self.allowed_hosts:
            return None
        if self.bound_host in WILDCARD_BINDS and not self.allowed_hosts:
            return None
        if is_loopback(name) or name == self.bound_host:
            return None
        return (
            f"Host {host[:200]} is not an address of this Atelier server (a web page using DNS "
            "rebinding sends such requests); if clients really reach Atelier under that name, add it "
            "to ATELIER_ALLOWED_HOSTS"
        )

    def origin_allowed(self, origin: str) -> bool:
        """Whether `origin` is in ATELIER_ALLOWED_ORIGINS."""
        parsed = parse_origin(origin)
        return parsed is not None and parsed in self.allowed_origins

    def origin_refusal(self, method: str, scheme: str, headers: Headers) -> str | None:
        """Why this browser request is refused as cross-origin, or None when it may pass."""
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin is None and site is None:
            return None  # not a browser's cross-origin request (curl, SDKs, MCP hosts)
        if origin is not None and self.origin_allowed(origin):
            return None
        if site in ("same-origin", "none"):  # set by the browser itself, never by the page
            return None
        navigation = (
            headers.get("sec-fetch-mode") == "navigate" and headers.get("sec-fetch-dest") == "document"
        )
        if navigation and method in ("GET", "HEAD"):
            return None  # a link followed: the answer goes to the user's tab, not to the page
        if origin is not None:
            if origin.strip().lower() == "null":
                return (
                    "Origin null (a sandboxed page or a local file) may not call Atelier; serve the "
                    "page from an origin listed in ATELIER_ALLOWED_ORIGINS"
                )
            if parse_origin(origin) != self._own_origin(scheme, headers.get("host", "")):
                return (
                    f"Origin {origin[:200]} is not allowed; add it to ATELIER_ALLOWED_ORIGINS to let "
                    "that page call Atelier"
                )
        if site in ("cross-site", "same-site"):
            return (
                f"a page on another site (Sec-Fetch-Site: {site}) may not call Atelier; add its origin "
                "to ATELIER_ALLOWED_ORIGINS to let it"
            )
        return None

    @staticmethod
    def _own_origin(scheme: str, host: str) -> Origin | None:
        page_scheme = PAGE_SCHEME.get(scheme, "http")
        parsed = host_and_port(host)
        if parsed is None:
            return None
        name, port = parsed
        return page_scheme, name, port or DEFAULT_PORTS[page_scheme]


class HostOriginGuard:
    """ASGI middleware: refuse, before any route or WebSocket accept, what `OriginPolicy` refuses."""

    def __init__(
        self, app: ASGIApp, policy: OriginPolicy, renderer_for: Callable[[str], ErrorRenderer]
    ) -> None:
        self.app = app
        self.policy = policy
        self.renderer_for = renderer_for
        # Host header -> refusal: a server sees a handful of Host values, and this is on every request.
        self._hosts: dict[str | None, str | None] = {}

    def _host_refusal(self, host: str | None) -> str | None:
        if host not in self._hosts:
            if len(self._hosts) >= 256:  # someone is sending many names: do not grow without bound
                self._hosts.clear()
            self._hosts[host] = self.policy.host_refusal(host)
        return self._hosts[host]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # One pass over the raw headers: most requests (SDKs, curl) carry neither Origin nor
        # Sec-Fetch-Site, and then only the Host matters.
        host: bytes | None = None
        from_browser = False
        for name, value in scope["headers"]:
            if name == b"host":
                if host is None:
                    host = value
            elif name == b"origin" or name == b"sec-fetch-site":
                from_browser = True
        status, problem = 421, self._host_refusal(None if host is None else host.decode("latin-1"))
        if problem is None and from_browser:
            method = scope.get("method", "GET")
            headers = Headers(scope=scope)
            status, problem = 403, self.policy.origin_refusal(method, scope.get("scheme", "http"), headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        # A WebSocket handshake gets this as its HTTP answer (the ASGI denial response): never accepted.
        render = self.renderer_for(scope.get("path", "/"))
        await render(ApiError(status, problem))(scope, receive, send)


# Response headers a permitted cross-origin page may read (CORS hides the others from it).
EXPOSED_HEADERS = [
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
    "X-Correlation-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Content-Disposition",
    "WWW-Authenticate",
]
