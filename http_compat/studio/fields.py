"""Reading the studio's form bodies, and refusing them field by field.

The characters, products and status pages send JSON objects from their forms. A refusal names
each field at fault, so the page shows each message next to its input: Atelier's
`{"error", "message"}` envelope plus `field` (the first) and `problems` (`[{"field",
"message"}]`). Bodies are read here rather than through `Api(body=...)`: the engine's own
checks (`InvalidInput`) are the ones that name fields, and one shape of refusal is simpler for
the page than two.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.errors import FieldProblem, InvalidInput
from http_compat.errors import ApiError
from http_compat.inputs import read_json
from http_compat.studio.errors import invalid, studio_error


def refused(exc: InvalidInput, status: int = 422) -> Response:
    """`exc` as the studio's field-by-field refusal (`errors.invalid`)."""
    return studio_error(invalid(exc, status))


def refusal(status: int, message: str, problems: tuple[FieldProblem, ...] | list[FieldProblem]) -> Response:
    """A refusal of `problems` (each a field and what is wrong with it) with `status`."""
    error = invalid(InvalidInput.of(problems), status)
    error.message = message
    if status == 409:
        error.code = "CONFLICT"
    return studio_error(error)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (`ApiError` 400/413/415 otherwise)."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="INVALID_PARAMETERS")
    return data


def text_field(data: dict[str, Any], name: str) -> str | None:
    """`data[name]` if it is text (None when absent or null); `InvalidInput` for another type."""
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(name, "must be text")
