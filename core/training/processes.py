"""A trainer's process group: recorded in a pid file, stopped whole (SIGTERM, then SIGKILL after a grace).

The trainer is started in its own session, so it leads a process group holding every process it
starts (data loader workers, compilers): signalling the group reaches them all, where signalling
the trainer's pid alone would leave them running.

The group is recorded in a pid file in the run's workdir, with the leader's start time from
`/proc`, so that when Atelier itself was killed (`kill -9`) and left the trainer running, the next
attempt in the same workdir stops that leftover group before starting a new one, and only after
checking it is still the one we started: a pid reused by an unrelated process has another start
time. (A group id cannot be reused while any process of the group lives, so a group whose
leader has exited but whose members remain is still ours.) Without `/proc` (macOS) the check
falls back to the leader still leading its own session, which is weaker.

Zombies (exited, not yet reaped: where PID 1 does not reap orphans, as in some containers)
count as gone: they run nothing and hold nothing.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio

_PROC = Path("/proc")
_POLL_S = 0.05


def record_group(pid_file: Path, pgid: int) -> None:
    """Write `pid_file` (atomically) naming the group `pgid`, led by the process of that pid."""
    record = {"pgid": pgid, "start": _start_ticks(pgid)}
    temp = pid_file.with_name(f".{pid_file.name}.tmp")
    temp.write_text(json.dumps(record))
    os.replace(temp, pid_file)


async def stop_recorded_group(pid_file: Path, grace_s: float) -> int | None:
    """Stop the group `pid_file` names if it is still alive and ours; its id if one was stopped.

    The file is removed either way.
    """
    try:
        record = json.loads(pid_file.read_text())
        pgid, start = int(record["pgid"]), record.get("start")
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        pid_file.unlink(missing_ok=True)
        return None
    stopped = None
    if pgid > 1 and group_alive(pgid) and _still_ours(pgid, start):
        await stop_group(pgid, grace_s)
        stopped = pgid
    pid_file.unlink(missing_ok=True)
    return stopped


async def stop_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to the group, SIGKILL to what is left after `grace_s`; returns once none of it runs."""
    if not _signal(pgid, signal.SIGTERM):
        return
    with anyio.move_on_after(grace_s):
        while group_alive(pgid):
            await anyio.sleep(_POLL_S)
    if not group_alive(pgid):
        return
    _signal(pgid, signal.SIGKILL)
    # SIGKILL cannot be caught; only a process stuck in the kernel (a hung GPU driver) outlasts it.
    with anyio.move_on_after(30):
        while group_alive(pgid):
            await anyio.sleep(_POLL_S)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is running (zombies do not count)."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"


def _signal(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _still_ours(pgid: int, start: object) -> bool:
    if not _PROC.is_dir():
        try:
            return os.getsid(pgid) == pgid
        except (ProcessLookupError, PermissionError):
            return False
    leader = _start_ticks(pgid)
    # The leader gone and the group alive: the group id cannot have been reused (module docstring).
    return leader is None or leader == start


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # /proc/<pid>/stat's 22nd field, the start time in clock ticks since boot; index 19 once the
    # first two (pid, "(comm)") are cut off.
    return int(fields[19]) if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after "(comm)": state, ppid, pgrp, ...; None if there is no such process."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rfind(b")") + 2 :].decode().split()
