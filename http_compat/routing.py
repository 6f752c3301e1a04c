"""A Starlette router that only tries the routes a path can match.

Starlette's router tries every route in order, each matching its regular expression against
the path, until one matches: the status GET of a contract with twenty routes pays for twenty
regexes, and again in the app it is mounted in. A route's regex starts with its path's fixed
part (everything before the first `{param}`, escaped), so a route whose fixed part the path does
not start with cannot match, fully or partly; skipping those leaves the same routes tried in
the same order, and the same one chosen. A request no route takes is handed to Starlette's own
routing, so redirects and 404s stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send


def fixed_start(route: BaseRoute) -> str:
    """What every path the route matches starts with ("" when it cannot tell)."""
    if isinstance(route, Mount):
        return route.path.split("{", 1)[0] + ("/" if "{" not in route.path else "")
    if isinstance(route, Route | WebSocketRoute):
        return route.path.split("{", 1)[0]
    return ""


class PrefixRouter(Router):
    """`Router` over a fixed list of routes, trying only those whose fixed start the path has."""

    def __init__(self, routes: Sequence[BaseRoute], **options: Any) -> None:
        super().__init__(routes=list(routes), **options)
        self._starts = [(fixed_start(route), route) for route in self.routes]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        path = get_route_path(scope)
        partial: tuple[BaseRoute, Scope] | None = None
        for start, route in self._starts:
            if not path.startswith(start):
                continue
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = route, child_scope
        if partial is not None:
            route, child_scope = partial
            scope["route"] = route
            scope.update(child_scope)
            await route.handle(scope, receive, send)
            return
        await super().app(scope, receive, send)  # nothing matched: Starlette's redirect or 404
