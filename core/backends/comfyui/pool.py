"""The ComfyUI backend: a pool of servers, kept busy, with runs followed from submit to outputs.

Keep-busy: each server is given up to `depth` prompts at once (default 2), so while one runs
the next is already in its queue and the GPU never waits for Atelier between runs. Runs are
admitted only when an up server has room, so the rest wait in Atelier's queue, in priority
order, and a server that goes down takes no new work until it answers again.

Model lists: what each server has installed is read from its `/object_info` when it connects and
every few minutes, and at once when Atelier installs a LoRA (`refresh_models`), when someone asks
(`models`), and after a request was refused over a missing model (it may have been installed
since). Requests are checked against these lists before any GPU time is spent; a run naming a
character whose LoRA the servers lack is told how to install it.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from core.backends import GenerationBackend, ImageOutput, Job, Progress, ProgressCallback
from core.backends.comfyui.client import LOST, RECONNECTED, ComfyUIServer
from core.backends.comfyui.validation import (
    MODEL_INPUTS,
    complete_model_names,
    installed_models,
    validate_graph,
)
from core.backends.comfyui.workflows import Workflow, WorkflowLibrary
from core.characters.generation import not_installed
from core.characters.models import comfyui_lora_name
from core.errors import BackendError, InvalidInput
from core.models import ImageSpec

log = logging.getLogger("atelier.comfyui")

# While following a prompt, look at /history this often even without events (a missed end).
FOLLOW_POLL_S = 10.0
HISTORY_GRACE_S = 2.0
# How long re-reading a server's /object_info (~0.5 MB) may take before its old copy is kept.
OBJECT_INFO_WAIT_S = 5.0
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Execution errors that can pass on another try (or another server); others fail at once.
# Failures another attempt (on a server with more free VRAM, or later) can get past.
_TRANSIENT_EXCEPTIONS = ("OutOfMemoryError", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError")
_TRANSIENT_MESSAGES = ("out of memory", "allocation on device")
# LoadImage's file input: checked by ComfyUI itself, since an upload is newer than our /object_info.
SOURCE_INPUTS = frozenset({"image"})


@dataclass(slots=True)
class Ticket:
    """An admitted run's claim on a server slot, until it is dispatched."""

    dispatched: bool = False


class ComfyUIPool(GenerationBackend):
    """`GenerationBackend` over one or more ComfyUI servers."""

    name = "comfyui"

    def __init__(
        self,
        urls: Sequence[str],
        workflows: WorkflowLibrary,
        *,
        depth: int = 2,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a ComfyUI pool needs at least one server URL")
        self.workflows = workflows
        self.depth = depth
        self.http = http or httpx.AsyncClient(trust_env=False, timeout=30)
        client_id = uuid.uuid4().hex
        self.servers = [ComfyUIServer(url, self.http, client_id) for url in urls]
        for server in self.servers:
            server.on_change = self._changed_now
        self.concurrency = len(self.servers) * depth
        self._reserved = 0
        self._changed = anyio.Event()
        self._started = False
        self._turn = 0
        self._task_group: TaskGroup | None = None
        self._refreshing = False

    # -- life cycle and admission -------------------------------------------------------------

    def start(self, task_group: TaskGroup) -> None:
        self._started = True
        self._task_group = task_group
        for server in self.servers:
            task_group.start_soon(server.maintain, name=f"comfyui-{server.url}")

    async def aclose(self) -> None:
        await self.http.aclose()

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _free_slots(self) -> int:
        return sum(self.depth - s.inflight for s in self.servers if s.up) - self._reserved

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[Ticket]:
        """Wait for room on an up server and hold it until the run is dispatched."""
        while True:
            changed = self._changed
            if self._free_slots() > 0:
                break
            await changed.wait()
        self._reserved += 1
        ticket = Ticket()
        try:
            yield ticket
        finally:
            if not ticket.dispatched:
                self._reserved -= 1
                self._changed_now()

    async def _dispatch(self, ticket: Ticket | None, prefer: ComfyUIServer | None = None) -> ComfyUIServer:
        """The least busy up server with room (or `prefer`, which already holds the prompt)."""
        if ticket is not None and not ticket.dispatched:
            ticket.dispatched = True
            self._reserved -= 1
        while prefer is None:
            changed = self._changed
            ready = [s for s in self.servers if s.up and s.inflight < self.depth]
            if ready:
                self._turn += 1
                # Fewest in flight first; among equals, take turns so load spreads evenly.
                prefer = min(
                    ready,
                    key=lambda s: (s.inflight, (self.servers.index(s) - self._turn) % len(self.servers)),
                )
                break
            await changed.wait()
        prefer.inflight += 1
        return prefer

    def _release(self, server: ComfyUIServer) -> None:
        server.inflight -= 1
        self._changed_now()

    # -- checks -------------------------------------------------------------------------------

    def workflow_for(self, operation: str, name: str | None) -> Workflow:
        """Every request runs a workflow here: the named one, or the operation's default."""
        return self.workflows.for_request(operation, name)

    def check(self, spec: ImageSpec) -> None:
        """Refuse a request that cannot succeed on the servers as last seen (no GPU time spent)."""
        workflow = self.workflows.for_request(spec.operation, spec.workflow)
        known = [s.object_info for s in self.servers if s.object_info]
        if not known:
            return  # no server seen yet: the check happens at dispatch instead
        # A graph that fits any server is accepted; it is dispatched to one that has it all.
        failures = []
        for info in known:
            graph = workflow.render(spec, source_name="atelier-source.png")
            complete_model_names(graph, info)
            failures.append((validate_graph(graph, info, skip_inputs=SOURCE_INPUTS), graph))
        problems, graph = min(failures, key=lambda failure: len(failure[0]))
        if not problems:
            return
        if any(p.input in MODEL_INPUTS for p in problems):
            self._refresh_soon()  # perhaps installed since the lists were read: the next try knows
        if spec.character is not None:
            # The character's own LoRA missing: say how to install it rather than list the files.
            lora = comfyui_lora_name(spec.character.lora_file)
            missing = [
                p
                for p in problems
                if p.input == "lora_name" and graph[p.node]["inputs"].get("lora_name") == lora
            ]
            if missing:
                others = [p for p in problems if p not in missing]
                message = not_installed(spec.character)
                raise InvalidInput("character", message + "".join(f"; also {p}" for p in others))
        first = problems[0]
        field_name = workflow.parameter_at(first.node, first.input) or first.parameter
        raise InvalidInput(field_name, "; ".join(str(p) for p in problems))

    async def models(self) -> dict[str, Any]:
        """Installed model files by kind, merged over the servers that answer (read afresh)."""
        await self.refresh_models()
        merged: dict[str, set[str]] = {}
        for server in self.servers:
            for kind, names in installed_models(server.object_info or {}).items():
                merged.setdefault(kind, set()).update(names)
        return {kind: sorted(names) for kind, names in sorted(merged.items())}

    async def refresh_models(self) -> None:
        """Re-read `/object_info` from every up server at once, so validation sees what was just
        installed (a trained LoRA). A server that does not answer keeps what it last said."""

        async def refresh(server: ComfyUIServer) -> None:
            with anyio.move_on_after(OBJECT_INFO_WAIT_S):
                try:
                    await server.refresh_object_info()
                except Exception as exc:  # a training that kept its LoRA must not fail over this
                    log.warning("could not re-read the models of %s: %s", server.url, exc)

        async with anyio.create_task_group() as group:
            for server in self.servers:
                if server.up:
                    group.start_soon(refresh, server)

    def _refresh_soon(self) -> None:
        """Re-read the model lists in the background (once at a time)."""
        if self._task_group is None or self._refreshing:
            return
        self._refreshing = True

        async def refresh() -> None:
            try:
                await self.refresh_models()
            finally:
                self._refreshing = False

        self._task_group.start_soon(refresh, name="comfyui-refresh-models")

    async def health(self) -> dict[str, Any]:
        """Each server: up or down (and why), prompts in flight, its queue, VRAM. Answers within ~1.5 s."""
        async with anyio.create_task_group() as group:
            for server in self.servers:
                # Without the background connections (a process that runs no work), probe.
                if server.up or not self._started:
                    group.start_soon(self._probe, server)
        servers = [s.describe() for s in self.servers]
        up = sum(1 for s in servers if s["up"])
        health: dict[str, Any] = {
            "up": up > 0,
            "kind": "comfyui",
            "servers_up": up,
            "servers": servers,
            "queue_depth_per_server": self.depth,
        }
        if not up:
            health["error"] = "no ComfyUI server answers: " + "; ".join(
                f"{s['url']}: {s['error']}" for s in servers
            )
        return health

    async def _probe(self, server: ComfyUIServer) -> None:
        with anyio.move_on_after(1.5) as scope:
            try:
                await server.refresh()
            except BackendError as exc:
                if not self._started:
                    server.up, server.error = False, str(exc)
                return
            if not self._started:
                server.up, server.error = True, ""
        if scope.cancelled_caught and not self._started:
            server.up, server.error = False, "no answer within 1.5 s"

    # -- running ------------------------------------------------------------------------------

    async def run(self, job: Job, on_progress: ProgressCallback) -> list[ImageOutput]:
        workflow = self.workflows.for_request(job.spec.operation, job.spec.workflow)
        resumed = await self._resume(job, workflow, on_progress) if job.resume_handle else None
        if resumed is not None:
            return resumed
        server = await self._dispatch(job.ticket)
        try:
            return await self._run_on(server, job, workflow, on_progress)
        finally:
            self._release(server)

    async def _run_on(
        self, server: ComfyUIServer, job: Job, workflow: Workflow, on_progress: ProgressCallback
    ) -> list[ImageOutput]:
        spec = job.spec
        on_progress(Progress(0, spec.steps, f"sending to {server.url}"))
        source_name = None
        if spec.source is not None:
            if job.source is None:
                raise BackendError(f"the source image of run {job.run_id} is missing", retryable=False)
            extension = _EXTENSIONS.get(spec.source.media_type, "png")
            source_name = await server.upload(
                job.source, f"atelier-{spec.source.sha256[:20]}.{extension}", spec.source.media_type
            )
        graph = workflow.render(spec, source_name=source_name)
        info = server.object_info
        if info is not None:
            complete_model_names(graph, info)
            # An image just uploaded is not in the cached /object_info list of input files.
            problems = validate_graph(graph, info, skip_inputs=SOURCE_INPUTS)
            if problems:
                raise BackendError(
                    f"workflow {workflow.name!r} does not fit ComfyUI at {server.url}: "
                    + "; ".join(str(p) for p in problems),
                    retryable=False,
                )
        prompt_id = str(uuid.uuid4())
        await job.record_handle(json.dumps({"server": server.url, "prompt_id": prompt_id}))
        with server.listen(prompt_id) as events:
            async with _cancelled_there(server, prompt_id, job):
                await server.submit(graph, prompt_id)
                return await self._follow(server, prompt_id, events, graph, workflow, spec, on_progress)

    async def _resume(
        self, job: Job, workflow: Workflow, on_progress: ProgressCallback
    ) -> list[ImageOutput] | None:
        """After a restart: collect or follow the prompt the last process left on a server.

        Returns None when the server no longer knows it (ComfyUI restarted): run it again.
        """
        try:
            handle = json.loads(job.resume_handle or "")
            url, prompt_id = handle["server"], handle["prompt_id"]
        except (ValueError, KeyError, TypeError):
            return None
        server = next((s for s in self.servers if s.url == url), None)
        if server is None:
            return None
        if not server.up:
            with anyio.move_on_after(10):
                while not server.up:
                    changed = self._changed
                    await changed.wait()
        if not server.up:
            return None  # down for good, as far as we can wait: run it elsewhere
        server = await self._dispatch(job.ticket, prefer=server)
        try:
            with server.listen(prompt_id) as events:
                entry = await server.history(prompt_id)
                if entry is None:
                    running, pending = await server.queued()
                    if prompt_id not in running and prompt_id not in pending:
                        log.info("prompt %s is unknown to %s (restarted?); running it again", prompt_id, url)
                        return None
                    on_progress(Progress(0, job.spec.steps, f"following its prompt on {url} after a restart"))
                    graph = workflow.render(job.spec)
                    async with _cancelled_there(server, prompt_id, job):
                        return await self._follow(
                            server, prompt_id, events, graph, workflow, job.spec, on_progress
                        )
                return await self._collect(server, prompt_id, entry, workflow)
        finally:
            self._release(server)

    async def _follow(
        self,
        server: ComfyUIServer,
        prompt_id: str,
        events: Any,
        graph: dict[str, Any],
        workflow: Workflow,
        spec: ImageSpec,
        on_progress: ProgressCallback,
    ) -> list[ImageOutput]:
        """Turn the prompt's events into progress until it ends; then collect its outputs."""
        step, max_steps, node_label = 0, spec.steps, ""
        while True:
            message = None
            with anyio.move_on_after(FOLLOW_POLL_S):
                message = await events.receive()
            if message is None or message["type"] == RECONNECTED:
                # Quiet for a while, or events may have been missed: ask the server.
                entry = await server.history(prompt_id)
                if entry is not None:
                    return await self._collect(server, prompt_id, entry, workflow)
                running, pending = await server.queued()
                if prompt_id not in running and prompt_id not in pending:
                    raise BackendError(
                        f"ComfyUI at {server.url} lost the prompt (was it restarted?)", retryable=True
                    )
                continue
            kind, data = message["type"], message.get("data") or {}
            if kind == LOST:
                raise BackendError(f"lost ComfyUI at {server.url}: {server.error}", retryable=True)
            if kind == "executing":
                node = data.get("node")
                if node is None:
                    break
                class_type = graph.get(str(node), {}).get("class_type", "node")
                node_label = f"{class_type} (node {node})"
                on_progress(Progress(step, max_steps, node_label))
            elif kind == "progress":
                step, max_steps = int(data.get("value", step)), int(data.get("max", max_steps) or max_steps)
                node = str(data.get("node", ""))
                node_label = (
                    f"{graph.get(node, {}).get('class_type', 'node')} (node {node})" if node else node_label
                )
                on_progress(Progress(step, max_steps, node_label))
            elif kind == "execution_start":
                on_progress(Progress(0, max_steps, f"started on {server.url}"))
            elif kind == "execution_cached" and data.get("nodes"):
                on_progress(Progress(step, max_steps, f"{len(data['nodes'])} node(s) cached"))
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                break
        entry = await self._history_when_ready(server, prompt_id)
        return await self._collect(server, prompt_id, entry, workflow)

    async def _history_when_ready(self, server: ComfyUIServer, prompt_id: str) -> dict[str, Any]:
        # The end event can arrive a moment before /history has the entry.
        delay = 0.02
        with anyio.move_on_after(HISTORY_GRACE_S):
            while True:
                entry = await server.history(prompt_id)
                if entry is not None:
                    return entry
                await anyio.sleep(delay)
                delay = min(0.25, delay * 2)
        raise BackendError(f"ComfyUI at {server.url} finished prompt {prompt_id} but has no history of it")

    async def _collect(
        self, server: ComfyUIServer, prompt_id: str, entry: dict[str, Any], workflow: Workflow
    ) -> list[ImageOutput]:
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise _execution_failure(server, status)
        images = _output_images(entry.get("outputs") or {}, workflow.outputs)
        if not images:
            raise BackendError(
                f"workflow {workflow.name!r} finished on {server.url} without saving an image",
                retryable=False,
            )
        return [_image_output(await server.view(image)) for image in images]


def _output_images(outputs: dict[str, Any], wanted: Sequence[str]) -> list[dict[str, Any]]:
    """Saved images of the output nodes (all nodes' if the workflow names none), in node order."""
    nodes = [n for n in wanted if n in outputs] if wanted else sorted(outputs, key=_node_order)
    images = [image for node in nodes for image in outputs[node].get("images", [])]
    saved = [image for image in images if image.get("type") == "output"]
    return saved or images


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _execution_failure(server: ComfyUIServer, status: dict[str, Any]) -> BackendError:
    for name, data in reversed(status.get("messages") or []):
        if name == "execution_error":
            exception = data.get("exception_type", "")
            message = str(data.get("exception_message", "")).strip()
            return BackendError(
                f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): {exception}: {message}",
                retryable=exception in _TRANSIENT_EXCEPTIONS
                or any(marker in message.lower() for marker in _TRANSIENT_MESSAGES),
            )
        if name == "execution_interrupted":
            return BackendError(f"the prompt was interrupted on ComfyUI at {server.url}", retryable=True)
    return BackendError(f"ComfyUI at {server.url} reports the prompt failed", retryable=False)


def _image_output(data: bytes) -> ImageOutput:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise BackendError(f"ComfyUI returned a file that is not an image ({exc})") from None
    media_type = Image.MIME.get(kind or "", "application/octet-stream")
    return ImageOutput(
        data=data,
        media_type=media_type,
        width=width,
        height=height,
        extension=_EXTENSIONS.get(media_type, "bin"),
    )


@asynccontextmanager
async def _cancelled_there(server: ComfyUIServer, prompt_id: str, job: Job) -> AsyncIterator[None]:
    """A run cancelled in Atelier is cancelled on ComfyUI too: out of its queue, or interrupted.

    Not when Atelier is shutting down: the prompt is left to finish, and the next start
    collects or follows it from the run's recorded handle.
    """
    try:
        yield
    except anyio.get_cancelled_exc_class():
        if not job.shutting_down():
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await server.cancel(prompt_id)
                except BackendError as exc:
                    log.warning("could not cancel prompt %s on %s: %s", prompt_id, server.url, exc)
        raise
