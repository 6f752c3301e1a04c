"""A fuzz pass over every MCP tool, driven by the input schema the tool advertises.

For each tool `list_tools()` lists, Hypothesis draws arguments from its `inputSchema`: valid
ones (kept to tiny images so the preview renderer answers at once), and mutated ones (a wrong
type, a number out of range, an odd string, an unknown or a missing argument). Each call goes
through a real in-process MCP client, and whatever comes back must be something a model can act
on: a tool error whose every line names a field (or the run) and what is wrong with it, with no
traceback or "internal error", and nothing recorded; or a success whose structured content is
what the tool's output schema documents. Resource URIs get the same treatment: any run id and
file name (percent-encoded) is read, or refused as not found or invalid params, never as an
internal error.

The schemas are listed once, over a real client, when the module is collected: Hypothesis draws
the arguments outside the test's event loop (a draw that runs out of data stops the whole
example, which anyio's test runner does not survive). Values only known at run time (a finished
run's id, its image's URI) are drawn as placeholders and filled in by the test.

The example budget is small and derandomized, so `make test` stays fast and every run of it
tries the same calls. For the same reason the product types are the shipped ones with tiny
print areas (a catalog file, `ATELIER_CATALOG`, as a seller would write one): a drawn
create_products makes 256-pixel print files, not 4500x5400 ones.

Publishing: the fuzz clients have no elicitation, so publish_products publishes only when the
drawn arguments say `confirm: true` (and name real products on a configured platform). It then
really publishes, on the embedded storefront of the test's temporary data directory: that is
harmless, and it is the documented answer (a success checked against the output schema).
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client, MCPError
from mcp_types import CallToolResult, Tool
from PIL import Image

from core.engine import Engine
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.test_mcp_tools import TOOLS as EXPECTED_TOOLS
from tests.tiny_catalog import tiny_catalog

pytestmark = pytest.mark.anyio

# The one list of tools the tests expect, in a fixed order (test ids must not depend on hashing).
TOOLS = sorted(EXPECTED_TOOLS)
UNKNOWN_ID = "0" * 26
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Valid values stay tiny: the point is the tools' handling of arguments, not rendering 4096 px images.
TINY: dict[str, dict[str, float]] = {
    "width": {"maximum": 128},
    "height": {"maximum": 128},
    "count": {"maximum": 2},
    "steps": {"maximum": 3},
    "scale": {"maximum": 2},
    "wait_seconds": {"maximum": 0.5},
    "timeout_seconds": {"maximum": 0.5},
}
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "..",
    "../../etc/passwd",
    "..%2F..%2Fledger.sqlite3",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "renard \U0001f98a \u202eesrever\u202c \u00e9\u0301",
    "\ud7ff\ue000\ufffd",
    "x" * 10_000,
    "line\nbreak\ttab",
    "atelier://runs/../../x",
    "data:image/png;base64,AAAA",
    "http://169.254.169.254/latest/meta-data",
    "file:///etc/passwd",
    "NaN",
    "1e309",
    "null",
    "{}",
    "' OR 1=1 --",
    "%s%s%n",
]
WRONG_TYPES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
)
# Lines of a tool error that are about the request as a whole rather than one argument.
WHOLE_REQUEST_LINES = [
    re.compile(r"^run '?[0-9a-z]{26}'? \S"),  # "run X does not exist", "run X is completed; only ..."
    re.compile(r"^idempotency key '.*' was used for a different request \(run [0-9a-z]{26}\)"),
]


# Placeholders for what a real caller has to hand, filled in by the test (see `Known`).
RUN_ID, IMAGE_URI, PNG_DATA_URL = "<known run id>", "<known image uri>", "<known png data url>"
CHARACTER, CHARACTER_IMAGE = "<known character>", "<known character image>"
PRODUCT, UNKNOWN_PRODUCT = "<known product>", "prod-000000000000"
# Realistic values per argument, beside what the schema alone would give.
POOLS: dict[str, list[Any]] = {
    "run_id": [RUN_ID, RUN_ID, UNKNOWN_ID],
    "source": [IMAGE_URI, RUN_ID, PNG_DATA_URL],
    "workflow": ["sd15", "img2img", "upscale"],
    "sampler": ["euler", "dpmpp_2m"],
    "scheduler": ["normal", "karras"],
    "checkpoint": ["sd_xl_base_1.0.safetensors"],
    "loras": [["pixel-art.safetensors:0.8"]],
    "character": [CHARACTER, CHARACTER, "nobody"],
    "sources": [[PNG_DATA_URL], [IMAGE_URI, RUN_ID], [PNG_DATA_URL, "x"]],
    "filename": [CHARACTER_IMAGE, "image-01.png"],
    "design": [PNG_DATA_URL, IMAGE_URI, RUN_ID],
    "prompts": [["a fox"], ["a fox", "an owl"]],
    "product_types": [["mug"], ["poster", "mug"], ["sweater"]],
    "type": ["mug", "poster", "sweater"],
    "platforms": [None, ["storefront"], ["printify"], ["etsy"]],
    "product_ids": [[PRODUCT], [PRODUCT, UNKNOWN_PRODUCT], ["nope"]],
    "product_id": [PRODUCT, PRODUCT, UNKNOWN_PRODUCT],
    "theme": ["nature", "foxes"],
}


# The shipped product types, with print areas small enough for the preview renderer to fill at once.
@dataclass
class Known:
    """A finished run and its image, and a trained character with one image, made before the fuzzing starts."""

    run_id: str
    image_uri: str
    png_data_url: str
    character: str
    character_image: str
    product: str

    def fill(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """`args` with the placeholders replaced by the real values (in lists too)."""
        real = {
            RUN_ID: self.run_id,
            IMAGE_URI: self.image_uri,
            PNG_DATA_URL: self.png_data_url,
            CHARACTER: self.character,
            CHARACTER_IMAGE: self.character_image,
            PRODUCT: self.product,
        }

        def filled(value: Any) -> Any:
            if isinstance(value, str):
                return real.get(value, value)
            if isinstance(value, list):
                return [filled(item) for item in value]
            return value

        return {name: filled(value) for name, value in args.items()}


def advertised_tools() -> dict[str, Tool]:
    """The tools as `list_tools()` shows them to a client, over a throwaway engine."""

    async def listed() -> dict[str, Tool]:
        with tempfile.TemporaryDirectory() as home:
            settings = Settings.from_env(
                {}, home=Path(home), local_step_ms=0, catalog=tiny_catalog(Path(home))
            )
            async with Engine.open(settings) as engine, Client(build_mcp(engine)) as client:
                return {tool.name: tool for tool in (await client.list_tools()).tools}

    return anyio.run(listed)


ADVERTISED = advertised_tools()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Preview renderer, the tiny catalog."""
    return Settings.from_env({}, home=tmp_path / "home", local_step_ms=0, catalog=tiny_catalog(tmp_path))


# --- JSON schema -> strategies -----------------------------------------------------------------


def branches(prop: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a property, each with the constraints written beside `anyOf` merged in."""
    beside = {k: v for k, v in prop.items() if k not in ("anyOf", "default", "description", "title")}
    return [{**branch, **beside} for branch in prop.get("anyOf", [prop])]


def valid_value(name: str, prop: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows (numbers within TINY), plus the realistic ones of POOLS."""
    from_schema = st.one_of(
        [_valid_for(name, {**branch, **_tiny(name, branch)}) for branch in branches(prop)]
    )
    if name not in POOLS:
        return from_schema
    # Mostly what a caller would really send, or nearly every call would stop at the same error.
    return st.one_of(st.sampled_from(POOLS[name]), st.sampled_from(POOLS[name]), from_schema)


def _tiny(name: str, branch: Mapping[str, Any]) -> dict[str, float]:
    if branch.get("type") not in ("integer", "number") or name not in TINY:
        return {}
    return {"maximum": min(branch.get("maximum", float("inf")), TINY[name]["maximum"])}


def _valid_for(name: str, schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = int(schema.get("minimum", -(2**40))), int(schema.get("maximum", 2**40))
        step = int(schema.get("multipleOf", 1))
        return st.integers(-(-low // step), high // step).map(lambda k: k * step)
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "string":
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength", 10**9)
        odd = [s for s in ODD_STRINGS if shortest <= len(s) <= longest]
        text = st.text(min_size=shortest, max_size=min(longest, 30))
        return st.one_of(text, st.sampled_from(odd)) if odd else text
    if kind == "array":
        return st.lists(_valid_for(name, schema.get("items", {})), max_size=schema.get("maxItems", 3))
    raise AssertionError(f"{name}: the fuzzer does not know JSON schema {schema}")


def out_of_range(prop: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Numbers just outside (or far outside) a numeric property's range; lists one item too long."""
    values: list[Any] = [10**30, -(10**30), 2**64]
    for branch in branches(prop):
        if "minimum" in branch:
            values += [branch["minimum"] - 1, branch["minimum"] - 0.5]
        if "maximum" in branch:
            values += [branch["maximum"] + 1, branch["maximum"] + 0.5]
        if "multipleOf" in branch:
            values.append(branch.get("minimum", 0) + branch["multipleOf"] + 1)
        if "maxItems" in branch:
            values.append(["a.safetensors"] * (branch["maxItems"] + 1))
        if "maxLength" in branch:
            values.append("y" * (branch["maxLength"] + 1))
    return st.sampled_from(values)


@st.composite
def arguments(draw: st.DrawFn, tool: Tool) -> dict[str, Any]:
    """Arguments for `tool`: valid by its schema, then (usually) broken in one or two ways."""
    props: dict[str, Any] = tool.input_schema.get("properties", {})
    required = set(tool.input_schema.get("required", []))
    args = {
        name: draw(valid_value(name, prop), label=name)
        for name, prop in props.items()
        if name in required or draw(st.booleans())
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]), label="mutations")):
        how = draw(st.sampled_from(["wrong_type", "out_of_range", "odd_string", "unknown", "missing"]))
        if how == "unknown":
            extra = draw(st.sampled_from(["size", "num_images", "__proto__", "../x", "", "prompt ", "Width"]))
            args[extra] = draw(WRONG_TYPES)
        elif how == "missing" and required:
            args.pop(draw(st.sampled_from(sorted(required))), None)
        elif props and how != "missing":
            name = draw(st.sampled_from(sorted(props)))
            if how == "wrong_type":
                args[name] = draw(WRONG_TYPES)
            elif how == "out_of_range":
                args[name] = draw(out_of_range(props[name]))
            else:
                args[name] = draw(st.sampled_from(ODD_STRINGS))
    return args


# --- what every answer must be ------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def check_error(tool: Tool, args: Mapping[str, Any], text: str) -> None:
    """A tool error a model can act on: each line names a field (or the run) and what is wrong."""
    head = f"Error executing tool {tool.name}"
    assert text != head, "a crash: the tool raised something it did not mean to"
    assert text.startswith(f"{head}: "), text
    for noise in (
        "Traceback",
        "internal error",
        "Internal error",
        "input_value",
        "pydantic",
        "validation error",
    ):
        assert noise not in text, text
    assert len(text) < 2_000, f"the error echoes too much: {text[:200]}..."
    names = set(tool.input_schema.get("properties", {})) | set(args)
    # An argument is named as sent; one that is not a plain word is quoted so it can be seen.
    labels = [name if name.isidentifier() else repr(name) for name in names]
    for line in text.removeprefix(f"{head}: ").splitlines():
        named = any(line.startswith((f"{label}: ", f"{label}[", f"{label}.")) for label in labels)
        whole = any(sentence.match(line) for sentence in WHOLE_REQUEST_LINES)
        assert named or whole, f"unnamed problem: {line!r}"
        assert not line.endswith("()"), f"an empty list in: {line!r}"


def check_success(tool: Tool, result: CallToolResult) -> None:
    assert result.structured_content is not None, f"{tool.name} succeeded with no structured content"
    assert tool.output_schema is not None
    jsonschema.validate(result.structured_content, tool.output_schema)


# --- the pass --------------------------------------------------------------------------------


@pytest.fixture(params=["auto", "legacy"])
async def client(engine: Engine, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """The default connection, and the classic `initialize` handshake hosts like Claude Desktop use."""
    async with Client(build_mcp(engine), mode=request.param) as connected:
        yield connected


@pytest.fixture
async def known(client: Client) -> Known:
    made = await client.call_tool(
        "generate_image", {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}
    )
    assert made.structured_content is not None, text_of(made)
    image = made.structured_content["images"][0]
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 20)).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    character = await client.call_tool("create_character", {"name": "Mara"})
    assert character.structured_content is not None, text_of(character)
    photo = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 80, 20)).save(photo, format="PNG")
    added = await client.call_tool(
        "add_character_images",
        {"character": "Mara", "sources": [base64.b64encode(photo.getvalue()).decode()]},
    )
    assert added.structured_content is not None and added.structured_content["added"], text_of(added)
    trained = await client.call_tool("train_character", {"character": "Mara", "steps": 5, "wait_seconds": 30})
    assert trained.structured_content is not None, text_of(trained)
    assert trained.structured_content["status"] == "completed", text_of(trained)
    photo_data = base64.b64encode(photo.getvalue()).decode()
    product = await client.call_tool(
        "create_products", {"design": photo_data, "product_types": ["mug"], "wait_seconds": 30}
    )
    assert product.structured_content is not None, text_of(product)
    assert product.structured_content["status"] == "completed", text_of(product)
    return Known(
        run_id=made.structured_content["run_id"],
        image_uri=image["uri"],
        png_data_url=data_url,
        character=character.structured_content["id"],
        character_image=added.structured_content["added"][0]["filename"],
        product=product.structured_content["products"][0]["product_id"],
    )


def test_the_fuzzed_tools_are_every_tool_listed() -> None:
    assert sorted(ADVERTISED) == sorted(TOOLS)


def fuzzing(name: str) -> Any:
    """The fuzz test of one tool: Hypothesis draws `drawn` from the tool's advertised schema."""
    tool = ADVERTISED[name]

    @FUZZ
    @given(drawn=arguments(tool))
    async def test(engine: Engine, client: Client, known: Known, drawn: dict[str, Any]) -> None:
        await call_and_check(engine, client, tool, known.fill(drawn))

    test.__name__ = f"test_{name}_answers_any_arguments_with_a_named_error_or_its_documented_result"
    return test


async def call_and_check(engine: Engine, client: Client, tool: Tool, args: dict[str, Any]) -> None:
    name = tool.name
    runs_before = {run.id for run in (await engine.list_runs(limit=200)).items}
    with anyio.fail_after(30):
        result = await client.call_tool(name, args)
    event("refused" if result.is_error else "done")
    if result.is_error:
        check_error(tool, args, text_of(result))
        assert {run.id for run in (await engine.list_runs(limit=200)).items} == runs_before
    else:
        check_success(tool, result)


for _name in TOOLS:
    _test = fuzzing(_name)
    globals()[_test.__name__] = _test


# --- resources ---------------------------------------------------------------------------------

RESOURCE_TEMPLATES = [
    "atelier://runs/{run_id}",
    "atelier://runs/{run_id}/images/{filename}",
    "atelier://runs/{run_id}/bundle.zip",
    "atelier://characters/{character_id}",
    "atelier://characters/{character_id}/images/{filename}",
    "atelier://products/{product_id}",
    "atelier://products/{product_id}/mockups/{filename}",
]
PART = st.one_of(
    st.sampled_from(
        [
            RUN_ID,
            UNKNOWN_ID,
            CHARACTER,
            "char-000000000000",
            "image-01.png",
            CHARACTER_IMAGE,
            PRODUCT,
            UNKNOWN_PRODUCT,
            "mockup-01-mug-white.jpg",
            *ODD_STRINGS,
        ]
    ),
    st.text(max_size=30),
)


@FUZZ
@given(template=st.sampled_from(RESOURCE_TEMPLATES), run_id=PART, filename=PART)
async def test_any_resource_uri_is_read_or_refused_as_not_found_or_invalid_params(
    client: Client, known: Known, template: str, run_id: str, filename: str
) -> None:
    # The first part names a run, a character or a product, whichever the template reads.
    parts = known.fill({"run_id": run_id, "character_id": run_id, "product_id": run_id, "filename": filename})
    uri = template.format(**{name: quote(value, safe="") for name, value in parts.items()})
    event(template)
    try:
        with anyio.fail_after(30):
            result = await client.read_resource(uri)
    except MCPError as exc:
        # -32002 (2025 protocols) or -32602 (2026-07-28): never -32603, the "internal error".
        assert exc.code in (-32002, -32602), (uri, exc.error)
        assert exc.message and "Traceback" not in exc.message and len(exc.message) < 1_000
        event("refused")
    else:
        assert len(result.contents) == 1
        event("read")
