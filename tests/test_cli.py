"""The `atelier` command as a person uses it, as a real subprocess on a fresh data directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.procs import Server, atelier_command, atelier_env, free_port, serve


def atelier(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*atelier_command(), *args],
        env=atelier_env(home, ATELIER_LOCAL_STEP_MS="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generate_prints_the_run_id_and_image_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = atelier(
        home,
        "generate",
        "a kite over dunes",
        "--width",
        "128",
        "--height",
        "96",
        "--count",
        "2",
        "--seed",
        "5",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(" completed")
    paths = [Path(line) for line in lines[1:]]
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (128, 96)

    run_id = lines[0].split()[1]
    listed = atelier(home, "runs", "--json")
    assert [run["id"] for run in json.loads(listed.stdout)] == [run_id]

    shown = json.loads(atelier(home, "runs", "show", run_id).stdout)
    assert shown["status"] == "completed"
    assert shown["inputs"]["seed"] == 5
    assert [Path(p) for p in shown["files"]] == paths
    assert any("completed" in line for line in shown["log"])

    # Cancelling a finished run changes nothing, and says so.
    cancelled = atelier(home, "runs", "cancel", run_id)
    assert cancelled.returncode == 0 and "completed" in cancelled.stdout


def test_queued_run_can_be_cancelled_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    queued = atelier(home, "generate", "later", "--width", "64", "--height", "64", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    assert atelier(home, "runs", "cancel", run_id).stdout.strip() == f"run {run_id} cancelled"
    assert json.loads(atelier(home, "runs", "show", run_id).stdout)["status"] == "cancelled"


def test_bad_input_exits_2_with_a_message_naming_the_field(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cases = {
        ("generate", "x", "--width", "100"): "width: must be a multiple of 8 in 64..4096",
        ("generate", "x", "--steps", "0"): "steps: must be an integer in 1..150",
        ("generate", "   "): "prompt: must be non-blank text",
        ("generate", "x", "--priority", "asap"): "priority: must be one of low, normal, high, urgent",
        ("runs", "show", "../../etc/passwd"): "run_id: is not a valid run id",
        ("runs", "show", "0" * 26): "does not exist",
        ("runs", "--status", "done"): "status: must be one of",
    }
    for args, message in cases.items():
        result = atelier(home, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert json.loads(atelier(home, "runs", "--json").stdout) == []


def ledger_row(home: Path, run_id: str) -> tuple[str, int]:
    shown = json.loads(atelier(home, "runs", "show", run_id).stdout)
    return shown["status"], shown["attempts"]


def test_no_wait_without_a_server_queues_the_run_and_says_nothing_runs_it_yet(tmp_path: Path) -> None:
    home = tmp_path / "home"
    queued = atelier(home, "generate", "a lantern", "--width", "64", "--height", "64", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    assert "no Atelier server is running" in queued.stderr
    # Listing and showing it run nothing: it is still queued, no attempt spent.
    atelier(home, "runs")
    time.sleep(1.5)
    assert ledger_row(home, run_id) == ("queued", 0)

    # A server starts: it renders the run, on its first attempt.
    with serve(home, env={"ATELIER_LOCAL_STEP_MS": "1"}):
        deadline = time.monotonic() + 20
        while ledger_row(home, run_id)[0] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert ledger_row(home, run_id) == ("completed", 1)
        # With the server up, --no-wait says who renders it.
        again = atelier(home, "generate", "a kite", "--width", "64", "--height", "64", "--no-wait")
        assert "will render it" in again.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_generate_hands_its_run_back_without_spending_an_attempt(
    tmp_path: Path, signum: int, code: int
) -> None:
    home = tmp_path / "home"
    process = subprocess.Popen(
        [*atelier_command(), "generate", "a slow comet", "--width", "64", "--height", "64", "--steps", "100"],
        env=atelier_env(home, ATELIER_LOCAL_STEP_MS="100"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            runs = json.loads(atelier(home, "runs", "--json").stdout or "[]")
            if runs and runs[0]["status"] == "running" and runs[0]["step"] > 0:
                break
            if process.poll() is not None:
                pytest.fail(f"generate exited early ({process.returncode}):\n{process.communicate()[1]}")
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert "goes back to the queue" in stderr and "Traceback" not in stderr
    run_id = runs[0]["id"]
    assert ledger_row(home, run_id) == ("queued", 0)
    log = json.loads(atelier(home, "runs", "show", run_id).stdout)["log"]
    assert any("handed back" in line for line in log), log
    assert not (home / "artifacts" / "runs" / run_id).exists()


def test_a_server_stopped_by_sigterm_hands_back_its_running_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serve(home, env={"ATELIER_LOCAL_STEP_MS": "100"}) as server:
        run_id = httpx.post(
            f"{server.url}/adgen/generate",
            json={"prompt": "a long exposure", "steps": 100, "width": 64, "height": 64},
        ).json()["run_id"]
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/adgen/runs/{run_id}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0
    assert ledger_row(home, run_id) == ("queued", 0)
    with serve(home, env={"ATELIER_LOCAL_STEP_MS": "0"}):
        deadline = time.monotonic() + 20
        while ledger_row(home, run_id)[0] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert ledger_row(home, run_id) == ("completed", 1)


def test_runs_retry_delete_version_and_whole_ids(tmp_path: Path) -> None:
    home = tmp_path / "home"
    version = atelier(home, "--version")
    assert version.returncode == 0 and version.stdout.startswith("atelier ")
    long_prompt = "a very long prompt about a lighthouse on a cliff at dusk with gulls and spray " * 3
    made = [
        atelier(home, "generate", prompt, "--width", "64", "--height", "64").stdout.split()[1]
        for prompt in (long_prompt, "short")
    ]
    table = atelier(home, "runs").stdout
    for run_id in made:
        assert run_id in table  # never cut, whatever the prompt's length
    assert "…" in table

    cancelled = atelier(home, "runs", "cancel", made[1])
    assert "had already completed; nothing was cancelled" in cancelled.stdout
    refused = atelier(home, "runs", "retry", made[1])
    assert refused.returncode == 2 and "only failed or cancelled runs can be retried" in refused.stderr
    assert "Traceback" not in refused.stderr

    queued = atelier(home, "generate", "later", "--width", "64", "--height", "64", "--no-wait").stdout.strip()
    assert atelier(home, "runs", "cancel", queued).stdout.strip() == f"run {queued} cancelled"
    retried = atelier(home, "runs", "retry", queued)
    assert retried.stdout.strip() == f"run {queued} queued again"
    assert ledger_row(home, queued) == ("queued", 0)

    deleted = atelier(home, "runs", "delete", made[0])
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert not (home / "artifacts" / "runs" / made[0]).exists()
    gone = atelier(home, "runs", "show", made[0])
    assert gone.returncode == 2 and "does not exist" in gone.stderr


def test_make_run_takes_port_and_host(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    port = free_port()
    process = subprocess.Popen(
        [make, "-s", "run", f"PORT={port}", "HOST=127.0.0.1"],
        cwd=Path(__file__).resolve().parents[1],
        env=atelier_env(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        Server(process, f"http://127.0.0.1:{port}").wait_healthy(60)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
        if process.stdout:
            process.stdout.close()


def test_mcp_over_stdio_stopped_by_sigterm_with_stdin_open_hands_back_its_runs(tmp_path: Path) -> None:
    """Hosts close stdin, then send SIGTERM if the server lingers: a SIGTERM alone must be enough."""
    home = tmp_path / "home"
    process = subprocess.Popen(
        [*atelier_command(), "mcp"],
        env=atelier_env(home, ATELIER_LOCAL_STEP_MS="100"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (home / "engine.lock").exists() or not (home / "engine.lock").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        queued = atelier(
            home,
            "generate",
            "a night train",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "100",
            "--no-wait",
        )
        run_id = queued.stdout.strip()
        assert "will render it" in queued.stderr
        while ledger_row(home, run_id)[0] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                stream.close()
    assert ledger_row(home, run_id) == ("queued", 0)
