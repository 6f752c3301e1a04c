"""`atelier`: run the servers, and make and manage runs from a terminal.

  atelier serve                 MCP over Streamable HTTP at /mcp, plus /health
  atelier mcp                   MCP over stdio (for Claude Desktop and other hosts)
  atelier generate "PROMPT"     make images, with a progress bar
  atelier runs [show|cancel ID] list and manage runs

Start-up imports stay lean (no Pillow, uvicorn or rich until a command needs them) because
MCP hosts spawn `atelier mcp` on every launch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio

from core.errors import AtelierError
from core.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            home=getattr(args, "home", None),
            root_contract=getattr(args, "root_contract", None),
        )
        return anyio.run(args.handler, settings, args)
    except AtelierError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: generative images over MCP.")
    parser.add_argument("--home", help="data directory (default: $ATELIER_HOME or the user data dir)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve MCP over HTTP at /mcp (and /health)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1; others need ATELIER_API_TOKEN)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--root-contract",
        choices=["adgen", "comfygen", "pod", "isengard", "desktop"],
        help="also serve this REST contract at / (for clients whose base URL cannot carry a prefix)",
    )
    serve.set_defaults(handler=_serve)

    stdio = commands.add_parser("mcp", help="serve MCP over stdio")
    stdio.set_defaults(handler=_mcp_stdio)

    generate = commands.add_parser("generate", help="make images and wait for them")
    generate.add_argument("prompt")
    generate.add_argument("--negative", default=None, help="negative prompt")
    generate.add_argument("--width", type=int, help="default: the workflow's (512 for sd15)")
    generate.add_argument("--height", type=int, help="default: the workflow's")
    generate.add_argument("--steps", type=int, help="default: the workflow's")
    generate.add_argument("--cfg", type=float, help="default: the workflow's")
    generate.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    generate.add_argument("--count", type=int, default=None, help="images in the run (default 1)")
    generate.add_argument("--workflow", help="a workflow name (see ATELIER_WORKFLOWS_DIR); default sd15")
    generate.add_argument("--checkpoint", help="model file instead of the workflow's")
    generate.add_argument("--lora", action="append", dest="loras", help="NAME[:STRENGTH]; repeat for more")
    generate.add_argument("--priority", default="normal", help="low | normal | high | urgent")
    generate.add_argument("--no-wait", action="store_true", help="queue it and print the run id")
    generate.set_defaults(handler=_generate)

    runs = commands.add_parser("runs", help="list runs; `runs show ID`, `runs cancel ID`")
    runs.add_argument("action", nargs="?", choices=["list", "show", "cancel"], default="list")
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--status", help="only this status (queued, running, completed, failed, cancelled)")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=_runs)
    return parser


def _configure_logging(settings: Settings) -> None:
    # stderr only: on stdio, stdout belongs to the MCP protocol.
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":  # one line per backend request is noise below debug
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from core.engine import Engine
    from http_compat.app import build_app
    from http_compat.security import check_bind

    check_bind(settings)
    _configure_logging(settings)
    async with Engine.open(settings, role="shared") as engine:
        app = build_app(engine, settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            lifespan="on",
            # One line per request costs a sixth of a status GET's time: only when debugging.
            access_log=settings.log_level == "debug",
            # A request stuck on something slow (a source URL trickling bytes) cannot hold shutdown.
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        base = f"http://{settings.host}:{settings.port}"
        root = f"; {settings.root_contract} also at {base}/" if settings.root_contract else ""
        print(
            f"Atelier: MCP at {base}/mcp; REST contracts at {base}/adgen, /comfygen, /pod, /isengard, "
            f"/desktop (docs at /<contract>/docs){root} (data in {settings.home})",
            file=sys.stderr,
        )
        await server.serve()
    return 0


async def _mcp_stdio(settings: Settings, args: argparse.Namespace) -> int:
    from core.engine import Engine
    from mcp_server.server import build_mcp

    _configure_logging(settings)
    async with Engine.open(settings, role="shared") as engine:
        await build_mcp(engine, expose_paths=True).run_stdio_async()
    return 0


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from core.engine import Engine

    params = {
        "prompt": args.prompt,
        "negative_prompt": args.negative,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "cfg": args.cfg,
        "seed": args.seed,
        "count": args.count,
        "workflow": args.workflow,
        "checkpoint": args.checkpoint,
        "loras": args.loras,
    }
    async with Engine.open(settings, role="shared") as engine:
        run = await engine.submit_image(params, priority=args.priority)
        print(f"run {run.id} queued (seed {run.inputs['seed']})", file=sys.stderr)
        if args.no_wait:
            print(run.id)
            return 0
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
        with Progress(*columns, TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("rendering", total=run.max_steps or None)
            try:
                while not run.status.is_final:
                    run = await engine.wait(
                        run.id,
                        3600,
                        on_progress=lambda r, p: bar.update(task, completed=p.step, total=p.max_steps),
                    )
            except anyio.get_cancelled_exc_class():
                print(f"stopped waiting; run {run.id} is kept and will finish", file=sys.stderr)
                raise
        if run.status.value != "completed":
            print(f"run {run.id} {run.status.value}: {run.error or ''}", file=sys.stderr)
            return 1
        print(f"run {run.id} completed")
        for artifact in run.artifacts:
            print(engine.artifact_path(artifact))
    return 0


async def _runs(settings: Settings, args: argparse.Namespace) -> int:
    from core.engine import Engine

    async with Engine.open(settings, role="client") as engine:
        if args.action == "list":
            page = await engine.list_runs(status=args.status, limit=args.limit)
            if args.json:
                print(json.dumps([r.to_dict() for r in page.items], indent=2))
            else:
                _print_table(page.items)
            return 0
        if not args.run_id:
            print(f"atelier: `runs {args.action}` needs a run id", file=sys.stderr)
            return 2
        if args.action == "cancel":
            run = await engine.cancel(args.run_id)
            print(f"run {run.id} {run.status.value}")
            return 0
        run = await engine.get_run(args.run_id)
        details: dict[str, Any] = run.to_dict()
        details["files"] = [str(engine.artifact_path(a)) for a in run.artifacts]
        details["log"] = [f"{_when(e.at)} {e.level}: {e.message}" for e in await engine.logs(run.id)]
        print(json.dumps(details, indent=2))
        return 0


def _print_table(runs: Sequence[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "status", "progress", "created", "prompt", "images")
    for run in runs:
        prompt = str(run.inputs.get("prompt", ""))
        table.add_row(
            run.id,
            run.status.value,
            f"{run.progress:.0%}",
            _when(run.created_at),
            prompt if len(prompt) <= 40 else prompt[:39] + "…",
            str(len(run.artifacts)),
        )
    Console().print(table)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":
    sys.exit(main())
