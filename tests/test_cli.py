"""The `atelier` command as a person uses it, as a real subprocess on a fresh data directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image

from tests.procs import atelier_command, atelier_env


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
