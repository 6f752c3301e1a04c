"""One ComfyUI server: its HTTP API, its event WebSocket, and what Atelier knows of its health.

One WebSocket per server carries the execution events of every prompt this process sent
(they all share one `client_id`); each prompt being followed has a listener that receives
its own events. The socket reconnects by itself; listeners hear `_reconnected` (events may
have been missed: look at /history) or `_lost` (the server is down).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from core.errors import BackendError

log = logging.getLogger("atelier.comfyui")

# Reconnect quickly after a blip, then back off to this while a server stays down.
RECONNECT_MAX_S = 5.0
OBJECT_INFO_TTL_S = 300.0
LOST = "_lost"
RECONNECTED = "_reconnected"


class ComfyUIServer:
    """The client of one ComfyUI server; `maintain()` keeps its event socket and health current."""

    def __init__(self, url: str, http: httpx.AsyncClient, client_id: str) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.client_id = client_id
        self.up = False
        self.error = "not contacted yet"
        self.inflight = 0
        self.queue_remaining: int | None = None
        self.system: dict[str, Any] = {}
        self.devices: list[dict[str, Any]] = []
        self.object_info: dict[str, Any] | None = None
        self._object_info_at = 0.0
        self._listeners: dict[str, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._running_node: dict[str, str] = {}
        self.on_change: Any = lambda: None  # the pool's wake-up call when health or load changes
        self._socket: Any = None

    # -- events -------------------------------------------------------------------------------

    @contextmanager
    def listen(self, prompt_id: str) -> Iterator[MemoryObjectReceiveStream[dict[str, Any]]]:
        """Receive the events of `prompt_id` (register before submitting it, so none are missed)."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._listeners[prompt_id] = send
        try:
            yield receive
        finally:
            self._listeners.pop(prompt_id, None)
            send.close()
            receive.close()

    def _tell_all(self, kind: str) -> None:
        for send in list(self._listeners.values()):
            send.send_nowait({"type": kind, "data": {}})

    def _dispatch(self, message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        kind = message.get("type")
        if kind == "status":
            remaining = (data.get("status") or {}).get("exec_info", {}).get("queue_remaining")
            if isinstance(remaining, int):
                self.queue_remaining = remaining
            return
        prompt_id = data.get("prompt_id")
        if prompt_id is None and kind == "executing":
            # After a reconnect mid-run, ComfyUI names the node but not the prompt.
            for send in self._listeners.values():
                send.send_nowait(message)
            return
        send = self._listeners.get(prompt_id) if isinstance(prompt_id, str) else None
        if send is not None:
            send.send_nowait(message)

    async def maintain(self) -> None:
        """Forever: connect the event socket, refresh health, and reconnect when it drops."""
        from websockets.asyncio.client import connect

        split = urlsplit(self.url)
        scheme = "wss" if split.scheme == "https" else "ws"
        ws_url = f"{scheme}://{split.netloc}{split.path}/ws?clientId={self.client_id}"
        delay = 0.1
        while True:
            try:
                async with connect(ws_url, open_timeout=5, max_size=None, ping_interval=20) as socket:
                    self._socket = socket
                    await self.refresh()
                    was_up, self.up, self.error = self.up, True, ""
                    delay = 0.1
                    if not was_up:
                        log.info("ComfyUI at %s is up", self.url)
                    self.on_change()
                    self._tell_all(RECONNECTED)
                    async for frame in socket:
                        if isinstance(frame, str):
                            self._dispatch(json.loads(frame))
                    self.error = "event socket closed"
            except (OSError, TimeoutError, httpx.HTTPError, BackendError, ValueError) as exc:
                self._mark_down(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # websockets' own errors: connection closed, bad handshake
                self._mark_down(f"{type(exc).__name__}: {exc}")
            finally:
                self._socket = None
            await anyio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    def _mark_down(self, error: str) -> None:
        self.error = error
        if self.up:
            log.warning("ComfyUI at %s is down: %s", self.url, error)
        self.up = False
        self.on_change()
        self._tell_all(LOST)

    async def connection_failed(self, error: str) -> None:
        """An HTTP call failed to connect: take the server out of rotation until the socket is back."""
        self._mark_down(error)
        if self._socket is not None:
            await self._socket.close()

    async def refresh(self) -> None:
        """Read `/system_stats` (version, VRAM) and, when stale, `/object_info` (what is installed)."""
        stats = await self.get_json("/system_stats")
        self.system = stats.get("system", {})
        self.devices = stats.get("devices", [])
        if self.object_info is None or time.monotonic() - self._object_info_at > OBJECT_INFO_TTL_S:
            await self.refresh_object_info()

    async def refresh_object_info(self) -> dict[str, Any]:
        self.object_info = await self.get_json("/object_info", timeout=30)
        self._object_info_at = time.monotonic()
        return self.object_info

    # -- HTTP ---------------------------------------------------------------------------------

    async def get_json(self, path: str, *, timeout: float = 10) -> Any:
        response = await self._request("GET", path, timeout=timeout)
        return response.json()

    async def submit(self, graph: dict[str, Any], prompt_id: str) -> dict[str, Any]:
        """POST /prompt; returns ComfyUI's answer. A 400 raises a non-retryable `BackendError`."""
        from core.backends.comfyui.validation import describe_rejection

        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        response = await self._request("POST", "/prompt", json=body, check=False)
        if response.status_code == 200:
            return response.json()
        if response.status_code == 400:
            try:
                answer = response.json()
            except ValueError:
                answer = {"error": {"message": response.text[:300]}}
            raise BackendError(
                f"ComfyUI at {self.url} rejected the workflow: {describe_rejection(answer, graph)}",
                retryable=False,
            )
        raise BackendError(
            f"ComfyUI at {self.url} answered {response.status_code} to POST /prompt: {response.text[:200].strip()}",
            retryable=response.status_code >= 500,
        )

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, or None while ComfyUI has none (not finished, or forgotten)."""
        answer = await self.get_json(f"/history/{quote(prompt_id, safe='')}")
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        return entry if isinstance(entry, dict) else None

    async def queued(self) -> tuple[list[str], list[str]]:
        """Prompt ids (running, pending) in the server's queue."""
        answer = await self.get_json("/queue")
        return (
            [item[1] for item in answer.get("queue_running", [])],
            [item[1] for item in answer.get("queue_pending", [])],
        )

    async def view(self, image: dict[str, Any]) -> bytes:
        params = {
            "filename": image.get("filename", ""),
            "subfolder": image.get("subfolder", ""),
            "type": image.get("type", "output"),
        }
        response = await self._request("GET", "/view", params=params, timeout=120)
        return response.content

    async def upload(self, data: bytes, filename: str, media_type: str) -> str:
        """Upload an input image; returns the name a LoadImage node uses for it."""
        response = await self._request(
            "POST",
            "/upload/image",
            files={"image": (filename, data, media_type)},
            data={"type": "input", "overwrite": "true"},
            timeout=120,
        )
        answer = response.json()
        name, subfolder = answer["name"], answer.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else name

    async def cancel(self, prompt_id: str) -> None:
        """Remove the prompt from the queue if pending, and interrupt it if running."""
        # Delete first: a prompt that starts between the two calls is then still interrupted.
        await self._request("POST", "/queue", json={"delete": [prompt_id]}, timeout=5)
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=5)

    async def _request(
        self, method: str, path: str, *, check: bool = True, timeout: float = 30, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self.http.request(method, self.url + path, timeout=timeout, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            await self.connection_failed(f"{type(exc).__name__}: {exc}")
            raise BackendError(
                f"ComfyUI at {self.url} is unreachable ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(
                f"ComfyUI at {self.url}: {method} {path} failed: {type(exc).__name__}: {exc}"
            ) from None
        if check and response.status_code != 200:
            raise BackendError(
                f"ComfyUI at {self.url} answered {response.status_code} to {method} {path}",
                retryable=response.status_code >= 500,
            )
        return response

    def describe(self) -> dict[str, Any]:
        """What `get_status` shows for this server."""
        device = self.devices[0] if self.devices else {}
        return {
            "url": self.url,
            "up": self.up,
            "error": self.error or None,
            "running_here": self.inflight,
            "queue_remaining": self.queue_remaining,
            "comfyui_version": self.system.get("comfyui_version"),
            "device": device.get("name"),
            "vram_total": device.get("vram_total"),
            "vram_free": device.get("vram_free"),
        }
