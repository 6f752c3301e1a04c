"""The memory budget renders reserve from: who runs together, who waits, and in what order."""

from __future__ import annotations

import anyio
import pytest

from core.memory import MemoryBudget, release_free_heap

pytestmark = pytest.mark.anyio


async def hold(budget: MemoryBudget, name: str, nbytes: int, log: list[str], release: anyio.Event) -> None:
    async with budget.reserve(nbytes):
        log.append(name)
        await release.wait()
    log.append(f"-{name}")


async def settle() -> None:
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def test_reservations_that_fit_run_together_and_the_rest_wait_for_room() -> None:
    budget = MemoryBudget(100)
    log: list[str] = []
    first, second, third = anyio.Event(), anyio.Event(), anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(hold, budget, "a", 60, log, first)
            await settle()
            group.start_soon(hold, budget, "b", 40, log, second)
            await settle()
            group.start_soon(hold, budget, "c", 30, log, third)
            await settle()
            assert log == ["a", "b"]
            assert budget.used == 100
            first.set()
            await settle()
            assert log == ["a", "b", "-a", "c"]
            assert budget.used == 70
            second.set()
            third.set()
    assert budget.used == 0


async def test_a_reservation_bigger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    log: list[str] = []
    big, small = anyio.Event(), anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(hold, budget, "huge", 10_000, log, big)
            await settle()
            group.start_soon(hold, budget, "small", 1, log, small)
            await settle()
            assert log == ["huge"]
            big.set()
            small.set()
    assert log == ["huge", "-huge", "small", "-small"]


async def test_waiting_reservations_are_served_in_order_so_big_ones_are_not_starved() -> None:
    budget = MemoryBudget(100)
    log: list[str] = []
    events = {name: anyio.Event() for name in ("a", "big", "small")}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(hold, budget, "a", 50, log, events["a"])
            await settle()
            group.start_soon(hold, budget, "big", 80, log, events["big"])
            await settle()
            group.start_soon(hold, budget, "small", 10, log, events["small"])  # would fit, but queues
            await settle()
            assert log == ["a"]
            events["a"].set()
            await settle()
            assert log == ["a", "-a", "big", "small"]
            events["big"].set()
            events["small"].set()


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    budget = MemoryBudget(100)
    log: list[str] = []
    first, never = anyio.Event(), anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(hold, budget, "a", 100, log, first)
            await settle()
            with anyio.CancelScope() as waiting:
                waiting.cancel()
                await hold(budget, "cancelled", 50, log, never)
            group.start_soon(hold, budget, "b", 100, log, first)
            first.set()
    assert log == ["a", "-a", "b", "-b"]
    assert budget.used == 0


def test_giving_free_heap_back_is_safe_to_call_anywhere() -> None:
    release_free_heap()
    release_free_heap()
