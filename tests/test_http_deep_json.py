"""Deeply nested JSON (issue 10, item 7) on a real server: every contract's POST answers 400 in its
own envelope ("the JSON is nested too deeply") instead of a 500, and the realtime channels that
receive client messages carry on.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect

from tests.http_served import atelier_http

pytestmark = pytest.mark.anyio

CONTRACTS = ["adgen", "comfygen", "pod", "isengard", "desktop"]
# Each contract's error envelope: the key that holds the message.
MESSAGE_KEY = {
    "adgen": "detail",
    "comfygen": "detail",
    "pod": "error",
    "isengard": "detail",
    "desktop": "error",
}
# Past the parser's own stack (a RecursionError in json.loads), and within it but past any real body.
DEPTHS = [10_000, 900]


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def concrete(path: str) -> str:
    """A path template with every parameter filled in (ids in a valid shape need no run)."""
    return path.replace("{", "").replace("}", "")


@pytest.mark.parametrize("contract", CONTRACTS)
async def test_deeply_nested_json_is_a_400_on_every_post(tmp_path: Path, contract: str) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get(f"/{contract}/openapi.json")).json()
        posts = [(path, ops["post"]) for path, ops in document["paths"].items() if "post" in ops]
        assert posts
        for path, operation in posts:
            for depth in DEPTHS:
                response = await served.http.post(
                    f"/{contract}{concrete(path)}",
                    content=nested(depth),
                    headers={"Content-Type": "application/json"},
                )
                where = f"POST /{contract}{path} with {depth} levels"
                if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                    # The route reads no JSON body (none, or a multipart upload): whatever it
                    # answers, the nesting cannot break it.
                    assert response.status_code < 500 or response.status_code == 501, where
                    continue
                assert response.status_code == 400, f"{where}: {response.status_code} {response.text}"
                assert "400" in operation["responses"], where
                body = response.json()
                assert "the JSON is nested too deeply" in body[MESSAGE_KEY[contract]], (where, body)
                if contract == "desktop":
                    assert body["success"] is False and body["code"] == "INVALID_PARAMETERS", body
        # The server is fine afterwards: a plain request still works.
        assert (await served.http.get(f"/{contract}/openapi.json")).status_code == 200


async def test_json_nested_within_the_limit_is_read_as_usual(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        context = {"trail": json.loads(nested(40))}  # a free-form field, 42 levels in all
        response = await served.http.post(
            "/isengard/api/client-logs",
            json={"entries": [{"timestamp": "t", "level": "INFO", "message": "m", "context": context}]},
        )
        assert response.status_code == 204, response.text


async def test_a_deeply_nested_socket_io_packet_is_dropped_and_the_channel_carries_on(
    tmp_path: Path,
) -> None:
    async with (
        atelier_http(tmp_path) as served,
        connect(f"{served.ws_url}/pod/socket.io/?EIO=4&transport=websocket", max_size=None) as socket,
    ):
        with anyio.fail_after(10):
            assert (await socket.recv()).startswith("0{")  # Engine.IO open
            await socket.send("40")  # Socket.IO connect
            assert (await socket.recv()).startswith("40{")
            await socket.send("42" + "[" * 10_000 + "]" * 10_000)
            await socket.send('42["hello", ' + "[" * 900 + "]" * 900 + "]")
            submitted = await served.http.post(
                "/pod/api/generate",
                json={"prompt": "a fox", "productTypes": ["tshirt"], "width": 64, "height": 64},
            )
            assert submitted.status_code == 200, submitted.text
            job = submitted.json()["jobId"]
            while True:  # the job's events still arrive on the same socket
                message = await socket.recv()
                if message.startswith('42["job:update"') and job in message:
                    break
