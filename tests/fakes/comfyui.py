"""A fake ComfyUI 0.3.64 server for tests: the real HTTP and WebSocket protocol over simulated nodes.

`FakeComfyUI` holds the state (queue, history, node cache, files in memory) and exposes `.app`,
a Starlette app whose lifespan runs the single executor. `serve_fake()` runs it under uvicorn
on loopback inside the caller's event loop; `python -m tests.fakes.comfyui` runs a standalone one.

Behaviour follows the recordings in tests/fakes/transcripts (a copy of
../shared/notes/comfyui-transcripts) and the code they
came from (server.py, execution.py, main.py, comfy_execution/): status codes and bodies,
WebSocket event order, node-level caching, validation errors, interrupts, binary previews.
Timing is simulated: an executed prompt costs `prompt_seconds`, spread over the KSampler steps.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import heapq
import io
import ipaddress
import json
import logging
import math
import mimetypes
import posixpath
import socket
import struct
import sys
import time
import traceback
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel
import anyio.to_thread
import uvicorn
from anyio.abc import TaskGroup
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from tests.fakes.comfyui_nodes import NODE_TYPES, Catalogue, NodeResult, NodeType, describe

log = logging.getLogger("tests.fakes.comfyui")

DEFAULT_MODELS: dict[str, list[str]] = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"],
    "diffusion_models": ["flux1-dev.safetensors", "flux1-schnell.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "vae": ["ae.safetensors"],
    "loras": ["detail-tweaker.safetensors", "pixel-art.safetensors"],
    "upscale_models": ["RealESRGAN_x4plus.pth", "RealESRGAN_x2plus.pth"],
}
# GET /models as recorded: folder_paths.folder_names_and_paths in ComfyUI's order.
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "custom_nodes",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]  # fmt: skip
# folder_paths.supported_pt_extensions: the files a model folder lists.
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# aiohttp's body for an unhandled exception, e.g. a POST /prompt whose body is not JSON.
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
# Binary WebSocket events (server.BinaryEventTypes) and image formats.
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
PNG_FORMAT = 2


class RecordedRequest(NamedTuple):
    """An HTTP request the fake received: method, URL path (no query), JSON body or None, and when
    (`time.time()`, the clock of the history's millisecond timestamps)."""

    method: str
    path: str
    json: Any
    at: float = 0.0


class FileStore:
    """The input/, output/ and temp/ folders, in memory: (kind, subfolder, filename) -> bytes."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str, str], bytes] = {}

    @staticmethod
    def folder(subfolder: str) -> str:
        """A subfolder in normal form: "" for the folder itself, no "./" or trailing slash."""
        normalized = posixpath.normpath(subfolder.replace("\\", "/")) if subfolder else "."
        return "" if normalized == "." else normalized

    def read_file(self, kind: str, subfolder: str, filename: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""
        return self._files.get((kind, self.folder(subfolder), filename))

    def list_files(self, kind: str, subfolder: str = "") -> list[str]:
        """The file names directly in a (sub)folder."""
        folder = self.folder(subfolder)
        return [name for (k, sub, name) in self._files if k == kind and sub == folder]

    def write_file(self, kind: str, subfolder: str, filename: str, data: bytes) -> None:
        """Create or replace a file."""
        self._files[(kind, self.folder(subfolder), filename)] = data

    def clear(self, kind: str) -> None:
        """Delete every file of one kind (ComfyUI empties temp/ when it starts)."""
        for key in [key for key in self._files if key[0] == kind]:
            del self._files[key]


@dataclass
class _QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: Any
    outputs: list[str]
    sensitive: dict[str, Any]
    task_id: int = 0

    def as_list(self) -> list[Any]:
        # The sensitive sixth element never leaves the server (GET /queue, /history strip it).
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class _Cached:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


class _Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class _NodeFailure(Exception):
    def __init__(
        self, node_id: str, interrupted: bool = False, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(node_id)
        self.node_id = node_id
        self.interrupted = interrupted
        self.details = details or {}


def _type_name(kind: type) -> str:
    # execution.full_type_name: builtins go by their bare name.
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def _validate_node_input(received_type: Any, input_type: Any) -> bool:
    """comfy_execution.validation.validate_node_input: "*" matches anything, "A,B" any overlap."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {part.strip() for part in received_type.split(",")}
    accepted = {part.strip() for part in input_type.split(",")}
    if "*" in received or "*" in accepted:
        return True
    return bool(received & accepted)


def _input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, str, dict[str, Any]]:
    for category in ("required", "optional"):
        spec = class_inputs.get(category, {}).get(name)
        if spec is not None:
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None, "optional", {}


class _Validator:
    """execution.validate_prompt / validate_inputs, error for error (types, messages, details)."""

    def __init__(self, node_types: Mapping[str, NodeType], catalogue: Catalogue) -> None:
        self.node_types = node_types
        self.catalogue = catalogue

    def validate_prompt(
        self, prompt: Any, partial_targets: Any
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        outputs: list[str] = []
        for node_id in prompt:
            if "class_type" not in prompt[node_id]:
                error = {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because a node is missing the class_type property.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                }
                return False, error, [], {}
            class_type = prompt[node_id]["class_type"]
            node_type = self.node_types.get(class_type)
            if node_type is None:
                error = {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {class_type} does not exist.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                }
                return False, error, [], {}
            if node_type.output_node and (partial_targets is None or node_id in partial_targets):
                outputs.append(node_id)

        if not outputs:
            error = {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }
            return False, error, [], {}

        good_outputs: list[str] = []
        errors: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, Any] = {}
        validated: dict[Any, tuple[bool, list[dict[str, Any]], Any]] = {}
        for output in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(prompt, output, validated)
            except Exception as ex:
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": _type_name(type(ex)),
                            "traceback": traceback.format_tb(ex.__traceback__),
                        },
                    }
                ]
                validated[output] = (False, reasons, output)
            if valid is True:
                good_outputs.append(output)
                continue
            errors.append((output, reasons))
            for node_id, (node_valid, node_reasons, _) in validated.items():
                # Nodes downstream of a failed node fail too but carry no reasons: not reported.
                if node_valid is not True and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": node_reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(output)

        if not good_outputs:
            details = "\n".join(
                f"{reason['message']}: {reason['details']}" for _, reasons in errors for reason in reasons
            )
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            }
            return False, error, [], node_errors
        return True, None, good_outputs, node_errors

    def validate_inputs(
        self, prompt: Any, unique_id: Any, validated: dict[Any, Any]
    ) -> tuple[bool, list[Any], Any]:
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        node_type = self.node_types[prompt[unique_id]["class_type"]]
        class_inputs = node_type.inputs(self.catalogue)
        valid_inputs = list(class_inputs.get("required", {}))
        valid_inputs += [name for name in class_inputs.get("optional", {}) if name not in valid_inputs]
        custom_inputs = node_type.validate_inputs if node_type.validate is not None else ()
        errors: list[dict[str, Any]] = []
        valid = True

        for name in valid_inputs:
            input_type, input_category, extra_info = _input_info(class_inputs, name)
            if name not in inputs:
                if input_category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{name}",
                            "extra_info": {"input_name": name},
                        }
                    )
                continue

            val = inputs[name]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{name}",
                            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self.node_types[o_class_type].return_types[val[1]]
                if not _validate_node_input(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    if self.validate_inputs(prompt, o_id, validated)[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": _type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    # A list widget value comes wrapped as {"__value__": [...]} (a bare list is a link).
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[name] = val
                    # The converted value is stored back: the queued prompt shows `30.0` for FLOAT 30.
                    if input_type == "INT":
                        val = int(val)
                        inputs[name] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[name] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[name] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[name] = val
                except Exception as ex:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{name}, {val}, {ex}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue

                if name not in custom_inputs:
                    if "min" in extra_info and val < extra_info["min"]:
                        errors.append(
                            {
                                "type": "value_smaller_than_min",
                                "message": f"Value {val} smaller than min of {extra_info['min']}",
                                "details": f"{name}",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "received_value": val,
                                },
                            }
                        )
                        continue
                    if "max" in extra_info and val > extra_info["max"]:
                        errors.append(
                            {
                                "type": "value_bigger_than_max",
                                "message": f"Value {val} bigger than max of {extra_info['max']}",
                                "details": f"{name}",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "received_value": val,
                                },
                            }
                        )
                        continue
                    if isinstance(input_type, list) or input_type == "COMBO":
                        options = (
                            input_type if isinstance(input_type, list) else extra_info.get("options", [])
                        )
                        if val not in options:
                            # Long lists (model files) are not echoed back.
                            too_long = len(options) > 20
                            errors.append(
                                {
                                    "type": "value_not_in_list",
                                    "message": "Value not in list",
                                    "details": f"{name}: '{val}' not in "
                                    + (f"(list of length {len(options)})" if too_long else str(options)),
                                    "extra_info": {
                                        "input_name": name,
                                        "input_config": None if too_long else info,
                                        "received_value": val,
                                    },
                                }
                            )
                            continue

        if node_type.validate is not None and custom_inputs:
            given = {name: inputs[name] for name in custom_inputs if name in inputs}
            result = node_type.validate(self.catalogue.files, **given)
            if result is not True:
                for name in given:
                    details = f"{name}" if result is False else f"{name} - {result}"
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": name},
                        }
                    )

        outcome = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        validated[unique_id] = outcome
        return outcome


class _ExecutionList:
    """comfy_execution.graph.ExecutionList: what still has to run, and which node goes next."""

    def __init__(
        self, prompt: dict[str, Any], node_types: Mapping[str, NodeType], is_cached: Callable[[str], bool]
    ):
        self.prompt = prompt
        self.node_types = node_types
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[Any, bool]]] = {}

    def add_node(self, unique_id: str) -> None:
        stack = [unique_id]
        links: list[tuple[str, Any, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = {}
            for value in self.prompt[node_id]["inputs"].values():
                if _is_link(value):
                    from_id, socket_index = value
                    if not self.is_cached(from_id):
                        stack.append(from_id)
                    links.append((from_id, socket_index, node_id))
        for from_id, socket_index, to_id in links:
            if not self.is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self.blocking[from_id]:
                    self.blocking[from_id][to_id] = {}
                    self.block_count[to_id] += 1
                self.blocking[from_id][to_id][socket_index] = True

    def is_empty(self) -> bool:
        return not self.pending

    def _is_output(self, node_id: str) -> bool:
        return self.node_types[self.prompt[node_id]["class_type"]].output_node

    def stage(self) -> str | None:
        """The next node to run (None: a dependency cycle), chosen like ux_friendly_pick_node."""
        available = [node_id for node_id in self.pending if self.block_count[node_id] == 0]
        if not available:
            return None
        for node_id in available:
            if self._is_output(node_id) or self.node_types[self.prompt[node_id]["class_type"]].is_async:
                return node_id
        for node_id in available:
            if any(self._is_output(blocked) for blocked in self.blocking[node_id]):
                return node_id
        for node_id in available:
            for blocked in self.blocking[node_id]:
                if any(self._is_output(after) for after in self.blocking[blocked]):
                    return node_id
        return available[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


class _Socket:
    """One /ws connection: messages queue here and `pump` writes them in order."""

    def __init__(self, websocket: WebSocket, sid: str) -> None:
        self.websocket = websocket
        self.sid = sid
        self.feature_flags: dict[str, Any] = {}
        self._outbox, self._inbox = anyio.create_memory_object_stream[str | bytes | int](math.inf)

    def put(self, message: str | bytes | int) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._outbox.send_nowait(message)

    def put_json(self, event: str, data: Any) -> None:
        self.put(json.dumps({"type": event, "data": data}))

    def close(self, code: int) -> None:
        """Close the connection once what is already queued has been sent."""
        self.put(code)

    async def pump(self) -> None:
        async with self._inbox:
            async for message in self._inbox:
                if isinstance(message, int):
                    await self.websocket.close(code=message)
                    return
                if isinstance(message, bytes):
                    await self.websocket.send_bytes(message)
                else:
                    await self.websocket.send_text(message)


@dataclass
class _PromptRun:
    """One prompt being executed."""

    item: _QueueItem
    client_id: str | None
    signatures: dict[str, str]
    samplers: list[str]
    fail_message: str | None
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    started_any: bool = False
    # Simulated GPU time runs on this clock, started with the prompt: each piece of work ends
    # at clock + seconds, so sleep overshoot and the fake's own Python work (drawing, PNG
    # encoding) do not add up, and a prompt costs `prompt_seconds` of wall time, not more.
    clock: float = field(default_factory=time.monotonic)

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    @property
    def prompt(self) -> dict[str, Any]:
        return self.item.prompt


class _NodeRun:
    """The NodeContext a running node gets (see comfyui_nodes.NodeContext)."""

    def __init__(self, fake: FakeComfyUI, run: _PromptRun, node_id: str, sampler_seconds: float) -> None:
        self._fake = fake
        self._run = run
        self.prompt_id = run.prompt_id
        self.node_id = node_id
        self.prompt = run.prompt
        extra = run.item.extra_data
        self.extra_pnginfo = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
        self.sampler_seconds = sampler_seconds

    def read_file(self, kind: str, subfolder: str, filename: str) -> bytes | None:
        return self._fake.files.read_file(kind, subfolder, filename)

    def list_files(self, kind: str, subfolder: str = "") -> list[str]:
        return self._fake.files.list_files(kind, subfolder)

    def write_file(self, kind: str, subfolder: str, filename: str, data: bytes) -> None:
        self._fake.files.write_file(kind, subfolder, filename, data)

    def model_files(self, folder: str) -> list[str]:
        return list(self._fake.installed_models().get(folder, []))

    async def progress(self, value: float, total: float, preview: Image.Image | None = None) -> None:
        await self._fake._progress(self._run, self.node_id, value, total, preview)

    async def work(self, seconds: float) -> None:
        await self._fake._work(seconds, self._run)


def _model_files(folder: Path) -> list[str]:
    """folder_paths.recursive_search + filter_files_extensions: model files under `folder`, as
    `sub/name.ext` paths; a file being written under a temporary name (`.x.tmp`) is not one."""
    if not folder.is_dir():
        return []
    return [
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix.lower() in MODEL_EXTENSIONS and path.is_file()
    ]


def _png_preview(image: Image.Image) -> bytes:
    # server.send_image saves PNG previews with compress_level=1.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _converted(data: bytes, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view?preview=webp;50 or ?channel=rgb|a: the image re-encoded, and its content type."""
    with Image.open(io.BytesIO(data)) as opened:
        if preview is not None:
            parts = preview.split(";")
            image_format = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            picture = opened.convert("RGB") if image_format == "jpeg" or channel == "rgb" else opened.copy()
            buffer = io.BytesIO()
            picture.save(buffer, format=image_format, quality=quality)
            return buffer.getvalue(), f"image/{image_format}"
        if channel == "rgb":
            picture = opened.convert("RGB")
        else:
            rgba = opened.convert("RGBA")
            picture = Image.new("RGBA", rgba.size)
            picture.putalpha(rgba.getchannel("A"))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _json(data: Any, status: int = 200) -> Response:
    # aiohttp's json_response: json.dumps with default separators, and this content type.
    return Response(
        json.dumps(data).encode(), status_code=status, headers={"content-type": JSON_CONTENT_TYPE}
    )


def _empty(status: int = 200) -> Response:
    return Response(status_code=status)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # ComfyUI resolves names; "localhost" is the only one a loopback-only fake meets.
        return host == "localhost" or host.endswith(".localhost")


def _origin_mismatch(host: str, origin: str) -> bool:
    """server.create_origin_only_middleware: a loopback Host and an Origin naming another host."""
    host_domain: str | None = host.lower()
    parsed = urllib.parse.urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + (host_domain or ""))
    loopback = _is_loopback(host_parsed.hostname)
    try:
        if parsed.port is None:
            host_domain = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
    except ValueError:
        return False
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


class _OriginCheck:
    """A request whose Origin host differs from its loopback Host gets a bare 403, as in ComfyUI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            if (
                "host" in headers
                and "origin" in headers
                and _origin_mismatch(headers["host"], headers["origin"])
            ):
                if scope["type"] == "http":
                    await _empty(403)(scope, receive, send)
                else:
                    await receive()  # websocket.connect; closing before accept makes uvicorn answer 403
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("404: Not Found", status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("405: Method Not Allowed", status_code=405)


class FakeComfyUI:
    """A ComfyUI server's state and its Starlette app (`.app`); knobs are plain attributes and methods.

    Knobs:
      prompt_seconds     simulated GPU time of each executed prompt (spread over KSampler steps,
                         else spent on the first node that runs); cached prompts cost nothing.
      models             installed model files by folder (what the COMBO inputs and /models list).
      loras_dir          a real folder read as models/loras too (recursively, `sub/name.safetensors`),
                         re-read on every listing, as ComfyUI re-lists a folder whose mtime changed;
                         a LoraLoader whose file is gone by the time it runs fails as ComfyUI's does.
      vram_total, vram_free, ram_total, ram_free   what /system_stats reports.
      fail_next(), reject_next(), disconnect_websockets(), restart(), interrupt()
      requests           every HTTP request received, as RecordedRequest(method, path, json).
      pending_prompt_ids, running_prompt_id, history, files   snapshots of the state.
    """

    def __init__(
        self,
        models: Mapping[str, Sequence[str]] | None = None,
        prompt_seconds: float = 0.05,
        vram_total: int = 25_757_220_864,
        vram_free: int = 24_138_022_912,
        ram_total: int = 68_719_476_736,
        ram_free: int = 61_203_283_968,
        device_name: str = "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
        loras_dir: Path | None = None,
    ) -> None:
        """`models` overrides DEFAULT_MODELS folder by folder; `loras_dir` adds a folder of LoRA files."""
        self.models: dict[str, list[str]] = {folder: list(files) for folder, files in DEFAULT_MODELS.items()}
        for folder, files in (models or {}).items():
            self.models[folder] = list(files)
        self.loras_dir = loras_dir
        self.prompt_seconds = prompt_seconds
        self.vram_total = vram_total
        self.vram_free = vram_free
        self.ram_total = ram_total
        self.ram_free = ram_free
        self.device_name = device_name
        self.node_types: dict[str, NodeType] = dict(NODE_TYPES)
        self.files = FileStore()
        self.requests: list[RecordedRequest] = []

        self._number = 0
        self._queue: list[tuple[int | float, str, int, _QueueItem]] = []  # a heap, listed in heap order
        self._sequence = 0
        self._running: dict[int, _QueueItem] = {}
        self._task_counter = 0
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, _Cached] = {}
        self._free_memory_pending = False
        self._fail_remaining = 0
        self._fail_message = ""
        self._reject_remaining = 0
        self._reject_status = 500

        self._sockets: dict[str, _Socket] = {}
        self._connections: set[_Socket] = set()
        self._client_id: str | None = None
        self._last_node_id: str | None = None
        self._interrupted = False
        self._interrupt_event: anyio.Event | None = None
        self._wakeup: anyio.Event | None = None
        self._exec_scope: anyio.CancelScope | None = None
        self._executor_running = False
        self._generation = 0
        self.app = self._build_app()

    # -- knobs ------------------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, message: str = "Simulated failure: CUDA error: an illegal memory access"
    ) -> None:
        """Make the next `n` executed prompts end in execution_error (RuntimeError at the sampler or first node)."""
        self._fail_remaining = n
        self._fail_message = message

    def reject_next(self, n: int = 1, status: int = 500) -> None:
        """Make the next `n` POST /prompt answer a plain-text error (they still consume a queue number)."""
        self._reject_remaining = n
        self._reject_status = status

    def disconnect_websockets(self, code: int = 1001) -> None:
        """Close every open /ws connection; clients have to reconnect."""
        for sock in list(self._connections):
            sock.close(code)

    def interrupt(self) -> None:
        """Interrupt whatever runs now (POST /interrupt without a body)."""
        self._interrupted = True
        if self._interrupt_event is not None:
            self._interrupt_event.set()

    def restart(self) -> None:
        """Behave like a restarted ComfyUI process: queue, running prompt, history, cache and temp/ are gone,
        queue numbers start at 0 again and every WebSocket is closed. Input and output files stay."""
        self._generation += 1
        if self._exec_scope is not None:
            self._exec_scope.cancel()
        self._queue.clear()
        self._running.clear()
        self._history.clear()
        self._cache.clear()
        self._number = 0
        self._client_id = None
        self._last_node_id = None
        self._interrupted = False
        self._free_memory_pending = False
        self.files.clear("temp")
        self.disconnect_websockets(code=1012)

    @property
    def pending_prompt_ids(self) -> list[str]:
        """Queued prompt ids in the order they will run."""
        return [entry[3].prompt_id for entry in sorted(self._queue)]

    @property
    def running_prompt_id(self) -> str | None:
        """The prompt being executed, if any."""
        return next((item.prompt_id for item in self._running.values()), None)

    @property
    def history(self) -> dict[str, dict[str, Any]]:
        """A copy of GET /history."""
        return copy.deepcopy(self._history)

    def requests_to(self, method: str, path: str) -> list[Any]:
        """The JSON bodies of the requests made to `path`, with or without the /api prefix."""
        return [
            request.json
            for request in self.requests
            if request.method == method and request.path.removeprefix("/api") == path
        ]

    def add_input_file(self, filename: str, data: bytes, subfolder: str = "") -> None:
        """Put a file in input/ as if it had been uploaded."""
        self.files.write_file("input", subfolder, filename, data)

    def installed_models(self) -> dict[str, list[str]]:
        """The model files by folder as listed now: `models`, with `loras_dir`'s files read afresh."""
        if self.loras_dir is None:
            return self.models
        # Like folder_paths.get_filename_list over two folders: one sorted list of both.
        loras = set(self.models.get("loras", [])) | set(_model_files(self.loras_dir))
        return {**self.models, "loras": sorted(loras)}

    @asynccontextmanager
    async def executor(self) -> AsyncIterator[None]:
        """Run the prompt executor for the duration of the block (the app's lifespan does this)."""
        if self._executor_running:
            raise RuntimeError("this FakeComfyUI's executor is already running")
        self._executor_running = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_executor)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._executor_running = False

    # -- messaging --------------------------------------------------------------------------------

    def _send(self, event: str, data: Any, sid: str | None) -> None:
        """server.send_sync: to one client, or to everyone when sid is None."""
        message = json.dumps({"type": event, "data": data})
        if sid is None:
            for sock in list(self._sockets.values()):
                sock.put(message)
        elif sid in self._sockets:
            self._sockets[sid].put(message)

    def _send_bytes(self, event: int, payload: bytes, sid: str | None) -> None:
        message = struct.pack(">I", event) + payload
        if sid is None:
            for sock in list(self._sockets.values()):
                sock.put(message)
        elif sid in self._sockets:
            self._sockets[sid].put(message)

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self._queue) + len(self._running)}}

    def _queue_updated(self) -> None:
        self._send("status", {"status": self._queue_info()}, None)

    def _add_message(self, run: _PromptRun, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self._send(event, data, run.client_id)

    def _send_progress_state(self, run: _PromptRun) -> None:
        nodes = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": run.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in run.progress.items()
            if entry["state"] != "pending"
        }
        self._send("progress_state", {"prompt_id": run.prompt_id, "nodes": nodes}, run.client_id)

    def _progress_entry(self, run: _PromptRun, node_id: str) -> dict[str, Any]:
        # ProgressRegistry.ensure_entry: a node never started finishes as 1/1 (ints).
        return run.progress.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _start_progress(self, run: _PromptRun, node_id: str) -> None:
        self._progress_entry(run, node_id).update(state="running", value=0.0, max=1.0)
        self._send_progress_state(run)

    def _finish_progress(self, run: _PromptRun, node_id: str) -> None:
        entry = self._progress_entry(run, node_id)
        entry.update(state="finished", value=entry["max"])
        self._send_progress_state(run)

    async def _progress(
        self, run: _PromptRun, node_id: str, value: float, total: float, preview: Image.Image | None
    ) -> None:
        """main.hijack_progress: stop if interrupted, then progress_state, previews and `progress`."""
        self._check_interrupt()
        value = min(value, total)
        self._progress_entry(run, node_id).update(state="running", value=value, max=total)
        self._send_progress_state(run)
        sock = self._sockets.get(run.client_id) if run.client_id is not None else None
        with_metadata = (
            preview is not None
            and sock is not None
            and bool(sock.feature_flags.get("supports_preview_metadata"))
        )
        image = b"" if preview is None else await anyio.to_thread.run_sync(_png_preview, preview)
        if with_metadata:
            metadata = json.dumps(
                {
                    "node_id": node_id,
                    "prompt_id": run.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/png",
                }
            ).encode()
            payload = struct.pack(">I", len(metadata)) + metadata + image
            self._send_bytes(PREVIEW_IMAGE_WITH_METADATA, payload, run.client_id)
        self._send(
            "progress",
            {"value": value, "max": total, "prompt_id": run.prompt_id, "node": node_id},
            run.client_id,
        )
        if preview is not None and not with_metadata:
            self._send_bytes(PREVIEW_IMAGE, struct.pack(">I", PNG_FORMAT) + image, run.client_id)
        await anyio.lowlevel.checkpoint()

    def _check_interrupt(self) -> None:
        if self._interrupted:
            self._interrupted = False
            raise _Interrupted("Processing interrupted")

    async def _work(self, seconds: float, run: _PromptRun) -> None:
        """Simulated GPU time on the prompt's clock; an interrupt ends it at once."""
        self._check_interrupt()
        run.clock += max(seconds, 0.0)
        if seconds > 0 and self._interrupt_event is not None:
            with anyio.move_on_after(run.clock - time.monotonic()):
                await self._interrupt_event.wait()
        else:
            await anyio.lowlevel.checkpoint()
        self._check_interrupt()

    # -- the queue and the executor ---------------------------------------------------------------

    def _put(self, item: _QueueItem) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (item.number, item.prompt_id, self._sequence, item))
        self._queue_updated()
        if self._wakeup is not None:
            self._wakeup.set()

    async def _get(self) -> _QueueItem:
        while not self._queue:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        item = heapq.heappop(self._queue)[3]
        self._task_counter += 1
        item.task_id = self._task_counter
        self._running[item.task_id] = item
        self._queue_updated()
        return item

    async def _run_executor(self) -> None:
        while True:
            if self._free_memory_pending and not self._running:
                self._free_memory_pending = False
                self._cache.clear()
            item = await self._get()
            generation = self._generation
            try:
                with anyio.CancelScope() as scope:
                    self._exec_scope = scope
                    await self._execute(item)
            except anyio.get_cancelled_exc_class():
                # The server stopped under it (not a restart): the prompt waits to run again.
                if generation == self._generation and self._running.pop(item.task_id, None) is not None:
                    self._sequence += 1
                    heapq.heappush(self._queue, (item.number, item.prompt_id, self._sequence, item))
                raise
            finally:
                self._exec_scope = None

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """Cache keys: class, IS_CHANGED and inputs, with links replaced by the upstream node's key."""
        signatures: dict[str, str] = {}

        def signature(node_id: str, visiting: frozenset[str]) -> str:
            if node_id in signatures:
                return signatures[node_id]
            node = prompt.get(node_id)
            if node_id in visiting or not isinstance(node, dict):
                return f"unresolved:{node_id}"
            inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
            parts = []
            for name in sorted(inputs):
                value = inputs[name]
                if _is_link(value) and value[0] in prompt:
                    parts.append([name, "link", signature(value[0], visiting | {node_id}), value[1]])
                else:
                    parts.append([name, value])
            node_type = self.node_types.get(node.get("class_type"))
            changed = None
            if node_type is not None and node_type.fingerprint is not None:
                constants = {name: value for name, value in inputs.items() if not _is_link(value)}
                changed = node_type.fingerprint(self.files, **constants)
            material = json.dumps([node.get("class_type"), changed, parts], sort_keys=True, default=str)
            signatures[node_id] = hashlib.sha256(material.encode()).hexdigest()
            return signatures[node_id]

        for node_id in prompt:
            signature(node_id, frozenset())
        return signatures

    async def _execute(self, item: _QueueItem) -> None:
        """execution.PromptExecutor.execute_async plus the prompt worker's task_done."""
        self._interrupted = False
        self._interrupt_event = anyio.Event()
        extra = item.extra_data
        client_id = extra.get("client_id") if isinstance(extra, dict) else None
        self._client_id = client_id
        prompt = item.prompt
        signatures = self._signatures(prompt)
        run = _PromptRun(item, client_id, signatures, [], None)
        self._add_message(run, "execution_start", {"prompt_id": item.prompt_id}, broadcast=False)

        live = set(signatures.values())
        for key in [key for key in self._cache if key not in live]:
            del self._cache[key]
        cached_nodes = [node_id for node_id in prompt if signatures[node_id] in self._cache]
        self._add_message(
            run, "execution_cached", {"nodes": cached_nodes, "prompt_id": item.prompt_id}, broadcast=False
        )

        plan = _ExecutionList(prompt, self.node_types, lambda node_id: signatures.get(node_id) in self._cache)
        for output in item.outputs:
            plan.add_node(output)
        # An output node that is cached stays in the plan but only replays its result: it does not run.
        to_run = [node_id for node_id in plan.pending if signatures[node_id] not in self._cache]
        run.samplers = [node_id for node_id in to_run if prompt[node_id]["class_type"] == "KSampler"]
        if to_run and self._fail_remaining > 0:
            self._fail_remaining -= 1
            run.fail_message = self._fail_message

        failure: _NodeFailure | None = None
        while not plan.is_empty():
            node_id = plan.stage()
            if node_id is None:
                blamed = next(iter(plan.pending))
                failure = _NodeFailure(
                    blamed,
                    details={
                        "exception_message": "Dependency cycle detected",
                        "exception_type": "graph.DependencyCycleError",
                        "traceback": [],
                        "current_inputs": [],
                    },
                )
                break
            try:
                await self._execute_node(run, node_id)
            except _NodeFailure as error:
                failure = error
                break
            plan.complete(node_id)

        if failure is None:
            self._add_message(run, "execution_success", {"prompt_id": item.prompt_id}, broadcast=False)
        elif failure.interrupted:
            self._add_message(
                run,
                "execution_interrupted",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": failure.node_id,
                    "node_type": prompt[failure.node_id]["class_type"],
                    "executed": list(run.executed),
                },
                broadcast=True,
            )
        else:
            self._add_message(
                run,
                "execution_error",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": failure.node_id,
                    "node_type": prompt[failure.node_id]["class_type"],
                    "executed": list(run.executed),
                    **failure.details,
                    "current_outputs": list(prompt),
                },
                broadcast=False,
            )
        history_result = {
            "outputs": {node_id: ui["output"] for node_id, ui in run.ui_outputs.items()},
            "meta": {node_id: ui["meta"] for node_id, ui in run.ui_outputs.items()},
        }
        self._last_node_id = None
        # History is written in the same step as execution_success is queued: a client that reads
        # /history/{id} on that event never sees {} (the recordings' history_race check).
        self._task_done(item, history_result, success=failure is None, messages=run.messages)
        if client_id is not None:
            self._send("executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def _task_done(
        self, item: _QueueItem, result: dict[str, Any], success: bool, messages: list[Any]
    ) -> None:
        if self._running.pop(item.task_id, None) is None:
            return
        if len(self._history) > MAXIMUM_HISTORY_SIZE:
            self._history.pop(next(iter(self._history)))
        self._history[item.prompt_id] = {
            "prompt": copy.deepcopy(item.as_list()),
            "outputs": {},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": copy.deepcopy(messages),
            },
            **copy.deepcopy(result),
        }
        self._queue_updated()

    def _input_value(self, run: _PromptRun, value: Any) -> Any:
        if not _is_link(value):
            return value
        from_id, socket_index = value
        outputs = run.outputs.get(from_id)
        if outputs is None:
            outputs = self._cache[run.signatures[from_id]].outputs
        return outputs[int(socket_index)]

    async def _execute_node(self, run: _PromptRun, node_id: str) -> None:
        """execution.execute for one node: cached replay, or run it with its messages."""
        node = run.prompt[node_id]
        node_type = self.node_types[node["class_type"]]
        key = run.signatures[node_id]
        cached = self._cache.get(key)
        if cached is not None:
            if run.client_id is not None:
                output = cached.ui.get("output") if cached.ui else None
                data = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": output,
                    "prompt_id": run.prompt_id,
                }
                self._send("executed", data, run.client_id)
            if cached.ui is not None:
                run.ui_outputs[node_id] = cached.ui
            self._finish_progress(run, node_id)
            return

        self._start_progress(run, node_id)
        if run.client_id is not None:
            self._last_node_id = node_id
            data = {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}
            self._send("executing", data, run.client_id)

        first = not run.started_any
        run.started_any = True
        sampler_seconds = self.prompt_seconds / len(run.samplers) if run.samplers else 0.0
        fails_here = run.fail_message is not None and (
            node_type.name == "KSampler" if run.samplers else first
        )
        class_inputs = node_type.inputs(self._catalogue())
        declared = [*class_inputs.get("required", {}), *class_inputs.get("optional", {})]
        inputs: dict[str, Any] = {}
        try:
            for name in declared:
                if name in node["inputs"]:
                    inputs[name] = self._input_value(run, node["inputs"][name])
            self._check_interrupt()  # nodes.before_node_execution
            if fails_here:
                message, run.fail_message = run.fail_message, None
                raise RuntimeError(message)
            if first and not run.samplers:
                await self._work(self.prompt_seconds, run)
            context = _NodeRun(self, run, node_id, sampler_seconds)
            result: NodeResult = await node_type.run(context, **inputs)
        except _Interrupted as ex:
            raise _NodeFailure(node_id, interrupted=True) from ex
        except Exception as ex:
            details = {
                "exception_message": f"{ex}\n",
                "exception_type": _type_name(type(ex)),
                "traceback": traceback.format_tb(ex.__traceback__),
                "current_inputs": {name: [describe(value)] for name, value in inputs.items()},
            }
            raise _NodeFailure(node_id, details=details) from ex

        ui = None
        if result.ui:
            meta = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            ui = {"meta": meta, "output": result.ui}
            run.ui_outputs[node_id] = ui
            if run.client_id is not None:
                data = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": result.ui,
                    "prompt_id": run.prompt_id,
                }
                self._send("executed", data, run.client_id)
        self._cache[key] = _Cached(result.outputs, ui)
        run.outputs[node_id] = result.outputs
        self._finish_progress(run, node_id)
        run.executed.append(node_id)

    # -- HTTP -------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        http_routes: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            ("/embeddings", "GET", self._get_embeddings),
            ("/models", "GET", self._get_model_folders),
            ("/models/{folder}", "GET", self._get_models),
            ("/upload/image", "POST", self._upload_image),
            ("/view", "GET", self._view),
            ("/system_stats", "GET", self._system_stats),
            ("/features", "GET", self._features),
            ("/prompt", "GET", self._get_prompt),
            ("/prompt", "POST", self._post_prompt),
            ("/object_info", "GET", self._object_info),
            ("/object_info/{node_class}", "GET", self._object_info_node),
            ("/history", "GET", self._get_history),
            ("/history/{prompt_id}", "GET", self._get_history_item),
            ("/history", "POST", self._post_history),
            ("/queue", "GET", self._get_queue),
            ("/queue", "POST", self._post_queue),
            ("/interrupt", "POST", self._post_interrupt),
            ("/free", "POST", self._post_free),
        ]
        routes: list[Route | WebSocketRoute] = []
        # ComfyUI serves every route twice: as is and under /api.
        for prefix in ("", "/api"):
            routes.append(WebSocketRoute(f"{prefix}/ws", self._websocket))
            routes += [
                Route(prefix + path, self._endpoint(h), methods=[method]) for path, method, h in http_routes
            ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(_OriginCheck)],
            lifespan=self._lifespan,
            exception_handlers={404: _not_found, 405: _not_allowed},
        )
        app.router.redirect_slashes = False  # aiohttp does not redirect "/prompt/" to "/prompt"
        return app

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.executor():
            yield

    def _endpoint(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.requests.append(
                RecordedRequest(request.method, request.url.path, _json_or_none(body), time.time())
            )
            try:
                return await handler(request)
            except Exception as ex:
                # Expected for malformed bodies (the real server answers those with a 500 too).
                log.info("fake ComfyUI: %s %s -> 500 (%r)", request.method, request.url.path, ex)
                log.debug("fake ComfyUI: handler traceback", exc_info=True)
                return PlainTextResponse(INTERNAL_ERROR_TEXT, status_code=500)

        return endpoint

    def _catalogue(self) -> Catalogue:
        return Catalogue(self.installed_models(), self.files)

    async def _get_embeddings(self, request: Request) -> Response:
        return _json([])

    async def _get_model_folders(self, request: Request) -> Response:
        return _json(MODEL_FOLDERS)

    async def _get_models(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        models = self.installed_models()
        if folder not in MODEL_FOLDERS and folder not in models:
            return _empty(404)
        return _json(list(models.get(folder, [])))

    async def _system_stats(self, request: Request) -> Response:
        return _json(
            {
                "system": {
                    "os": "posix",
                    "ram_total": self.ram_total,
                    "ram_free": self.ram_free,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", "127.0.0.1"],
                },
                "devices": [
                    {
                        "name": self.device_name,
                        "type": "cuda",
                        "index": 0,
                        "vram_total": self.vram_total,
                        "vram_free": self.vram_free,
                        "torch_vram_total": max(0, self.vram_total - self.vram_free),
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    async def _features(self, request: Request) -> Response:
        return _json(SERVER_FEATURES)

    async def _get_prompt(self, request: Request) -> Response:
        return _json(self._queue_info())

    async def _post_prompt(self, request: Request) -> Response:
        if self._reject_remaining > 0:
            self._reject_remaining -= 1
            self._number += 1
            status = self._reject_status
            if status == 500:
                return PlainTextResponse(INTERNAL_ERROR_TEXT, status_code=500)
            return PlainTextResponse(f"{status}: {_reason(status)}", status_code=status)
        json_data = json.loads(await request.body())
        if "number" in json_data:
            number: int | float = float(json_data["number"])
        else:
            number = self._number
            if "front" in json_data and json_data["front"]:  # noqa: RUF019 - any JSON container, as server.py
                number = -number
            self._number += 1

        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return _json({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial_targets = json_data.get("partial_execution_targets")
        valid, error, outputs, node_errors = _Validator(self.node_types, self._catalogue()).validate_prompt(
            prompt, partial_targets
        )
        extra_data: Any = json_data["extra_data"] if "extra_data" in json_data else {}  # noqa: SIM401
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            return _json({"error": error, "node_errors": node_errors}, status=400)
        sensitive = {}
        if isinstance(extra_data, dict):
            sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        self._put(_QueueItem(number, prompt_id, prompt, extra_data, outputs, sensitive))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def _object_info(self, request: Request) -> Response:
        catalogue = self._catalogue()
        return _json({name: node_type.info(catalogue) for name, node_type in self.node_types.items()})

    async def _object_info_node(self, request: Request) -> Response:
        name = request.path_params["node_class"]
        node_type = self.node_types.get(name)
        return _json({} if node_type is None else {name: node_type.info(self._catalogue())})

    async def _get_history(self, request: Request) -> Response:
        max_items = int(request.query_params["max_items"]) if "max_items" in request.query_params else None
        offset = int(request.query_params.get("offset", -1))
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        out = {}
        for index, prompt_id in enumerate(self._history):
            if index >= offset:
                out[prompt_id] = self._history[prompt_id]
                if max_items is not None and len(out) >= max_items:
                    break
        return _json(out)

    async def _get_history_item(self, request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        entry = self._history.get(prompt_id)
        return _json({} if entry is None else {prompt_id: entry})

    async def _post_history(self, request: Request) -> Response:
        json_data = json.loads(await request.body())
        if json_data.get("clear"):
            self._history.clear()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._history.pop(prompt_id, None)
        return _empty()

    async def _get_queue(self, request: Request) -> Response:
        return _json(
            {
                "queue_running": [item.as_list() for item in self._running.values()],
                "queue_pending": [entry[3].as_list() for entry in self._queue],
            }
        )

    async def _post_queue(self, request: Request) -> Response:
        json_data = json.loads(await request.body())
        if json_data.get("clear"):
            self._wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                for index, entry in enumerate(self._queue):
                    if entry[3].prompt_id == prompt_id:
                        # PromptQueue.delete_queue_item: wiping the last one reports the status twice.
                        if len(self._queue) == 1:
                            self._wipe_queue()
                        else:
                            self._queue.pop(index)
                            heapq.heapify(self._queue)
                        self._queue_updated()
                        break
        return _empty()

    def _wipe_queue(self) -> None:
        self._queue.clear()
        self._queue_updated()

    async def _post_interrupt(self, request: Request) -> Response:
        try:
            json_data = json.loads(await request.body())
        except ValueError:
            json_data = {}
        prompt_id = json_data.get("prompt_id") if isinstance(json_data, dict) else None
        if prompt_id:
            # Only the prompt running now; a pending one is left alone.
            if any(item.prompt_id == prompt_id for item in self._running.values()):
                self.interrupt()
        else:
            self.interrupt()
        return _empty()

    async def _post_free(self, request: Request) -> Response:
        json_data = json.loads(await request.body())
        if json_data.get("free_memory", False):
            # The worker drops its caches between prompts (PromptExecutor.reset()).
            if self._running:
                self._free_memory_pending = True
            else:
                self._cache.clear()
        return _empty()

    async def _upload_image(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        overwrite = form.get("overwrite")
        upload_type = form.get("type")
        if upload_type is None:
            upload_type = "input"
        if upload_type not in ("input", "temp", "output"):
            # get_dir_by_type leaves its folder unbound for other types: the real server answers 500.
            raise ValueError(f"unknown upload type {upload_type!r}")
        if not isinstance(image, UploadFile):
            return _empty(400)
        filename = image.filename or ""
        if not filename:
            return _empty(400)
        subfolder = str(form.get("subfolder", ""))
        normalized = posixpath.normpath(posixpath.join("root", self.files.folder(subfolder), filename))
        if not normalized.startswith("root/") or "/" in filename:
            return _empty(400)
        data = await image.read()
        base, extension = posixpath.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            counter = 1
            while (existing := self.files.read_file(upload_type, subfolder, filename)) is not None:
                # Same name and same bytes: the upload is the file already there.
                if hashlib.sha256(existing).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{base} ({counter}){extension}"
                counter += 1
        if not duplicate:
            self.files.write_file(upload_type, subfolder, filename, data)
        return _json({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def _view(self, request: Request) -> Response:
        query = request.query_params
        if "filename" not in query:
            return _empty(404)
        name = query["filename"]
        kind: str | None = None
        for suffix in ("output", "input", "temp"):
            if name.endswith(f"[{suffix}]"):
                kind, name = suffix, name[: -(len(suffix) + 3)]
                break
        if not name:
            return _empty(400)
        if name[0] == "/" or ".." in name:
            return _empty(400)
        if kind is None:
            requested = query.get("type", "output")
            kind = requested if requested in ("output", "input", "temp") else None
        if kind is None:
            return _empty(400)
        subfolder = query.get("subfolder", "")
        inside = posixpath.normpath(posixpath.join("/root", subfolder)) + "/"
        if subfolder and not inside.startswith("/root/"):
            return _empty(403)
        filename = posixpath.basename(name)
        data = self.files.read_file(kind, subfolder, filename)
        if data is None:
            return _empty(404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await anyio.to_thread.run_sync(
                _converted, data, query.get("preview"), channel
            )
            return Response(body, headers={**disposition, "Content-Type": content_type})
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return Response(data, headers={**disposition, "Content-Type": content_type})

    # -- WebSocket --------------------------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        sock = _Socket(websocket, sid)
        # A client reconnecting with its clientId replaces its old socket for addressed events.
        self._sockets[sid] = sock
        self._connections.add(sock)
        sock.put_json("status", {"status": self._queue_info(), "sid": sid})
        if self._client_id == sid and self._last_node_id is not None:
            sock.put_json("executing", {"node": self._last_node_id})
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, sock, tg.cancel_scope)
                first_message = True
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    text = message.get("text")
                    if text is None:
                        continue
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        data = json.loads(text)
                        if first_message and data.get("type") == "feature_flags":
                            sock.feature_flags = data.get("data", {}) or {}
                            sock.put_json("feature_flags", SERVER_FEATURES)
                        first_message = False
                tg.cancel_scope.cancel()
        finally:
            self._connections.discard(sock)
            if self._sockets.get(sid) is sock:
                del self._sockets[sid]

    @staticmethod
    async def _pump(sock: _Socket, scope: anyio.CancelScope) -> None:
        try:
            await sock.pump()
        except Exception:
            log.debug("fake ComfyUI: a WebSocket went away while sending", exc_info=True)
        scope.cancel()


def _reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return "Error"


# -- serving ----------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: it runs inside someone else's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeServer:
    """A FakeComfyUI served by uvicorn on loopback; `stop()` kills it and `start()` brings it back."""

    def __init__(
        self, fake: FakeComfyUI, task_group: TaskGroup, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the fake ComfyUI listens on loopback only, not {host}")
        self.fake = fake
        self.host = host
        self.port = port or 0
        self._task_group = task_group
        self._server: _EmbeddedServer | None = None
        self._stopped: anyio.Event | None = None

    @property
    def url(self) -> str:
        """http://HOST:PORT of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        return self._server is not None

    async def start(self, fresh: bool = False) -> None:
        """Serve on the same port again; `fresh=True` is a restarted ComfyUI (empty queue and history)."""
        if self._server is not None:
            raise RuntimeError("the fake ComfyUI is already running")
        if fresh:
            self.fake.restart()
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
        # without it every keep-alive GET waits 40 ms for a delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.fake.app,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = _EmbeddedServer(config)
        stopped = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve(sockets=[listener])
            finally:
                listener.close()
                stopped.set()

        self._server, self._stopped = server, stopped
        self._task_group.start_soon(serve)
        while not server.started:
            if stopped.is_set():
                self._server = None
                raise RuntimeError("the fake ComfyUI did not start")
            await anyio.sleep(0.002)

    async def stop(self) -> None:
        """Stop like a killed process: refuse connections, reset open ones, cancel the running prompt."""
        server, stopped = self._server, self._stopped
        if server is None or stopped is None:
            return
        for listening in server.servers:
            listening.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        server.should_exit = True
        await stopped.wait()
        self._server = None


@asynccontextmanager
async def serve_fake(
    fake: FakeComfyUI, port: int | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[FakeServer]:
    """Serve `fake` under uvicorn on HOST:PORT (a free port when None) for the duration of the block."""
    async with anyio.create_task_group() as tg:
        server = FakeServer(fake, tg, host, port)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run a standalone fake ComfyUI until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.comfyui", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (the fake never listens beyond)"
    )
    parser.add_argument("--prompt-seconds", type=float, default=0.05, help="simulated GPU time per prompt")
    parser.add_argument("--loras-dir", type=Path, default=None, help="a folder listed as models/loras too")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host):
        parser.error(f"{args.host} is not a loopback address")
    fake = FakeComfyUI(prompt_seconds=args.prompt_seconds, loras_dir=args.loras_dir)
    config = uvicorn.Config(fake.app, host=args.host, port=args.port, lifespan="on", access_log=False)
    print(f"fake ComfyUI 0.3.64 on http://{args.host}:{args.port}", flush=True)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
