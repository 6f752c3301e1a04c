"""The generate form: an image request typed by a person, and its refusal field by field.

`GET <prefix>/generate` renders the form, prefilled from `?from=<run id>` (that run's request:
"edit and generate") and `?operation=` + `?source=` ("use as source" on a run page: an
`atelier://runs/<id>/images/<file>` reference, which `core.sources` reads).
`POST <prefix>/api/generate` (JSON, what the script sends) answers 201 with the new run's card
and page, or 422 naming every bad field (`problems`); `POST <prefix>/generate` (the same form
without the script) answers 303 to the run's page, or the form again (422) with each message
next to its field. Both read the fields the same way (`request_of`): values come as the form's
text, and the engine's own validation (`ImageSpec`) reads numbers from it and says what is
wrong, so the rules are the ones every door applies.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from core.engine import Engine
from core.errors import InvalidInput, RunNotFound
from core.ids import RUN_ID_RE
from core.models import OPERATIONS, Priority, Run
from core.settings import Settings
from http_compat.api import Api
from http_compat.inputs import read_json
from http_compat.studio.actions import STUDIO_DOOR
from http_compat.studio.errors import invalid
from http_compat.studio.pages import prefix_of, render
from http_compat.studio.views import card

FIELDS = (
    "operation",
    "prompt",
    "negative_prompt",
    "size",
    "width",
    "height",
    "steps",
    "cfg",
    "seed",
    "count",
    "workflow",
    "loras",
    "character",
    "character_strength",
    "source",
    "denoise",
    "scale",
    "sampler",
    "scheduler",
    "priority",
)
SIZES = [
    ("512x512", "512 × 512 square"),
    ("768x768", "768 × 768 square"),
    ("1024x1024", "1024 × 1024 square (SDXL)"),
    ("832x1216", "832 × 1216 portrait"),
    ("1216x832", "1216 × 832 landscape"),
    ("768x1344", "768 × 1344 tall"),
    ("1344x768", "1344 × 768 wide"),
]
_SIZE = re.compile(r"^(\d{2,5})\s*[x×]\s*(\d{2,5})$")
# What an operation does not use: left out, so a hidden field cannot refuse the request.
_UNUSED = {
    "txt2img": {"source", "denoise", "scale"},
    "img2img": {"width", "height", "scale"},
    "upscale": {
        "width",
        "height",
        "steps",
        "cfg",
        "count",
        "negative_prompt",
        "sampler",
        "scheduler",
        "denoise",
        "loras",
        "character",
        "character_strength",
    },
}


def request_of(form: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The image request (`submit_image`'s params) and priority a filled-in form asks for.

    Empty fields are left out (the workflow's defaults apply, a random seed is drawn); a size
    preset sets width and height; `InvalidInput` names a field the form does not have."""
    unknown = [name for name in form if name not in FIELDS]
    if unknown:
        raise InvalidInput(unknown[0][:60], "is not a field of the generate form")
    given: dict[str, Any] = {}
    for name, value in form.items():
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            given[name] = value
    size = given.pop("size", "custom")
    if size != "custom":
        match = _SIZE.fullmatch(str(size))
        if match is None:
            raise InvalidInput(
                "size", f"must be WIDTHxHEIGHT such as 1024x1024, or custom (got {str(size)[:40]!r})"
            )
        given["width"], given["height"] = int(match[1]), int(match[2])
    operation = str(given.get("operation", "txt2img"))
    for name in _UNUSED.get(operation, ()):
        given.pop(name, None)
    if isinstance(given.get("loras"), str):  # one per line or comma-separated
        given["loras"] = [part.strip() for part in re.split(r"[,\n]", given["loras"]) if part.strip()]
    priority = str(given.pop("priority", Priority.NORMAL.value))
    return given, priority


def values_of(run: Run) -> dict[str, str]:
    """The form's fields filled in with `run`'s request ("edit and generate")."""
    inputs = run.inputs
    values = {name: str(inputs[name]) for name in FIELDS if isinstance(inputs.get(name), str | int | float)}
    values.pop("character", None)
    loras = inputs.get("loras") or []
    if loras:
        values["loras"] = "\n".join(f"{lora['name']}:{lora.get('strength', 1.0):g}" for lora in loras)
    character = inputs.get("character")
    if isinstance(character, dict):
        values["character"] = character["id"]
        values["character_strength"] = f"{character['strength']:g}"
        trigger = character["trigger_word"] + ", "
        values["prompt"] = values.get("prompt", "").removeprefix(trigger)
    source = inputs.get("source")
    if isinstance(source, dict) and str(source.get("origin", "")).startswith("atelier://"):
        values["source"] = source["origin"]
    values["priority"] = run.priority.value
    return values


def add_generate(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the generate form and its two ways of submitting on `api`."""
    logged_in = settings.api_token is not None

    async def submit(form: Mapping[str, Any]) -> Run:
        params, priority = request_of(form)
        return await engine.submit_image(params, priority=priority, meta=STUDIO_DOOR)

    async def form_page(
        request: Request,
        values: Mapping[str, str],
        errors: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        prefix = prefix_of(request)
        workflows = engine.images.list_workflows()["workflows"]
        characters = await engine.characters.list()
        errors = dict(errors or {})
        shown = {name for name in errors if name in FIELDS}
        source = values.get("source", "")
        preview = None
        match = re.fullmatch(r"atelier://runs/([0-9a-z]{26})/images/([A-Za-z0-9][A-Za-z0-9_.-]*)", source)
        if match and RUN_ID_RE.fullmatch(match[1]):
            preview = f"{prefix}/runs/{match[1]}/thumbnails/{match[2]}"
        return render(
            "generate.html",
            prefix,
            status=status,
            section="generate",
            values=values,
            errors=errors,
            unplaced=[
                message if message.startswith(name) else f"{name}: {message}"
                for name, message in errors.items()
                if name not in shown
            ],
            sizes=SIZES,
            operations=OPERATIONS,
            priorities=[p.value for p in Priority],
            workflows=workflows,
            characters=characters,
            preview=preview,
            logged_in=logged_in,
        )

    @api.route("GET", "/generate", summary="The generate form", produces="text/html")
    async def generate_form(request: Request) -> Response:
        query = request.query_params
        values: dict[str, str] = {}
        from_id = query.get("from", "")
        if RUN_ID_RE.fullmatch(from_id):
            with contextlib.suppress(RunNotFound):  # deleted meanwhile: an empty form
                values = values_of(await engine.get_run(from_id))
        for name in ("operation", "source", "prompt"):
            if query.get(name):
                values[name] = query[name]
        if values.get("operation") in ("img2img", "upscale") and query.get("source"):
            values.pop("seed", None)
        return await form_page(request, values)

    @api.route(
        "POST",
        "/api/generate",
        summary="Queue an image run from the generate form's fields",
        responses={201: None},
    )
    async def generate_json(request: Request) -> Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise InvalidInput("body", "must be a JSON object of the form's fields")
        try:
            run = await submit(data)
        except InvalidInput as exc:
            raise invalid(exc) from None
        prefix = prefix_of(request)
        return JSONResponse({"run": card(run, prefix), "url": f"{prefix}/runs/{run.id}"}, status_code=201)

    @api.route(
        "POST",
        "/generate",
        summary="Queue an image run from the form, without the script",
        produces="text/html",
    )
    async def generate_post(request: Request) -> Response:
        form = await request.form()
        values = {name: str(value) for name, value in form.items() if isinstance(value, str)}
        try:
            run = await submit(values)
        except InvalidInput as exc:
            errors: dict[str, str] = {}
            for problem in exc.problems:
                field = field_of(problem.field)
                # Next to its own field a message needs no name; `loras.1.name` says which LoRA.
                errors.setdefault(field, problem.problem if field == problem.field else str(problem))
            return await form_page(request, values, errors, status=422)
        return RedirectResponse(f"{prefix_of(request)}/runs/{run.id}", status_code=303)


def field_of(name: str) -> str:
    """The form field a problem is about: `loras.0.name` is the LoRAs field."""
    return re.split(r"[.\[]", name, maxsplit=1)[0]
