"""A real S3-compatible server for the tests: moto's server mode, started as its own process on a
free loopback port (`python -m moto.server`), and plain-HTTP helpers to look inside its buckets
with boto3, as an operator's S3 client would.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx

from tests.procs import free_port

# Credentials the tests hand Atelier: moto accepts any, and the tests check none of them leaks.
ACCESS_KEY_ID = "AKIATESTATELIER00001"
SECRET_ACCESS_KEY = "s3cr3t-Atelier-never-shown-0123456789"
_buckets = itertools.count(1)


@dataclass
class S3Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    @functools.cached_property
    def client(self) -> Any:
        """boto3 (moto's own dependency): another S3 client than Atelier's, to look with."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """A new empty bucket (one per test keeps the tests apart)."""
        name = f"atelier-test-{next(_buckets)}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in `bucket` under `prefix` (one page is enough here)."""
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port until the block ends; raises if it never answers."""
    port = free_port()
    # Its request log goes to a file: a pipe nobody reads would fill and stop the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            server = S3Server(f"http://127.0.0.1:{port}", process)
            _wait_until_it_answers(server, log)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_it_answers(server: S3Server, log: IO[bytes]) -> None:
    deadline = time.monotonic() + 30
    while server.process.poll() is None:
        try:
            if httpx.get(f"{server.url}/moto-api/", timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("moto.server did not answer within 30 s")
        time.sleep(0.1)
    log.seek(0)
    output = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"moto.server exited with {server.process.returncode}:\n{output}")
