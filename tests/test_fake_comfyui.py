"""The fake ComfyUI against recordings of a real ComfyUI 0.3.64, and the knobs tests turn on it.

The replay test plays every recorded session (/work/shared/notes/comfyui-transcripts, or
$ATELIER_COMFYUI_TRANSCRIPTS) against one fake, in the order they were recorded, with real
clients (httpx and `websockets`), and checks status codes, content types, JSON shapes and the
order of the WebSocket events of every prompt. If the fake drifts from the recordings, it fails.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.comfyui import FakeComfyUI, FakeServer, serve_fake

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[1]
# A copy of ../shared/notes/comfyui-transcripts, kept with the tests so a clean clone checks the
# fake against them too; ATELIER_COMFYUI_TRANSCRIPTS points at fresher recordings.
TRANSCRIPTS = Path(
    os.environ.get("ATELIER_COMFYUI_TRANSCRIPTS", str(REPO_ROOT / "tests" / "fakes" / "transcripts"))
)
# The order the sessions were recorded in: their queue numbers run on from one file to the next
# (basic 0-1, misc 2, ... race_check 38-40). Played in this order against one fake, the numbers,
# the history and the node cache come out as they did on the real server.
SESSION = [
    "object_info", "basic", "misc", "progress", "invalid", "exec_error", "ws_binary", "no_client_id",
    "interrupt", "extras", "race_check",
]  # fmt: skip
# basic.jsonl reads /history/{id} and /queue while its prompt runs: give that prompt time to be
# caught running even on a slow machine. Elsewhere prompts can be quick.
PROMPT_SECONDS = {"basic": 0.3}
needs_transcripts = pytest.mark.skipif(not TRANSCRIPTS.is_dir(), reason=f"no recordings at {TRANSCRIPTS}")

FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
RUN_TYPES = {"progress", "progress_state", "binary"}  # their count depends on timing, not on the protocol
LOOSE_LISTS = {"traceback", "argv"}  # lists whose length is the server's own business


def _png(color: tuple[int, int, int], size: tuple[int, int] = (4, 4), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def load_transcript(name: str) -> list[dict[str, Any]]:
    with (TRANSCRIPTS / f"{name}.jsonl").open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


# -- clients ----------------------------------------------------------------------------------


class Socket:
    """A `websockets` client connection and everything it received (JSON decoded, binary as bytes)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.messages: list[Any] = []
        self.closed = anyio.Event()
        self._changed = anyio.Event()

    @classmethod
    async def open(
        cls, tg: TaskGroup, url: str, client_id: str | None = None, feature_flags: bool = False
    ) -> Socket:
        uri = url.replace("http://", "ws://") + "/ws" + (f"?clientId={client_id}" if client_id else "")
        connection = await connect(uri, max_size=None, ping_interval=None)
        sock = cls(connection)
        if feature_flags:
            await connection.send(json.dumps(FLAGS))
        tg.start_soon(sock._read)
        return sock

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                self.messages.append(json.loads(raw) if isinstance(raw, str) else raw)
                self._changed.set()
                self._changed = anyio.Event()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Any]], Any], timeout: float = 5.0) -> Any:
        """Wait until predicate(messages) is truthy and return its value."""
        with anyio.fail_after(timeout):
            while True:
                changed = self._changed
                found = predicate(self.messages)
                if found:
                    return found
                if self.closed.is_set():
                    raise AssertionError(f"socket closed first; received: {self.messages}")
                await changed.wait()

    async def wait_done(self, prompt_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait for `executing` null of prompt_id; return that prompt's JSON events."""
        await self.wait_for(lambda ms: any(_is_end(m, prompt_id) for m in ms), timeout)
        return self.events(prompt_id)

    def events(self, prompt_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict) and (prompt_id is None or m["data"].get("prompt_id") == prompt_id)
        ]

    async def close(self) -> None:
        await self.connection.close()


def _is_end(message: Any, prompt_id: str) -> bool:
    return (
        isinstance(message, dict)
        and message["type"] == "executing"
        and message["data"].get("node") is None
        and message["data"].get("prompt_id") == prompt_id
    )


@dataclass
class Comfy:
    """A served fake with an HTTP client and a WebSocket listening as `client_id`."""

    fake: FakeComfyUI
    server: FakeServer
    http: httpx.AsyncClient
    ws: Socket
    tg: TaskGroup
    client_id: str = "c0ffee"

    async def submit(self, prompt: dict[str, Any], **extra: Any) -> str:
        response = await self.http.post(
            "/prompt", json={"prompt": prompt, "client_id": self.client_id, **extra}
        )
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    async def run(self, prompt: dict[str, Any], **extra: Any) -> tuple[str, list[dict[str, Any]]]:
        prompt_id = await self.submit(prompt, **extra)
        return prompt_id, await self.ws.wait_done(prompt_id)

    async def history(self, prompt_id: str) -> dict[str, Any]:
        return (await self.http.get(f"/history/{prompt_id}")).json()[prompt_id]

    async def output_bytes(self, prompt_id: str, node: str = "9") -> list[bytes]:
        images = (await self.history(prompt_id))["outputs"][node]["images"]
        return [(await self.http.get("/view", params=image)).content for image in images]


@asynccontextmanager
async def comfy(**knobs: Any) -> AsyncIterator[Comfy]:
    fake = FakeComfyUI(**{"prompt_seconds": 0.02, **knobs})
    async with anyio.create_task_group() as tg, serve_fake(fake) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            ws = await Socket.open(tg, server.url, "c0ffee")
            await ws.wait_for(lambda ms: ms)
            try:
                yield Comfy(fake, server, http, ws, tg)
            finally:
                await ws.close()
        tg.cancel_scope.cancel()


# -- graphs -----------------------------------------------------------------------------------


def basic(color: int = 16744448, prefix: str = "peer_basic", node2: str = "SaveImage") -> dict[str, Any]:
    inputs: dict[str, Any] = {"images": ["1", 0]}
    if node2 == "SaveImage":
        inputs["filename_prefix"] = prefix
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color},
        },
        "2": {"class_type": node2, "inputs": inputs},
    }


def sleeper(seconds: float, color: int = 1) -> dict[str, Any]:
    graph = basic(color, "sleepy")
    graph["2"]["inputs"]["images"] = ["3", 0]
    graph["3"] = {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}}
    return graph


def txt2img(
    seed: int = 1,
    text: str = "a red fox in the snow",
    steps: int = 4,
    size: tuple[int, int] = (64, 48),
    batch: int = 1,
    loras: tuple[tuple[str, float], ...] = (),
    prefix: str = "atelier/t2i",
) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size[0], "height": size[1], "batch_size": batch},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }
    model, clip = ["4", 0], ["4", 1]
    for index, (name, strength) in enumerate(loras):
        node = str(20 + index)
        graph[node] = {
            "class_type": "LoraLoader",
            "inputs": {"model": model, "clip": clip, "lora_name": name, "strength_model": strength,
                       "strength_clip": strength},
        }  # fmt: skip
        model, clip = [node, 0], [node, 1]
    graph["3"]["inputs"]["model"] = model
    graph["6"]["inputs"]["clip"] = clip
    graph["7"]["inputs"]["clip"] = clip
    return graph


def flux(seed: int = 1, unet: str = "flux1-dev.safetensors") -> dict[str, Any]:
    return {
        "10": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "11": {"class_type": "DualCLIPLoader",
               "inputs": {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "12": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["11", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["11", 0]}},
        "13": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 3, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "model": ["10", 0], "positive": ["13", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["12", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "atelier/flux", "images": ["8", 0]}},
    }  # fmt: skip


# -- comparing with the recordings ------------------------------------------------------------


def shape_problem(expected: Any, actual: Any, path: str = "$", loose: bool = False) -> str | None:
    """Where `actual` differs in shape from `expected`: same keys recursively, same JSON types.

    Values are not compared (ids, numbers, timestamps); null stands for any value. Lists must
    have the same length and are compared item by item, except `loose` ones (and LOOSE_LISTS
    keys) whose items are all compared with the first recorded item."""
    if expected is None or actual is None:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r:.80}"
        if set(expected) != set(actual):
            return f"{path}: keys {sorted(actual)} != recorded {sorted(expected)}"
        for key in expected:
            problem = shape_problem(expected[key], actual[key], f"{path}.{key}", key in LOOSE_LISTS)
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {actual!r:.80}"
        if loose:
            if expected and actual:
                for index, item in enumerate(actual):
                    problem = shape_problem(expected[0], item, f"{path}[{index}]")
                    if problem:
                        return problem
            return None
        if len(expected) != len(actual):
            return f"{path}: {len(actual)} items, recorded {len(expected)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            problem = shape_problem(want, got, f"{path}[{index}]")
            if problem:
                return problem
        return None
    kinds = {bool: "boolean", int: "number", float: "number", str: "string"}
    if kinds.get(type(expected)) != kinds.get(type(actual)):
        return f"{path}: {actual!r:.80} is not like recorded {expected!r:.80}"
    return None


def without_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: None if key == "traceback" else without_tracebacks(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_tracebacks(item) for item in value]
    return value


def magic(data: bytes) -> bytes:
    """A body's file signature: PNG's 8 bytes, or RIFF....WEBP."""
    return data[:4] + data[8:12] if data[:4] == b"RIFF" else data[:8]


def normalize(tokens: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Collapse each run of progress / progress_state / binary messages into one ("run", kinds) token."""
    out: list[tuple[Any, ...]] = []
    for token in tokens:
        if token[0] in RUN_TYPES:
            kind = token[0] if token[0] != "binary" else f"binary:{token[1]}"
            if out and out[-1][0] == "run":
                out[-1] = ("run", out[-1][1] | {kind})
            else:
                out.append(("run", frozenset({kind})))
        else:
            out.append(token)
    return out


@dataclass
class Connection:
    """One recorded WebSocket connection, replayed by a real client."""

    sid: str
    socket: Socket
    recorded: list[dict[str, Any]] = field(default_factory=list)


class Replay:
    """Plays recorded sessions against one fake, in order, and checks every answer and event."""

    def __init__(self, fake: FakeComfyUI, server: FakeServer, http: httpx.AsyncClient, tg: TaskGroup) -> None:
        self.fake, self.server, self.http, self.tg = fake, server, http, tg
        self.ids: dict[str, str] = {}  # recorded prompt id -> the fake's
        self.filenames: dict[str, str] = {}  # recorded output file -> the fake's
        self.open: list[Connection] = []
        self.uploads = iter(MISC_UPLOADS)

    # recorded -> fake (request paths) and fake -> recorded (responses and events)
    def forward(self, text: str) -> str:
        for recorded, ours in [*self.ids.items(), *self.filenames.items()]:
            text = text.replace(recorded, ours)
        return text

    def back(self, value: Any) -> Any:
        reverse = {ours: recorded for recorded, ours in [*self.ids.items(), *self.filenames.items()]}
        if isinstance(value, dict):
            return {reverse.get(key, key): self.back(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.back(item) for item in value]
        return reverse.get(value, value) if isinstance(value, str) else value

    def tokens(self, messages: list[Any], recorded: bool) -> list[tuple[Any, ...]]:
        tokens = []
        for message in messages:
            if isinstance(message, bytes):
                tokens.append(("binary", int.from_bytes(message[:4], "big")))
                continue
            if message["type"] == "<binary>":
                tokens.append(("binary", message["event"]))
                continue
            data = message["data"] if recorded else self.back(message["data"])
            kind = message["type"]
            if kind == "status":
                continue  # broadcasts whose interleaving depends on timing
            if kind in RUN_TYPES:
                tokens.append((kind,))
                continue
            node = data.get("node", data.get("node_id")) if isinstance(data, dict) else None
            nodes = tuple(data["nodes"]) if kind == "execution_cached" else None
            tokens.append((kind, data.get("prompt_id"), node, nodes))
        return tokens

    @staticmethod
    def key_sets(messages: list[Any]) -> set[tuple[str, frozenset[str]]]:
        keys = set()
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("data"), dict):
                keys.add((message["type"], frozenset(message["data"])))
                if message["type"] == "progress_state":
                    keys |= {("progress_state.node", frozenset(n)) for n in message["data"]["nodes"].values()}
        return keys

    async def play(self, name: str) -> None:
        records = load_transcript(name)
        self.fake.prompt_seconds = PROMPT_SECONDS.get(name, 0.02)
        for index, record in enumerate(records):
            where = f"{name}.jsonl:{index + 1}"
            kind = record["kind"]
            if kind in ("ws_text", "ws_binary"):
                message = record["msg"]
                if message["type"] == "status" and "sid" in message["data"]:
                    # Connections recorded back to back were open together (no_client_id); otherwise a
                    # new connection replaced the previous one.
                    if not (index and _is_connect(records[index - 1])):
                        await self.close_all(where)
                    answers_flags = index + 1 < len(records) and records[index + 1].get("msg", {}).get(
                        "type"
                    ) == ("feature_flags")
                    socket_ = await Socket.open(
                        self.tg, self.server.url, message["data"]["sid"], answers_flags
                    )
                    self.open.append(Connection(message["data"]["sid"], socket_))
                for connection in self.open:
                    connection.recorded.append(message)
            elif kind == "http":
                if record["method"] != "GET":
                    await self.catch_up(where)
                await self.http_exchange(record, where)
            elif kind == "note":
                # "closed ws2; reconnecting with same clientId": once the fake is where the recording was.
                await self.close_all(where)
            elif kind == "object_info_summary":
                await self.check_object_info(record, where)
            elif kind == "history_race":
                continue  # see test_history_is_written_before_execution_success
            else:
                raise AssertionError(f"{where}: unknown record kind {kind}")
        await self.close_all(f"{name}.jsonl:end")

    async def catch_up(self, where: str) -> None:
        """Wait until each open socket got the recorded events so far (progress aside), in order."""
        for connection in self.open:
            expected = [t for t in normalize(self.tokens(connection.recorded, True)) if t[0] != "run"]

            def reached(messages: list[Any], expected: list[Any] = expected) -> bool:
                got = [t for t in normalize(self.tokens(messages, False)) if t[0] != "run"]
                return len(got) >= len(expected)

            with anyio.move_on_after(5):
                await connection.socket.wait_for(reached)
            got = [t for t in normalize(self.tokens(connection.socket.messages, False)) if t[0] != "run"]
            assert got[: len(expected)] == expected, f"{where}: events of {connection.sid}"

    async def close_all(self, where: str) -> None:
        """Check each open connection's whole event sequence against the recording, then close it."""
        for connection in self.open:
            expected = normalize(self.tokens(connection.recorded, True))

            def complete(messages: list[Any], expected: list[Any] = expected) -> bool:
                return normalize(self.tokens(messages, False)) == expected

            with anyio.move_on_after(5):
                await connection.socket.wait_for(complete)
            assert normalize(self.tokens(connection.socket.messages, False)) == expected, (
                f"{where}: event sequence of {connection.sid}"
            )
            assert self.key_sets(connection.socket.messages) == self.key_sets(connection.recorded), (
                f"{where}: event keys of {connection.sid}"
            )
            await connection.socket.close()
        self.open = []

    async def http_exchange(self, record: dict[str, Any], where: str) -> None:
        method, path = record["method"], self.forward(record["path"])
        if path == "/upload/image":
            files, data = next(self.uploads)
            response = await self.http.post(path, files=files, data=data)
            problem = self.problem(record, response)
            assert problem is None, f"{where}: {problem}"
            return
        headers = {"Origin": "http://elsewhere.example"} if record["status"] == 403 else {}
        kwargs: dict[str, Any] = {}
        if "request_json" in record:
            kwargs["json"] = json.loads(self.forward(json.dumps(record["request_json"])))
        elif method == "POST" and record["status"] == 500:
            kwargs["content"] = b"{not json"  # the recording's malformed body
        # Reads that depend on the executor are retried until they match, like a polling client.
        attempts = 500 if method == "GET" else 1
        for _ in range(attempts):
            response = await self.http.request(method, path, headers=headers, **kwargs)
            problem = self.problem(record, response)
            if problem is None:
                break
            await anyio.sleep(0.01)
        assert problem is None, f"{where}: {method} {path}: {problem}"
        if path == "/prompt" and method == "POST" and record["status"] == 200:
            answer = response.json()
            assert answer["number"] == record["json"]["number"], f"{where}: queue number"
            self.ids[record["json"]["prompt_id"]] = answer["prompt_id"]
        if path.startswith("/history") and method == "GET":
            self.learn_filenames(record["json"], response.json())

    def learn_filenames(self, expected: Any, actual: Any) -> None:
        if isinstance(expected, dict) and isinstance(actual, dict):
            if isinstance(expected.get("filename"), str) and isinstance(actual.get("filename"), str):
                self.filenames[expected["filename"]] = actual["filename"]
            for key, value in expected.items():
                ours = actual.get(self.ids.get(key, key))
                self.learn_filenames(value, ours)
        elif isinstance(expected, list) and isinstance(actual, list):
            for want, got in zip(expected, actual, strict=False):
                self.learn_filenames(want, got)

    def problem(self, record: dict[str, Any], response: httpx.Response) -> str | None:
        if response.status_code != record["status"]:
            return f"status {response.status_code}, recorded {record['status']}: {response.text[:300]}"
        content_type = response.headers.get("content-type", "")
        if content_type != record["content_type"]:
            return f"content type {content_type!r}, recorded {record['content_type']!r}"
        if record.get("text") is not None and response.text != record["text"]:
            return f"body {response.text!r}, recorded {record['text']!r}"
        if "body_head" in record and magic(response.content) != magic(bytes.fromhex(record["body_head"])):
            return f"body starts {response.content[:16]!r}"
        if "json" not in record:
            return None
        expected = record["json"]
        if expected is None:
            return None if response.content == b"" else f"body {response.content[:80]!r}, recorded none"
        actual = self.back(response.json())
        path = record["path"]
        if record["method"] == "POST" and path == "/prompt" and record["status"] == 400:
            if without_tracebacks(actual) != without_tracebacks(expected):
                return f"error body {json.dumps(actual)[:600]}"
            return shape_problem(expected, actual)
        if path.startswith("/object_info/"):
            return None if actual == expected else f"node info {json.dumps(actual)[:300]}"
        if path.split("?")[0] in ("/queue", "/api/queue"):
            for section in ("queue_running", "queue_pending"):
                got = [entry[:2] for entry in actual[section]]
                want = [entry[:2] for entry in expected[section]]
                if got != want:
                    return f"{section} {got}, recorded {want}"
        loose_root = path.startswith(("/models/", "/embeddings"))
        return shape_problem(expected, actual, loose=loose_root)

    async def check_object_info(self, record: dict[str, Any], where: str) -> None:
        info = (await self.http.get("/object_info")).json()
        assert set(record["has"]) <= set(info), f"{where}: node types"
        for name, entry in info.items():
            assert set(entry) <= set(record["entry_keys"]), f"{where}: {name} has keys ComfyUI never sends"


def _is_connect(record: dict[str, Any]) -> bool:
    message = record.get("msg", {})
    return message.get("type") == "status" and "sid" in message.get("data", {})


# The recording kept the answers of misc.jsonl's uploads but not the multipart bodies: these are
# the requests that produce them (same name, same bytes, different bytes, overwrite, subfolder,
# temp, no file).
_RED, _BLUE = _png((200, 30, 30)), _png((30, 30, 200))
MISC_UPLOADS: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"image": ("peer_upload.png", _RED, "image/png")}, {}),
    ({"image": ("peer_upload.png", _RED, "image/png")}, {}),
    ({"image": ("peer_upload.png", _BLUE, "image/png")}, {}),
    ({"image": ("peer_upload.png", _BLUE, "image/png")}, {"overwrite": "true"}),
    ({"image": ("peer_upload.png", _RED, "image/png")}, {"subfolder": "peer_sub"}),
    ({"image": ("peer_upload.png", _RED, "image/png")}, {"type": "temp"}),
    ({}, {"type": "input"}),
]


@needs_transcripts
def test_every_recording_is_part_of_the_replayed_session() -> None:
    assert sorted(path.stem for path in TRANSCRIPTS.glob("*.jsonl")) == sorted(SESSION)


@needs_transcripts
async def test_fake_reproduces_the_recorded_session() -> None:
    fake = FakeComfyUI(prompt_seconds=0.05)
    async with anyio.create_task_group() as tg, serve_fake(fake) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            replay = Replay(fake, server, http, tg)
            for name in SESSION:
                await replay.play(name)
        tg.cancel_scope.cancel()


@needs_transcripts
@pytest.mark.parametrize("line", range(1, 11))
async def test_invalid_prompt_is_rejected_like_comfyui(line: int) -> None:
    record = load_transcript("invalid")[line - 1]
    async with comfy() as c:
        response = await c.http.post("/prompt", json=record["request_json"])
        assert response.status_code == 400
        body, recorded = response.json(), record["json"]
        assert body["error"]["type"] == recorded["error"]["type"]
        assert {
            node: [e["type"] for e in error["errors"]] for node, error in body["node_errors"].items()
        } == {node: [e["type"] for e in error["errors"]] for node, error in recorded["node_errors"].items()}
        assert without_tracebacks(body) == without_tracebacks(recorded)


# -- behaviour from the recordings, spelled out -----------------------------------------------


async def test_identical_prompt_is_all_cached_and_returns_the_old_file() -> None:
    async with comfy() as c:
        first, _ = await c.run(basic())
        second, events = await c.run(basic())
        cached = next(e for e in events if e["type"] == "execution_cached")
        assert cached["data"]["nodes"] == ["1", "2"]
        assert not [e for e in events if e["type"] == "executing" and e["data"]["node"] is not None]
        assert (await c.history(second))["outputs"] == (await c.history(first))["outputs"]
        assert c.fake.files.list_files("output") == ["peer_basic_00001_.png"]


async def test_history_is_written_before_execution_success() -> None:
    async with comfy() as c:
        for color in range(5):
            prompt_id = await c.submit(basic(color, "race"))
            await c.ws.wait_for(
                lambda ms, p=prompt_id: any(
                    isinstance(m, dict) and m["type"] == "execution_success" and m["data"]["prompt_id"] == p
                    for m in ms
                )
            )
            assert (await c.http.get(f"/history/{prompt_id}")).json() != {}


async def test_interrupt_by_prompt_id_stops_only_the_running_prompt() -> None:
    async with comfy() as c:
        running = await c.submit(sleeper(30, color=1), prompt_id="mine-1")
        queued = await c.submit(sleeper(30, color=2))
        front = await c.submit(sleeper(30, color=3), front=True)
        await c.ws.wait_for(lambda ms: any(m["type"] == "progress" for m in c.ws.events(running)))
        assert running == "mine-1"
        assert c.fake.running_prompt_id == running
        assert c.fake.pending_prompt_ids == [front, queued]

        assert (await c.http.post("/queue", json={"delete": [queued]})).status_code == 200
        assert c.fake.pending_prompt_ids == [front]
        assert (await c.http.post("/interrupt", json={"prompt_id": front})).content == b""
        await anyio.sleep(0.05)
        assert c.fake.running_prompt_id == running  # a pending prompt's id interrupts nothing

        await c.http.post("/interrupt", json={"prompt_id": running})
        events = await c.ws.wait_done(running)
        interrupted = next(e for e in events if e["type"] == "execution_interrupted")
        assert interrupted["data"]["node_id"] == "3" and interrupted["data"]["node_type"] == "TestSleep"
        entry = await c.history(running)
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert entry["outputs"] == {}

        await c.ws.wait_for(lambda ms: c.fake.running_prompt_id == front)
        await c.http.post("/interrupt")
        await c.ws.wait_done(front)
        assert ("POST", "/interrupt") in [(r.method, r.path) for r in c.fake.requests]
        assert c.fake.requests_to("POST", "/queue") == [{"delete": [queued]}]
        assert (await c.http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_test_sync_error_ends_in_execution_error() -> None:
    async with comfy() as c:
        graph = basic(123, "peer_err")
        graph["2"]["inputs"]["images"] = ["3", 0]
        graph["3"] = {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}}
        prompt_id, events = await c.run(graph)
        types = [e["type"] for e in events if e["type"] not in ("progress_state",)]
        assert types == [
            "execution_start",
            "execution_cached",
            "executing",
            "executing",
            "execution_error",
            "executing",
        ]
        error = next(e for e in events if e["type"] == "execution_error")["data"]
        assert error["node_id"] == "3" and error["executed"] == ["1"]
        assert error["exception_message"] == "Intentional sync execution error for testing\n"
        assert error["exception_type"] == "RuntimeError" and error["traceback"]
        entry = await c.history(prompt_id)
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {} and entry["meta"] == {}


async def test_save_image_websocket_sends_png_frames_and_no_outputs() -> None:
    async with comfy() as c:
        graph = basic(255, node2="SaveImageWebsocket")
        graph["1"]["inputs"].update(width=32, height=16, batch_size=2)
        prompt_id, _ = await c.run(graph)
        frames = [m for m in c.ws.messages if isinstance(m, bytes)]
        assert len(frames) == 2
        for frame in frames:
            assert frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02"  # event 1 (preview), format 2 (PNG)
            assert _image(frame[8:]).size == (32, 16)
        assert (await c.history(prompt_id))["outputs"] == {}

        flagged = await Socket.open(c.tg, c.server.url, "flagged", feature_flags=True)
        await flagged.wait_for(
            lambda ms: any(m.get("type") == "feature_flags" for m in ms if isinstance(m, dict))
        )
        response = await c.http.post("/prompt", json={"prompt": graph, "client_id": "flagged"})
        prompt_id = response.json()["prompt_id"]
        events = await flagged.wait_done(prompt_id)
        assert next(e for e in events if e["type"] == "execution_cached")["data"]["nodes"] == ["1"]
        frames = [m for m in flagged.messages if isinstance(m, bytes)]
        assert len(frames) == 2
        length = int.from_bytes(frames[0][4:8], "big")
        metadata = json.loads(frames[0][8 : 8 + length])
        assert frames[0][:4] == b"\x00\x00\x00\x04"
        assert metadata == {"node_id": "2", "prompt_id": prompt_id, "display_node_id": "2", "parent_node_id": None,
                            "real_node_id": "2", "image_type": "image/png"}  # fmt: skip
        assert frames[0][8 + length : 16 + length] == b"\x89PNG\r\n\x1a\n"
        await flagged.close()


async def test_without_client_id_nobody_gets_execution_events() -> None:
    async with comfy() as c:
        other = await Socket.open(c.tg, c.server.url)
        response = await c.http.post("/prompt", json={"prompt": basic(777, "peer_noclient")})
        prompt_id = response.json()["prompt_id"]
        with anyio.fail_after(5):
            while (await c.http.get(f"/history/{prompt_id}")).json() == {}:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        for sock in (c.ws, other):
            assert {m["type"] for m in sock.events()} == {"status", "progress_state"}
        assert (await c.history(prompt_id))["prompt"][3] == {}
        await other.close()


async def test_reconnecting_mid_run_reports_the_running_node_without_prompt_id() -> None:
    async with comfy() as c:
        prompt_id = await c.submit(sleeper(0.6))
        await c.ws.wait_for(lambda ms: any(e["data"].get("node") == "3" for e in c.ws.events(prompt_id)))
        await c.ws.close()
        again = await Socket.open(c.tg, c.server.url, c.client_id)
        first, second = await again.wait_for(lambda ms: ms[:2] if len(ms) >= 2 else None)
        assert first["type"] == "status" and first["data"]["sid"] == c.client_id
        assert second == {"type": "executing", "data": {"node": "3"}}
        await again.wait_done(prompt_id)
        c.ws = again


async def test_uploads_are_renamed_when_the_bytes_differ() -> None:
    async with comfy() as c:
        names = []
        for files, data in MISC_UPLOADS:
            response = await c.http.post("/upload/image", files=files, data=data)
            names.append(response.json() if response.status_code == 200 else response.status_code)
        assert names == [
            {"name": "peer_upload.png", "subfolder": "", "type": "input"},
            {"name": "peer_upload.png", "subfolder": "", "type": "input"},
            {"name": "peer_upload (1).png", "subfolder": "", "type": "input"},
            {"name": "peer_upload.png", "subfolder": "", "type": "input"},
            {"name": "peer_upload.png", "subfolder": "peer_sub", "type": "input"},
            {"name": "peer_upload.png", "subfolder": "", "type": "temp"},
            400,
        ]
        info = (await c.http.get("/api/object_info/LoadImage")).json()
        assert info["LoadImage"]["input"]["required"]["image"][0] == [
            "peer_upload (1).png",
            "peer_upload.png",
        ]
        view = await c.http.get(
            "/view", params={"filename": "peer_upload.png", "subfolder": "peer_sub", "type": "input"}
        )
        assert view.content == _RED and view.headers["content-type"] == "image/png"
        assert (await c.http.get("/view", params={"filename": "../x.png"})).status_code == 400
        assert (await c.http.get("/view", params={"filename": "nope.png"})).status_code == 404


async def test_origin_of_another_host_is_refused() -> None:
    async with comfy() as c:
        elsewhere = {"Origin": "http://evil.example"}
        for method, path in (("GET", "/queue"), ("POST", "/prompt"), ("GET", "/api/system_stats")):
            response = await c.http.request(
                method, path, headers=elsewhere, json={} if method == "POST" else None
            )
            assert (response.status_code, response.content, response.headers.get("content-type")) == (
                403,
                b"",
                None,
            )
        same = {"Origin": c.server.url}
        assert (await c.http.get("/queue", headers=same)).status_code == 200
        with pytest.raises(Exception, match="403"):
            await connect(c.server.url.replace("http", "ws") + "/ws", additional_headers=elsewhere)


async def test_every_route_answers_under_api_too() -> None:
    async with comfy() as c:
        for path in ("/queue", "/prompt", "/history", "/system_stats", "/features", "/embeddings", "/models",
                     "/models/loras", "/object_info/KSampler"):  # fmt: skip
            plain, api = await c.http.get(path), await c.http.get("/api" + path)
            assert plain.status_code == api.status_code == 200
            assert plain.json() == api.json()
        prompt_id = (
            await c.http.post("/api/prompt", json={"prompt": basic(), "client_id": c.client_id})
        ).json()
        await c.ws.wait_done(prompt_id["prompt_id"])
        assert (await c.http.get("/models/nope")).status_code == 404


async def test_api_and_object_info_list_the_installed_models() -> None:
    async with comfy(models={"loras": ["only-this.safetensors"]}, vram_free=1234) as c:
        info = (await c.http.get("/object_info")).json()
        assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == ["only-this.safetensors"]
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "v1-5-pruned-emaonly.safetensors",
            "sd_xl_base_1.0.safetensors",
        ]
        assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == [
            "flux1-dev.safetensors",
            "flux1-schnell.safetensors",
        ]
        assert info["UpscaleModelLoader"]["input"]["required"]["model_name"] == [
            "COMBO",
            {"multiselect": False, "options": ["RealESRGAN_x4plus.pth", "RealESRGAN_x2plus.pth"]},
        ]
        assert (await c.http.get("/models/loras")).json() == ["only-this.safetensors"]
        assert (await c.http.get("/object_info/NoSuchNode")).json() == {}
        assert (await c.http.get("/system_stats")).json()["devices"][0]["vram_free"] == 1234
        c.fake.models["loras"].append("new.safetensors")
        assert (await c.http.get("/models/loras")).json() == ["only-this.safetensors", "new.safetensors"]

        bad = txt2img(loras=(("missing.safetensors", 1.0),))
        bad["3"]["inputs"]["steps"] = 0
        body = (await c.http.post("/prompt", json={"prompt": bad})).json()
        errors = {node: [e["type"] for e in error["errors"]] for node, error in body["node_errors"].items()}
        assert errors == {"20": ["value_not_in_list"], "3": ["value_smaller_than_min"]}
        too_big = txt2img()
        too_big["5"]["inputs"]["width"] = 20000
        body = (await c.http.post("/prompt", json={"prompt": too_big})).json()
        assert body["node_errors"]["5"]["errors"][0]["type"] == "value_bigger_than_max"


async def test_a_loras_folder_is_listed_recursively_and_read_afresh_on_each_request(tmp_path: Path) -> None:
    loras = tmp_path / "models" / "loras"
    (loras / "atelier").mkdir(parents=True)
    (loras / "atelier" / "mara-v1.safetensors").write_bytes(b"x")
    (loras / "atelier" / ".mara-v2.safetensors.77.tmp").write_bytes(b"half")  # being copied in
    (loras / "notes.txt").write_text("not a model")
    async with comfy(models={"loras": ["detail-tweaker.safetensors"]}, loras_dir=loras) as c:

        async def listed() -> tuple[list[str], list[str]]:
            info = (await c.http.get("/object_info")).json()
            return info["LoraLoader"]["input"]["required"]["lora_name"][0], (
                await c.http.get("/api/models/loras")
            ).json()

        assert await listed() == (["atelier/mara-v1.safetensors", "detail-tweaker.safetensors"],) * 2
        (loras / "atelier" / "mara-v2.safetensors").write_bytes(b"y")
        (loras / "atelier" / "mara-v1.safetensors").unlink()
        assert await listed() == (["atelier/mara-v2.safetensors", "detail-tweaker.safetensors"],) * 2
        node = (await c.http.get("/object_info/LoraLoaderModelOnly")).json()
        assert (
            node["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0][0]
            == "atelier/mara-v2.safetensors"
        )
        gone = txt2img(loras=(("atelier/mara-v1.safetensors", 0.8),))
        body = (await c.http.post("/prompt", json={"prompt": gone})).json()
        assert body["node_errors"]["20"]["errors"][0]["type"] == "value_not_in_list"


async def test_a_lora_removed_after_validation_fails_when_its_loader_runs(tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "mara-v1.safetensors").write_bytes(b"x")
    async with comfy(loras_dir=loras) as c:
        busy = await c.submit(sleeper(0.3))
        prompt_id = await c.submit(txt2img(loras=(("mara-v1.safetensors", 0.8),)))  # valid when queued
        (loras / "mara-v1.safetensors").unlink()
        await c.ws.wait_done(busy)
        events = await c.ws.wait_done(prompt_id)
        error = next(e for e in events if e["type"] == "execution_error")["data"]
        assert (error["node_id"], error["node_type"], error["exception_type"]) == (
            "20",
            "LoraLoader",
            "FileNotFoundError",
        )
        assert error["exception_message"] == (
            "Model in folder 'loras' with filename 'mara-v1.safetensors' not found.\n"
        )
        assert (await c.history(prompt_id))["status"]["status_str"] == "error"


# -- the simulated generation -----------------------------------------------------------------


async def test_txt2img_reports_sampler_steps_and_is_deterministic() -> None:
    async with comfy() as c:
        first, events = await c.run(txt2img(seed=1, steps=5))
        progress = [e["data"] for e in events if e["type"] == "progress"]
        assert [(p["value"], p["max"], p["node"]) for p in progress] == [
            (step, 5, "3") for step in range(1, 6)
        ]
        executing = [e["data"]["node"] for e in events if e["type"] == "executing"]
        assert executing[-1] is None and set(executing[:-1]) == {"3", "4", "5", "6", "7", "8", "9"}
        (image,) = await c.output_bytes(first)
        assert _image(image).size == (64, 48)

        _, events = await c.run(txt2img(seed=1, steps=5, prefix="atelier/again"))
        cached = next(e for e in events if e["type"] == "execution_cached")["data"]["nodes"]
        assert set(cached) == {"3", "4", "5", "6", "7", "8"}  # only the file name changed
        again_id = next(e for e in events if e["type"] == "execution_start")["data"]["prompt_id"]
        assert _image((await c.output_bytes(again_id))[0]).tobytes() == _image(image).tobytes()

        pixels = {}
        for variant, graph in {
            "seed": txt2img(seed=2, steps=5),
            "prompt": txt2img(seed=1, steps=5, text="an owl"),
            "lora": txt2img(seed=1, steps=5, loras=(("pixel-art.safetensors", 0.8),)),
        }.items():
            prompt_id, _ = await c.run(graph)
            pixels[variant] = _image((await c.output_bytes(prompt_id))[0]).tobytes()
        assert len({*pixels.values(), _image(image).tobytes()}) == 4


async def test_batches_flux_img2img_and_upscaling_produce_the_right_sizes() -> None:
    async with comfy() as c:
        prompt_id, _ = await c.run(txt2img(batch=3, size=(70, 50)))
        images = [_image(data) for data in await c.output_bytes(prompt_id)]
        assert [image.size for image in images] == [(64, 48)] * 3  # latents are 1/8 of the pixels
        assert len({image.tobytes() for image in images}) == 3

        prompt_id, _ = await c.run(flux())
        (flux_image,) = await c.output_bytes(prompt_id)
        assert _image(flux_image).size == (96, 64)

        c.fake.add_input_file("source.png", _png((10, 200, 10), (40, 24)))
        upscale = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "source.png"}},
            "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
            "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
            "4": {"class_type": "ImageScaleBy", "inputs": {"upscale_method": "lanczos", "scale_by": 0.5, "image": ["3", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "atelier/upscale", "images": ["4", 0]}},
        }  # fmt: skip
        prompt_id, _ = await c.run(upscale)
        assert _image((await c.output_bytes(prompt_id))[0]).size == (80, 48)

        img2img = txt2img(seed=5)
        img2img["10"] = {"class_type": "LoadImage", "inputs": {"image": "source.png"}}
        img2img["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        results = []
        for denoise in (0.3, 0.9):
            img2img["3"]["inputs"]["denoise"] = denoise
            prompt_id, _ = await c.run(img2img)
            results.append(_image((await c.output_bytes(prompt_id))[0]))
        assert results[0].size == (40, 24)
        green = [image.getpixel((20, 12))[1] for image in results]
        assert green[0] > green[1]  # less denoise keeps more of the green source


async def test_front_prompt_runs_next_and_numbers_count_rejections() -> None:
    async with comfy() as c:
        blocker = await c.submit(sleeper(0.2))
        later = await c.submit(basic(1, "later"))
        rejected = await c.http.post("/prompt", json={"prompt": {"1": {"inputs": {}}}})
        assert rejected.status_code == 400
        first = await c.http.post(
            "/prompt", json={"prompt": basic(2, "first"), "client_id": c.client_id, "front": True}
        )
        assert first.json()["number"] == -3
        for prompt_id in (blocker, later, first.json()["prompt_id"]):
            await c.ws.wait_done(prompt_id)
        starts = [e["data"]["prompt_id"] for e in c.ws.events() if e["type"] == "execution_start"]
        assert starts == [blocker, first.json()["prompt_id"], later]


# -- knobs ------------------------------------------------------------------------------------


async def test_fail_next_ends_the_next_prompts_at_the_sampler() -> None:
    async with comfy() as c:
        c.fake.fail_next(2, message="CUDA out of memory")
        for seed in (1, 2):
            prompt_id, events = await c.run(txt2img(seed=seed))
            error = next(e for e in events if e["type"] == "execution_error")["data"]
            assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
            assert (error["exception_message"], error["exception_type"]) == (
                "CUDA out of memory\n",
                "RuntimeError",
            )
            assert isinstance(error["traceback"], list)
            assert (await c.history(prompt_id))["status"]["status_str"] == "error"
        _, events = await c.run(txt2img(seed=3))
        assert events[-2]["type"] == "execution_success"

        c.fake.fail_next()
        _, events = await c.run(basic(42, "nosampler"))
        error = next(e for e in events if e["type"] == "execution_error")["data"]
        assert (error["node_id"], error["node_type"]) == ("1", "EmptyImage")


async def test_reject_next_answers_500_and_still_uses_a_number() -> None:
    async with comfy() as c:
        c.fake.reject_next(2)
        for _ in range(2):
            response = await c.http.post("/prompt", json={"prompt": basic(), "client_id": c.client_id})
            assert response.status_code == 500
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert response.text == "500 Internal Server Error\n\nServer got itself in trouble"
        c.fake.reject_next(1, status=503)
        assert (await c.http.post("/prompt", json={"prompt": basic()})).status_code == 503
        response = await c.http.post("/prompt", json={"prompt": basic(), "client_id": c.client_id})
        assert response.json()["number"] == 3
        await c.ws.wait_done(response.json()["prompt_id"])


async def test_disconnect_websockets_closes_them_and_clients_can_reconnect() -> None:
    async with comfy() as c:
        c.fake.disconnect_websockets()
        with anyio.fail_after(5):
            await c.ws.closed.wait()
        c.ws = await Socket.open(c.tg, c.server.url, c.client_id)
        _, events = await c.run(basic())
        assert events[-1]["data"]["node"] is None


async def test_restart_forgets_queue_history_and_cache() -> None:
    async with comfy() as c:
        done, _ = await c.run(basic())
        running = await c.submit(sleeper(30))
        pending = await c.submit(basic(5))
        await c.ws.wait_for(lambda ms: c.fake.running_prompt_id == running)
        c.fake.restart()
        with anyio.fail_after(5):
            await c.ws.closed.wait()
        assert c.fake.running_prompt_id is None and c.fake.pending_prompt_ids == []
        assert (await c.http.get(f"/history/{done}")).json() == {}
        assert (await c.http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        c.ws = await Socket.open(c.tg, c.server.url, c.client_id)
        response = await c.http.post("/prompt", json={"prompt": basic(), "client_id": c.client_id})
        assert response.json()["number"] == 0
        events = await c.ws.wait_done(response.json()["prompt_id"])
        assert next(e for e in events if e["type"] == "execution_cached")["data"]["nodes"] == []
        assert pending not in json.dumps((await c.http.get("/history")).json())


async def test_stop_refuses_connections_and_start_comes_back_on_the_same_port() -> None:
    async with comfy() as c:
        done, _ = await c.run(basic())
        running = await c.submit(sleeper(0.3, color=9))
        await c.ws.wait_for(lambda ms: c.fake.running_prompt_id == running)
        port = c.server.port
        await c.server.stop()
        with anyio.fail_after(5):
            await c.ws.closed.wait()
        with pytest.raises(httpx.ConnectError):
            await c.http.get("/queue")
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass

        await c.server.start()  # same state: the interrupted prompt runs again
        assert c.server.port == port
        c.ws = await Socket.open(c.tg, c.server.url, c.client_id)
        await c.ws.wait_done(running)
        assert (await c.http.get(f"/history/{done}")).json() != {}

        await c.server.stop()
        await c.server.start(fresh=True)  # a restarted ComfyUI
        assert (await c.http.get("/history")).json() == {}
        c.ws = await Socket.open(c.tg, c.server.url, c.client_id)
        _, events = await c.run(basic())
        assert next(e for e in events if e["type"] == "execution_cached")["data"]["nodes"] == []


async def test_free_memory_drops_the_node_cache() -> None:
    async with comfy() as c:
        await c.run(basic())
        assert (
            await c.http.post("/free", json={"unload_models": True, "free_memory": True})
        ).status_code == 200
        _, events = await c.run(basic())
        assert next(e for e in events if e["type"] == "execution_cached")["data"]["nodes"] == []


def test_standalone_fake_serves_on_the_given_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.comfyui", "--port", str(port), "--prompt-seconds", "0.01"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        stats = None
        for _ in range(200):
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).json()
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        assert stats is not None, process.stdout.read().decode() if process.stdout else ""
        assert stats["system"]["comfyui_version"] == "0.3.64"
    finally:
        process.terminate()
        process.wait(timeout=10)
    rejected = subprocess.run(
        [sys.executable, "-m", "tests.fakes.comfyui", "--host", "0.0.0.0"], cwd=REPO_ROOT, capture_output=True
    )
    assert rejected.returncode != 0


async def test_fail_next_waits_for_a_prompt_that_runs_something() -> None:
    async with comfy() as c:
        await c.run(basic())
        c.fake.fail_next()
        _, events = await c.run(basic())  # all cached: nothing runs, nothing can fail
        assert events[-2]["type"] == "execution_success"
        _, events = await c.run(basic(7))
        assert events[-2]["type"] == "execution_error"
