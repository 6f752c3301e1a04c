"""A fuzz pass over every contract's OpenAPI document (schemathesis), against a real server.

Atelier's whole HTTP app is served by uvicorn on loopback over a real engine (preview renderer,
no step delay), in a thread of its own since schemathesis calls it synchronously. Each contract's
`/<prefix>/openapi.json` is loaded from that server and run through schemathesis' own engine
(what `st run` does): the documented examples, the coverage phase (boundary values, missing and
wrong-typed fields, undeclared methods, other media types) and fuzzing, on a small budget with a
fixed seed in deterministic mode, so CI sees the same requests every time. Every answer must not
be a server error and must conform to the document: a documented status code, the documented
media type, body schema and headers, and on a 405 an `Allow` header naming the documented methods.

(The engine rather than `schema.parametrize()`: the server must exist before the schema can be
loaded, and schemathesis' fixture-loaded schemas fail under pytest 9.2, which dropped
`Node._nodeid`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from schemathesis.engine import Status, events, from_schema

from tests.http_served import atelier_http

CONTRACTS = ["adgen", "comfygen", "pod", "isengard", "desktop"]

# Isengard's characters and LoRA training answer 501 by design until they are served (issue 11):
# every operation under /api/characters and /api/training is left out, and nothing else.
NOT_YET_SERVED = r"^/api/(characters|training)(/|$)"

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


@pytest.fixture(scope="module")
def served_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The served app's base URL; the server runs in a thread with its own event loop."""
    home: Path = tmp_path_factory.mktemp("fuzz")
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(atelier_http(home)) as served,
    ):
        yield served.url


def load(url: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(url, config=schemathesis.Config.from_dict(CONFIG))
    schema = schema.exclude(path_regex=NOT_YET_SERVED)

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
                key = f"{event.label} {failure.title} {getattr(failure, 'status_code', '')}"
                found.setdefault(
                    key,
                    f"{event.label}: {failure.title}\n{failure.message}\n{check.failure_info.code_sample}",
                )
    return list(found.values()), cases


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_answer_conforms_to_the_contracts_openapi_document(served_url: str, contract: str) -> None:
    failures, cases = failures_of(load(f"{served_url}/{contract}/openapi.json"))
    assert cases > 100, f"only {cases} cases ran"
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)
