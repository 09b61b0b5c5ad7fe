"""SharedLookup: concurrent questions share one query, and no answer predates its question."""

from __future__ import annotations

import asyncio

import pytest

from app.batching import SharedLookup


def test_questions_asked_together_share_one_query_and_get_only_their_keys() -> None:
    queries: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int]:
        queries.append(keys)
        await asyncio.sleep(0.01)
        return {k: len(k) for k in keys if k != "missing"}

    async def main() -> list[dict[str, int]]:
        lookup = SharedLookup(fetch)
        return await asyncio.gather(
            lookup.get(["a"]), lookup.get(["bb", "a"]), lookup.get(["missing"])
        )

    assert asyncio.run(main()) == [{"a": 1}, {"bb": 2, "a": 1}, {}]
    assert queries == [["a", "bb", "missing"]]


def test_a_question_asked_during_a_query_waits_for_the_next_one() -> None:
    state = {"value": 1}
    queries: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int]:
        queries.append(keys)
        seen = state["value"]
        await asyncio.sleep(0.02)
        return dict.fromkeys(keys, seen)

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        lookup = SharedLookup(fetch)
        first = asyncio.create_task(lookup.get(["k"]))
        await asyncio.sleep(0.005)  # the first query is running now
        state["value"] = 2  # a change made before the second question...
        second = await lookup.get(["k"])
        return await first, second

    first, second = asyncio.run(main())
    assert first == {"k": 1}
    assert second == {"k": 2}  # ...is seen by it: it was not answered by the older query
    assert queries == [["k"], ["k"]]


def test_a_failed_query_fails_its_waiters_and_the_next_one_runs() -> None:
    calls = {"n": 0}

    async def fetch(keys: list[str]) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database down")
        return dict.fromkeys(keys, 7)

    async def main() -> dict[str, int]:
        lookup = SharedLookup(fetch)
        with pytest.raises(ConnectionError):
            await lookup.get(["x"])
        return await lookup.get(["x"])

    assert asyncio.run(main()) == {"x": 7}


def test_a_new_event_loop_starts_afresh_after_one_closed_mid_query() -> None:
    async def fetch(keys: list[str]) -> dict[str, int]:
        await asyncio.sleep(3600 if keys == ["stuck"] else 0)
        return dict.fromkeys(keys, 1)

    lookup = SharedLookup(fetch)

    async def abandon() -> None:
        task = asyncio.create_task(lookup.get(["stuck"]))
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(abandon())  # the loop closes with the query still running

    async def ask() -> dict[str, int]:
        return await asyncio.wait_for(lookup.get(["k"]), 5)

    assert asyncio.run(ask()) == {"k": 1}
