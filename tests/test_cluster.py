"""A cluster of real processes, as issue 15 sets it up: two front doors (`atelier serve`, each on
its own port), two workers (`atelier worker`, each rendering on both fake ComfyUI servers), two
fake ComfyUI servers (real HTTP + WebSocket servers in threads of the test) and one PostgreSQL
database (fresh for this module, dropped after). The nodes share one data directory
(ATELIER_HOME: the procrastinate dispatch takes no home lock), so a front door serves the images a
worker collected from ComfyUI; S3 artifacts across separate homes are not exercised here.

Every test uses the module's cluster and leaves it as it found it (all nodes up, the fakes at
their fast speed), so the tests hold in any order; each counts only its own runs (a tag in their
prompts). The fakes' `prompt_seconds` knob slows a test's prompts so they are caught while they
render; workers beat and give up on each other quickly (see `dispatch_nodes.node_env`).

The suite runs under xdist with `--dist loadgroup` (Makefile) and this module is in the
"postgres-nodes" group (`dispatch_nodes.NODES`): its tests share one cluster in one process, one
after another with the other node-starting modules. A cluster holds ~45 of PostgreSQL's 100
connections (few per node: ATELIER_DATABASE_POOL_SIZE=3, `--concurrency 4`); one per xdist
process would not fit.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.dispatch_nodes import (
    NODES,
    comfyui_env,
    fake_comfyui,
    fresh_database,
    node_env,
    rows,
    status_of,
    submit,
    wait_for,
    worker,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.procs import Server, serve

FAST_PROMPT_S = 0.02


@dataclass
class Cluster:
    database: str
    home: Path
    doors: tuple[Server, Server]
    fakes: tuple[FakeComfyUI, FakeComfyUI]
    env: dict[str, str]  # the workers' own settings (beside `node_env`'s)
    logs: Path
    stack: ExitStack
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str) -> None:
        """`atelier worker` `name` (again, after a kill: its log starts afresh)."""
        self.workers[name] = self.stack.enter_context(
            worker(self.home, self.database, self.logs / f"{name}.log", "--concurrency", "4", **self.env)
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def prompts_posted(self, tag: str) -> int:
        """POST /prompt received for prompts carrying `tag`, summed over both fake ComfyUI servers."""
        return sum(
            tag in json.dumps(body) for fake in self.fakes for body in fake.requests_to("POST", "/prompt")
        )

    @contextmanager
    def prompts_taking(self, seconds: float) -> Iterator[None]:
        """Each prompt renders for `seconds` on both fakes while the block runs."""
        for fake in self.fakes:
            fake.prompt_seconds = seconds
        try:
            yield
        finally:
            for fake in self.fakes:
                fake.prompt_seconds = FAST_PROMPT_S


pytestmark = NODES


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        database = stack.enter_context(fresh_database())
        fakes = [stack.enter_context(fake_comfyui(FAST_PROMPT_S)) for _ in range(2)]
        # Few connections a node: the suite's other PostgreSQL tests share the server's 100.
        env = {**comfyui_env(*(url for _, url in fakes)), "ATELIER_DATABASE_POOL_SIZE": "3"}
        home = root / "shared-home"
        front = node_env(database, **env)
        doors = (stack.enter_context(serve(home, env=front)), stack.enter_context(serve(home, env=front)))
        nodes = Cluster(database, home, doors, (fakes[0][0], fakes[1][0]), env, root, stack)
        for name in ("one", "two"):
            nodes.start_worker(name)
        yield nodes


def new_tag() -> str:
    return f"tag-{uuid.uuid4().hex[:8]}"


def ledger_runs(database: str, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Each run's (status, attempts) in the ledger."""
    found = rows(database, "SELECT id, status, attempts FROM runs WHERE id = ANY(%s)", list(run_ids))
    return {run_id: (status, attempts) for run_id, status, attempts in found}


def all_finished(database: str, run_ids: Sequence[str]) -> bool:
    statuses = {status for status, _ in ledger_runs(database, run_ids).values()}
    return statuses <= {"completed", "failed", "cancelled"}


def jobs_per_run(database: str, run_ids: Sequence[str]) -> dict[str, list[str]]:
    """The procrastinate jobs' statuses, by run."""
    found = rows(
        database,
        "SELECT lock, status FROM procrastinate_jobs WHERE lock = ANY(%s) ORDER BY id",
        list(run_ids),
    )
    jobs: dict[str, list[str]] = {}
    for run_id, status in found:
        jobs.setdefault(run_id, []).append(status)
    return jobs


def started_on(worker_log: str, run_id: str) -> bool:
    """Whether the worker whose log this is started `run_id`'s job."""
    return f"(run_id='{run_id}')" in worker_log


def assert_one_image_served(door: Server, run_id: str) -> None:
    [artifact] = status_of(door.url, run_id)["artifacts"]
    image = httpx.get(f"{door.url}{artifact['url']}", timeout=10)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png", image.text
    assert image.content.startswith(b"\x89PNG")


def test_200_runs_through_both_front_doors_complete_exactly_once(cluster: Cluster) -> None:
    tag = new_tag()
    doors = cluster.doors

    def send(i: int) -> str:
        return submit(doors[i % 2].url, f"a harbour {tag} {i}", steps=2)

    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(send, range(200)))
    assert len(set(run_ids)) == 200
    wait_for(lambda: all_finished(cluster.database, run_ids), 60, 0.5)

    assert set(ledger_runs(cluster.database, run_ids).values()) == {("completed", 1)}
    assert jobs_per_run(cluster.database, run_ids) == {run_id: ["succeeded"] for run_id in run_ids}
    assert cluster.prompts_posted(tag) == 200  # each run rendered once, on one of the two servers
    posted = [
        sum(tag in json.dumps(b) for b in fake.requests_to("POST", "/prompt")) for fake in cluster.fakes
    ]
    assert min(posted) > 0, posted
    taken = [cluster.log(name).count("Starting job atelier.execute_run") for name in ("one", "two")]
    assert min(taken) > 0, taken  # both workers took a share
    # Each run's images, served by the front door that did not accept it.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: assert_one_image_served(doors[(i + 1) % 2], run_ids[i]), range(200)))


def test_a_worker_killed_mid_run_has_its_runs_finished_by_the_other_once(cluster: Cluster) -> None:
    tag = new_tag()
    door_a, door_b = cluster.doors
    with cluster.prompts_taking(2.0):
        run_ids = [submit(door_b.url, f"a lighthouse in a storm {tag} {i}", steps=8) for i in range(4)]
        # Every prompt is with ComfyUI (recorded in the ledger); some are rendering, some queued.
        wait_for(
            lambda: all(
                handle
                for (handle,) in rows(
                    cluster.database, "SELECT backend_handle FROM runs WHERE id = ANY(%s)", run_ids
                )
            ),
            20,
        )
        held = {name: [r for r in run_ids if started_on(cluster.log(name), r)] for name in ("one", "two")}
        killed = max(held, key=lambda name: len(held[name]))
        survivor = "two" if killed == "one" else "one"
        cluster.workers[killed].kill()  # kill -9: no heartbeat, no hand back
        cluster.workers[killed].wait(5)
        try:
            wait_for(lambda: all_finished(cluster.database, run_ids), 40, 0.3)
        finally:
            cluster.start_worker(killed)

    assert set(ledger_runs(cluster.database, run_ids).values()) == {("completed", 1)}
    # A prompt already with ComfyUI is collected, not POSTed again: one per run over both servers.
    assert cluster.prompts_posted(tag) == len(run_ids)
    messages = rows(cluster.database, "SELECT run_id, message FROM run_logs WHERE run_id = ANY(%s)", run_ids)
    reconciled = {
        run_id
        for run_id, m in messages
        if m == "was running on comfyui when its worker died; reconciling with it"
    }
    assert reconciled and reconciled <= set(held[killed]), (held, messages)  # the killed worker's runs
    assert all(started_on(cluster.log(survivor), run_id) for run_id in reconciled)
    for run_id in run_ids:
        assert sum(m.startswith("completed") for r, m in messages if r == run_id) == 1
        assert_one_image_served(door_a, run_id)
    # One job per run; a reconciled run's job was retried (procrastinate counts that), not doubled.
    jobs = jobs_per_run(cluster.database, run_ids)
    assert jobs == {run_id: ["succeeded"] for run_id in run_ids}


def test_a_cancel_at_front_door_a_stops_a_run_held_by_a_worker(cluster: Cluster) -> None:
    tag = new_tag()
    door_a, door_b = cluster.doors
    interrupts_before = [len(fake.requests_to("POST", "/interrupt")) for fake in cluster.fakes]
    with cluster.prompts_taking(20.0):
        run_id = submit(door_b.url, f"a long render {tag}", steps=8)
        wait_for(lambda: cluster.prompts_posted(tag) == 1, 15)
        [rendering] = [
            fake
            for fake in cluster.fakes
            if any(tag in json.dumps(b) for b in fake.requests_to("POST", "/prompt"))
        ]
        wait_for(lambda: rendering.running_prompt_id is not None, 15)

        answer = httpx.post(f"{door_a.url}/adgen/runs/{run_id}/cancel", timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "CANCELLED", answer.text
        # The worker holding the run heard it and interrupted its ComfyUI.
        wait_for(lambda: rendering.running_prompt_id is None, 10)
        interrupts = [len(fake.requests_to("POST", "/interrupt")) for fake in cluster.fakes]
        assert sum(interrupts) - sum(interrupts_before) == 1, (interrupts_before, interrupts)
        assert (
            len(rendering.requests_to("POST", "/interrupt"))
            > interrupts_before[cluster.fakes.index(rendering)]
        )
    holders = [
        name
        for name in ("one", "two")
        if f"run {run_id}: cancelled elsewhere; stopping it here" in cluster.log(name)
    ]
    assert len(holders) == 1, holders
    assert ledger_runs(cluster.database, [run_id]) == {run_id: ("cancelled", 1)}
    assert status_of(door_b.url, run_id)["status"] == "CANCELLED"
    assert status_of(door_b.url, run_id)["artifacts"] == []


@pytest.mark.anyio
async def test_an_mcp_client_on_front_door_a_gets_progress_of_a_run_on_a_worker(cluster: Cluster) -> None:
    tag = new_tag()
    door_a, door_b = cluster.doors
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    with cluster.prompts_taking(4.0):
        run_id = submit(door_b.url, f"a red fox {tag}", steps=12)
        async with Client(f"{door_a.url}/mcp") as client:
            with anyio.fail_after(40):
                result = await client.call_tool(
                    "wait_for_run", {"run_id": run_id, "timeout_seconds": 30}, progress_callback=on_progress
                )
    view = result.structured_content
    assert view is not None
    assert (view["status"], view["attempts"], len(view["images"])) == ("completed", 1, 1), view
    assert len(seen) >= 3, seen
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen
    assert cluster.prompts_posted(tag) == 1
