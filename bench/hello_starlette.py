"""The floor for bench/http_run_status.py: a hello-world Starlette app, served as `atelier serve`
serves Atelier (the same uvicorn settings, the same event loop), on loopback.

  python bench/hello_starlette.py PORT
"""

from __future__ import annotations

import sys

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.settings import Settings
from mcp_server.cli import loop_options, uvicorn_config


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def serve(port: int) -> None:
    app = Starlette(routes=[Route("/", hello), Route("/health", health)])
    await uvicorn.Server(uvicorn_config(app, Settings.from_env(port=port))).serve()


if __name__ == "__main__":
    anyio.run(serve, int(sys.argv[1]), backend_options=loop_options("serve"))
