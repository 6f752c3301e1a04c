"""`atelier`: run the servers, and make and manage runs from a terminal.

  atelier serve                 MCP over Streamable HTTP at /mcp, plus /health
  atelier mcp                   MCP over stdio (for Claude Desktop and other hosts)
  atelier generate "PROMPT"     make images, with a progress bar
  atelier runs [show|cancel|retry|delete ID]   list and manage runs
  atelier worker                execute runs from the task queue (ATELIER_DISPATCH=procrastinate)

Only long-lived commands (`serve`, `mcp`) run other processes' queued runs; with
ATELIER_DISPATCH=procrastinate only `atelier worker` does (and `serve`/`mcp` given `--execute`). `generate` runs
its own run when no server owns the data directory (and hands it back, queued, if stopped);
`generate --no-wait` and `runs` never run anything. SIGTERM and SIGHUP stop a command as
Ctrl-C does: cleanly, handing back what it was running.

Start-up imports stay lean (no Pillow, uvicorn or rich until a command needs them) because
MCP hosts spawn `atelier mcp` on every launch.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import anyio

from core.errors import AtelierError
from core.homelock import owner_pid
from core.settings import Settings

# Exit statuses of a command stopped by a signal, as shells report them.
_STOPPED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


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
            execute=True if getattr(args, "execute", False) else None,
            worker_queues=getattr(args, "queues", None),
            worker_concurrency=getattr(args, "concurrency", None),
        )
        return anyio.run(
            _until_signalled, args.handler, settings, args, backend_options=loop_options(args.command)
        )
    except AtelierError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def loop_options(command: str) -> dict[str, Any]:
    """`atelier serve` runs on uvloop (libuv) where it is installed: a finished run's status GET
    serves about 1.3x the requests/s it does on asyncio's own loop (wrk, 64 connections, 2 cores).
    The other commands keep asyncio's loop: they answer one client (stdio, a terminal)."""
    if command != "serve" or sys.platform == "win32":
        return {}
    try:
        import uvloop
    except ImportError:
        return {}
    return {"loop_factory": uvloop.new_event_loop}


async def _until_signalled(handler: Any, settings: Settings, args: argparse.Namespace) -> int:
    """Run a command until it ends or a signal (Ctrl-C, SIGTERM, SIGHUP) stops it.

    A signal cancels the command, so its clean-up runs (the engine hands back what it was
    running), unless the command set `args.graceful_stop` (the server: finish open requests
    first); a second signal then cancels it.
    """
    stopped_by: list[int] = []
    args.graceful_stop = None
    try:
        return await _run_watched(handler, settings, args, stopped_by)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the command's own error, only wrapped by the task group
            raise group.exceptions[0] from None
        raise
    finally:
        if stopped_by:
            print(f"atelier: stopped by {signal.Signals(stopped_by[0]).name}", file=sys.stderr)


async def _run_watched(
    handler: Any, settings: Settings, args: argparse.Namespace, stopped_by: list[int]
) -> int:
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(*_STOPPED) as signals:
                async for signum in signals:
                    stopped_by.append(signum)
                    if args.graceful_stop is not None and len(stopped_by) == 1:
                        args.graceful_stop()
                        continue
                    group.cancel_scope.cancel()
                    return

        if sys.platform != "win32":
            group.start_soon(watch)
        code = await handler(settings, args)
        group.cancel_scope.cancel()
        return int(code)
    # Only reached when a signal cancelled the command.
    return _STOPPED.get(signal.Signals(stopped_by[0]), 1) if stopped_by else 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atelier-mcp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: generative images over MCP.")
    parser.add_argument("--version", action="version", version=f"atelier {_version()}")
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
    serve.add_argument("--execute", action="store_true", help=_EXECUTE_HELP)
    serve.set_defaults(handler=_serve)

    stdio = commands.add_parser("mcp", help="serve MCP over stdio")
    stdio.add_argument("--execute", action="store_true", help=_EXECUTE_HELP)
    stdio.set_defaults(handler=_mcp_stdio)

    worker = commands.add_parser(
        "worker",
        help="execute runs from the task queue in ATELIER_DATABASE_URL, on this box's backends "
        "(needs ATELIER_DISPATCH=procrastinate)",
    )
    worker.add_argument(
        "--queues",
        help="lanes to take runs from: image,training,publishing (default: $ATELIER_WORKER_QUEUES or all)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        help="runs held at once in each queue (default: $ATELIER_WORKER_CONCURRENCY, or as many as "
        "the lane runs at once)",
    )
    worker.set_defaults(handler=_worker, execute=True)

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
    generate.add_argument(
        "--no-wait",
        action="store_true",
        help="queue it and print the run id; a running server (atelier serve / mcp) renders it",
    )
    generate.set_defaults(handler=_generate)

    runs = commands.add_parser(
        "runs", help="list runs; `runs show ID`, `runs cancel ID`, `runs retry ID`, `runs delete ID`"
    )
    runs.add_argument(
        "action", nargs="?", choices=["list", "show", "cancel", "retry", "delete"], default="list"
    )
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--status", help="only this status (queued, running, completed, failed, cancelled)")
    runs.add_argument("--kind", help="only this kind (image, batch, training)")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=_runs)
    return parser


_EXECUTE_HELP = (
    "with ATELIER_DISPATCH=procrastinate, also execute runs as a worker does (by default this node "
    "only accepts and answers)"
)

# Loggers that write a line per request: httpx's per backend call, Isengard's access line per request.
_PER_REQUEST_LOGGERS = ("httpx", "atelier.isengard")


def _configure_logging(settings: Settings) -> None:
    # stderr only: on stdio, stdout belongs to the MCP protocol.
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":
        # One line per request (a backend call, or a contract's access line) is noise below debug,
        # and at thousands of requests a second it fills the disk and halves the throughput.
        for name in _PER_REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from core.engine import Engine
    from http_compat.app import build_app
    from http_compat.security import check_bind
    from mcp_server import toolsets

    toolsets.chosen(settings.toolsets)  # a wrong name stops start-up before anything opens
    check_bind(settings)
    _configure_logging(settings)
    async with Engine.open(settings, role="shared") as engine:
        server = _uvicorn_server()(uvicorn_config(build_app(engine, settings), settings))
        args.graceful_stop = server.stop
        base = f"http://{settings.host}:{settings.port}"
        root = f"; {settings.root_contract} also at {base}/" if settings.root_contract else ""
        studio = f"{base}/studio/" if settings.root_contract else f"{base}/"
        print(
            f"Atelier: the studio at {studio}; MCP at {base}/mcp; REST contracts at {base}/adgen, "
            f"/comfygen, /pod, /isengard, /desktop (docs at /<contract>/docs){root} (data in {settings.home}"
            + (f"; ledger at {settings.database_where}" if settings.database_where else "")
            + ")",
            file=sys.stderr,
        )
        await server.serve()
    return 0


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """The uvicorn settings `atelier serve` runs its app with (bench/http_run_status.py serves its
    hello-world floor with the same)."""
    import uvicorn

    return uvicorn.Config(
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


def _uvicorn_server() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handlers: `_until_signalled` handles them for every
        command. (uvicorn's re-raise a SIGTERM with the default handler once it has shut down,
        which would kill the process before the engine hands its running runs back.)"""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def stop(self) -> None:
            self.should_exit = True

    return Server


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from core.engine import Engine

    if settings.dispatch != "procrastinate":
        print(
            "atelier: `atelier worker` takes runs from a task queue shared by several nodes: set "
            "ATELIER_DISPATCH=procrastinate and ATELIER_DATABASE_URL (on one box, `atelier serve` runs them)",
            file=sys.stderr,
        )
        return 2
    _configure_logging(settings)
    async with Engine.open(settings) as engine:
        print(
            f"Atelier worker: runs of {settings.worker_queues} from {settings.database_where}, "
            f"{_held_at_once(settings, engine)} at once, "
            f"on {', '.join(engine.backends)} "
            f"(data in {settings.home})",
            file=sys.stderr,
        )
        await anyio.sleep_forever()
    return 0


def _held_at_once(settings: Settings, engine: Any) -> str:
    return ", ".join(
        f"{queue} {settings.worker_concurrency or engine.capacity([queue])}"
        for queue in settings.worker_queue_list
    )


async def _mcp_stdio(settings: Settings, args: argparse.Namespace) -> int:
    # Only the SDK and the deferred server before `initialize` is answered: the engine and the
    # tools are imported and opened behind it (see `mcp_server.deferred`).
    from mcp_server import toolsets
    from mcp_server.deferred import DeferredServer, open_behind

    chosen = toolsets.chosen(settings.toolsets)
    _configure_logging(settings)
    front = DeferredServer(chosen=chosen, version=_version(), log_level=settings.log_level)
    stop = anyio.Event()

    async def session() -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(open_behind, front, settings, stop)
                try:
                    await front.run_stdio_async()
                finally:
                    # The engine closes cleanly and hands back what it was running.
                    stop.set()
                    front.wanted.set()
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1:  # one task's own error, only wrapped by the group
                raise failed.exceptions[0] from None
            raise

    if sys.platform == "win32":
        await session()
        return 0
    from mcp_server.closable_stdin import closable_stdin

    with closable_stdin() as end_input:
        # A signal ends the session as the host closing stdin would.
        args.graceful_stop = end_input
        await session()
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
    role = "client" if args.no_wait else "shared"
    async with Engine.open(settings, role=role, only_own_runs=True) as engine:
        run = await engine.submit_image(params, priority=args.priority)
        print(f"run {run.id} queued (seed {run.inputs['seed']})", file=sys.stderr)
        if args.no_wait:
            print(_who_renders(settings, run.id), file=sys.stderr)
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
                bar.stop()
                print(_after_stop(settings, run.id, rendering_here=engine.is_owner), file=sys.stderr)
                raise
        if run.status.value != "completed":
            print(f"run {run.id} {run.status.value}: {run.error or ''}", file=sys.stderr)
            return 1
        print(f"run {run.id} completed")
        for artifact in run.artifacts:
            print(engine.artifact_location(artifact))
    return 0


def _who_renders(settings: Settings, run_id: str) -> str:
    """What happens to a queued run next, said plainly."""
    if settings.dispatch == "procrastinate":
        return (
            f"a worker (atelier worker) taking runs from the task queue in {settings.database_where} "
            f"will render it; to drop it: atelier runs cancel {run_id}"
        )
    pid = owner_pid(settings.home)
    if pid is not None:
        return f"the Atelier server running on {settings.home} (pid {pid}) will render it"
    return (
        f"no Atelier server is running on {settings.home}: the run waits in the queue until one "
        "starts (make run, atelier serve or atelier mcp), or run `atelier generate` without --no-wait; "
        f"to drop it: atelier runs cancel {run_id}"
    )


def _after_stop(settings: Settings, run_id: str, *, rendering_here: bool) -> str:
    if rendering_here:
        return (
            f"stopped: run {run_id} goes back to the queue (this attempt not counted) and runs when "
            f"Atelier next starts on {settings.home} (make run, atelier serve, atelier mcp); "
            f"to drop it: atelier runs cancel {run_id}"
        )
    return f"stopped waiting: {_who_renders(settings, run_id)}; follow it with `atelier runs show {run_id}`"


async def _runs(settings: Settings, args: argparse.Namespace) -> int:
    from core.engine import Engine

    async with Engine.open(settings, role="client") as engine:
        if args.action == "list":
            page = await engine.list_runs(status=args.status, kind=args.kind, limit=args.limit)
            if args.json:
                print(json.dumps([r.to_dict() for r in page.items], indent=2))
            else:
                _print_table(page.items)
            return 0
        if not args.run_id:
            print(f"atelier: `runs {args.action}` needs a run id", file=sys.stderr)
            return 2
        if args.action == "cancel":
            before = await engine.get_run(args.run_id)
            run = await engine.cancel(args.run_id)
            if before.status.is_final:
                print(f"run {run.id} had already {_finished_word(before)}; nothing was cancelled")
            else:
                print(f"run {run.id} cancelled")
            return 0
        if args.action == "retry":
            run = await engine.retry(args.run_id)
            print(f"run {run.id} queued again")
            print(_who_renders(settings, run.id), file=sys.stderr)
            return 0
        if args.action == "delete":
            run = await engine.delete(args.run_id)
            print(f"run {run.id} deleted, with its {len(run.artifacts)} file(s) and its log")
            return 0
        run = await engine.get_run(args.run_id)
        details: dict[str, Any] = run.to_dict()
        details["files"] = [engine.artifact_location(a) for a in run.artifacts]
        details["log"] = [f"{_when(e.at)} {e.level}: {e.message}" for e in await engine.logs(run.id)]
        print(json.dumps(details, indent=2))
        return 0


def _finished_word(run: Any) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[run.status.value]


def _what(run: Any) -> str:
    """The last column: an image run's prompt, or what a training run trains."""
    if run.kind.value == "training":
        steps = run.inputs.get("params", {}).get("steps")
        return f"train {run.inputs.get('character_name')} ({run.inputs.get('trainer')}, {steps} steps)"
    return " ".join(str(run.inputs.get("prompt", "")).split())


def _print_table(runs: Sequence[Any]) -> None:
    """One line per run. Every column keeps its whole text (ids are copied into other commands);
    only the prompt is shortened, to the terminal's width (60 characters when piped)."""
    import shutil

    header = ("id", "status", "progress", "created", "images", "prompt / training")
    rows = [
        (
            run.id,
            run.status.value,
            f"{run.progress:.0%}",
            _when(run.created_at),
            str(len(run.artifacts)),
            _what(run),
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    fixed = sum(widths) + 2 * len(widths)
    room = shutil.get_terminal_size((fixed + 60, 24)).columns - fixed if sys.stdout.isatty() else 60
    room = max(room, 12)
    for row in (header, *rows):
        prompt = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
        cells = [
            cell.rjust(w) if i in (2, 4) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        print("  ".join([*cells, prompt]).rstrip())


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":
    sys.exit(main())
