"""A fuzz pass over every contract's OpenAPI document (schemathesis), against a real server.

Atelier's whole HTTP app is served by uvicorn on loopback over a real engine (preview renderer,
no step delay), in a thread of its own since schemathesis calls it synchronously. Each contract's
`/<prefix>/openapi.json` is loaded from that server and run through schemathesis' own engine
(what `st run` does): the documented examples, the coverage phase (boundary values, missing and
wrong-typed fields, undeclared methods, other media types) and fuzzing (valid and invalid
data), on a small budget with a fixed seed in deterministic mode, so CI sends the same requests
every time. Half the time an id or file name is a real run's, so the routes behind the id
checks are reached too. Every answer must not be a server error and must conform to the
document: a documented status code, the documented media type, body schema and headers; a
method the path does not document is a 405 whose `Allow` names the documented ones.

Not checked: whether the documents state every constraint the server enforces (schemathesis'
positive/negative data acceptance): some are checked by the engine (a side a multiple of 8),
not declared in the schema.

(The engine rather than `schema.parametrize()`: the server must exist before the schema can be
loaded, and schemathesis' fixture-loaded schemas fail under pytest 9.2, which dropped
`Node._nodeid`. One worker: with two, CPython 3.11's parser raised "AST constructor recursion
depth mismatch" inside schemathesis' threads.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from schemathesis.engine import Status, events, from_schema

from core.characters.catalog import Upload
from core.models import Run
from tests.character_images import photo
from tests.http_served import Served, atelier_http

CONTRACTS = ["adgen", "comfygen", "pod", "isengard", "desktop"]

CONFIG = {
    "seed": 20261130,
    "workers": 1,
    "request-timeout": 60,
    "generation": {"max-examples": 15, "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "allow_header_conformance": {"enabled": True},
        "unsupported_method": {"enabled": True},
    },
    "operations": [
        # POD's socket.io endpoint is python-socketio's Engine.IO server, which answers a method
        # its protocol has no use for with its own 400; every other check still applies to it.
        {"include-path": "/socket.io/", "checks": {"unsupported_method": {"enabled": False}}},
    ],
}


@dataclass
class Server:
    url: str
    runs: dict[str, Run]  # a finished run for each contract to fuzz with (and maybe delete)
    # Isengard's other ids and file names: a trained character's and its training job's.
    isengard: dict[str, list[str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The served app; it runs in a thread with its own event loop."""
    home: Path = tmp_path_factory.mktemp("fuzz")
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(atelier_http(home)) as served,
    ):
        runs = {contract: portal.call(finished_run, served) for contract in CONTRACTS}
        yield Server(served.url, runs, portal.call(trained_character, served))


async def finished_run(served: Served) -> Run:
    run = await served.engine.submit_image({"prompt": "a fox", "width": 64, "height": 64, "steps": 2})
    return await served.finished(run.id)


async def trained_character(served: Served) -> dict[str, list[str]]:
    """A character with training images and a finished training: its id, the job's, the images' names."""
    character = await served.engine.characters.create("Fuzz")
    images = [Upload("fuzz.png", photo(1)), Upload("fuzz.jpg", photo(2, fmt="JPEG"))]
    await served.engine.characters.add_images(character.id, images)
    run = await served.engine.training.submit(character.id, {"steps": 5})
    await served.finished(run.id)
    return {"ids": [character.id, f"train-{run.id}"], "files": ["fuzz.png", "fuzz.jpg"]}


def known_values(contract: str, run: Run, more: dict[str, list[str]]) -> dict[str, Any]:
    """Config that has the fuzzer send, half the time, the id and file names of a real run (as the
    contract spells them), so the routes behind the id checks are fuzzed too."""
    ids = [
        {"pod": f"job_{run.id}", "isengard": f"gen-{run.id}", "desktop": str(run.seq)}.get(contract, run.id)
    ]
    files = [artifact.filename for artifact in run.artifacts]
    if contract == "isengard":
        files = [f"gen-{run.id}-{index}.png" for index in range(len(files))] + more["files"]
        ids += more["ids"]
    half = {"probability": 0.5}
    return {
        "dictionaries": {"ids": {"values": ids}, "files": {"values": files}},
        "parameters": {
            "path.id": {"dictionary": "ids", **half},
            "path.run_id": {"dictionary": "ids", **half},
            "path.filename": {"dictionary": "files", **half},
        },
    }


def load(url: str, contract: str, run: Run, more: dict[str, list[str]]) -> schemathesis.BaseSchema:
    config = copy.deepcopy(CONFIG) | known_values(contract, run, more)
    schema = schemathesis.openapi.from_url(
        f"{url}/{contract}/openapi.json", config=schemathesis.Config.from_dict(config)
    )

    @schema.hook
    def filter_failure(
        context: schemathesis.HookContext,
        failure: object,
        case: schemathesis.Case,
        response: schemathesis.Response,
    ) -> bool:
        # A POD `custom` job answers 501 by design (issue 12 serves it); only that is let through.
        custom_job = (
            case.method.upper() == "POST"
            and case.operation.path == "/api/jobs"
            and isinstance(case.body, dict)
            and case.body.get("type") == "custom"
        )
        return not (custom_job and response.status_code == 501)

    return schema


def failures_of(schema: schemathesis.BaseSchema) -> tuple[list[str], int]:
    """Every failed check as a readable paragraph (with a curl command), and how many cases ran."""
    found: dict[str, str] = {}
    cases = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.NonFatalError):
            found[f"{event.label} error"] = f"{event.label}: schemathesis could not test it: {event.info}"
        if isinstance(event, events.FatalError):
            found["fatal"] = f"schemathesis stopped: {event.exception!r}"
        if not isinstance(event, events.ScenarioFinished):
            continue
        cases += len(event.recorder.cases)
        if event.status not in (Status.FAILURE, Status.ERROR):
            continue
        for checks in event.recorder.checks.values():
            for check in checks:
                if check.failure_info is None:
                    continue
                failure = check.failure_info.failure
                status = getattr(failure, "status_code", None)
                title = f"{failure.title} ({status})" if status else failure.title
                found.setdefault(
                    f"{event.label} {title}",
                    f"{event.label}: {title}\n{failure.message}\n{check.failure_info.code_sample}",
                )
    return list(found.values()), cases


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_answer_conforms_to_the_contracts_openapi_document(server: Server, contract: str) -> None:
    failures, cases = failures_of(load(server.url, contract, server.runs[contract], server.isengard))
    assert cases > 100, f"only {cases} cases ran"
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_a_body_is_documented_as_required_exactly_when_an_empty_one_is_refused(
    server: Server, contract: str
) -> None:
    document = httpx.get(f"{server.url}/{contract}/openapi.json").json()
    bodies = [
        (method, path, operation["requestBody"]["required"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation and "{" not in path
    ]
    assert bodies
    for method, path, required in bodies:
        response = httpx.request(
            method, f"{server.url}/{contract}{path}", headers={"Content-Type": "application/json"}
        )
        assert (400 <= response.status_code < 500) == required, (method, path, response.text)
