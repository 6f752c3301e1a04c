"""A request with several bad fields is refused once, naming every one of them, at the engine
(which every front door goes through); callers that read only the first field keep working.
"""

from __future__ import annotations

import pytest

from core.engine import Engine
from core.errors import FieldProblem, InvalidInput

pytestmark = pytest.mark.anyio


async def test_every_bad_field_is_named_in_one_error_and_nothing_is_recorded(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        await engine.submit_image({"prompt": "ok", "width": 100, "steps": 0, "count": "many"})
    error = caught.value
    assert error.problems == (
        FieldProblem("width", "must be a multiple of 8 in 64..4096 (got 100)"),
        FieldProblem("steps", "must be an integer in 1..150 (got 0)"),
        FieldProblem("count", "must be an integer in 1..16 (got 'many')"),
    )
    assert str(error) == (
        "width: must be a multiple of 8 in 64..4096 (got 100); "
        "steps: must be an integer in 1..150 (got 0); "
        "count: must be an integer in 1..16 (got 'many')"
    )
    # What callers that handle one field at a time read: the first.
    assert (error.field, error.problem) == ("width", "must be a multiple of 8 in 64..4096 (got 100)")
    assert (await engine.list_runs()).items == []


async def test_an_unknown_field_is_named_beside_the_bad_values(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        await engine.submit_image({"prompt": "ok", "style": "noir", "cfg": 99})
    assert str(caught.value) == "cfg: must be a number in 0..30 (got 99); style: is not a known parameter"


async def test_a_long_list_is_shown_by_its_length(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        await engine.submit_image({"prompt": "ok", "loras": [f"l{i}.safetensors" for i in range(9)]})
    assert caught.value.field == "loras"
    assert caught.value.problem.endswith("(got 9 items)")


async def test_a_batch_names_every_bad_field_of_an_item(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        await engine.submit_batch([{"prompt": "fine"}, {"prompt": "bad", "width": 100, "steps": 0}])
    assert [p.field for p in caught.value.problems] == ["items[1].width", "items[1].steps"]
    assert (await engine.list_runs()).items == []
