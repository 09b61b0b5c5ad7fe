"""The pub/sub hub on a real Redis: a commit's events go out in one pipeline, each to its owner's
channel only, in order; publishing stays best effort when Redis is gone."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from app.adapters.pubsub import PubSubHub


def _event(n: int) -> dict[str, Any]:
    return {"type": "mailbox", "kind": "created", "itemId": f"{n:024d}", "state": str(n)}


async def _drain(queue: asyncio.Queue[dict[str, Any]], count: int) -> list[str]:
    return [(await asyncio.wait_for(queue.get(), 10))["state"] for _ in range(count)]


async def test_a_batch_of_events_reaches_each_owner_in_order(settings) -> None:
    hub = PubSubHub(settings.redis_url, settings.redis_prefix)
    try:
        async with hub.listen("alice") as alice, hub.listen("bob") as bob:
            await asyncio.sleep(0.2)  # the subscriptions are on the server
            owners = ["alice", "bob", "alice", "alice", "bob", "carol"]
            await hub.publish_many([(owner, _event(n)) for n, owner in enumerate(owners)])
            assert await _drain(alice.queue, 3) == ["0", "2", "3"]
            assert await _drain(bob.queue, 2) == ["1", "4"]
            await hub.publish("bob", _event(9))  # one event is a batch of one
            assert await _drain(bob.queue, 1) == ["9"]
            await asyncio.sleep(0.2)
            assert alice.queue.empty() and bob.queue.empty()  # carol's went to carol's only
    finally:
        await hub.close()


async def test_publishing_without_redis_is_logged_not_raised() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = PubSubHub(f"redis://127.0.0.1:{port}/0", "gone")
    try:
        await hub.publish_many([("alice", _event(1)), ("bob", _event(2))])
        await hub.publish_many([])
    finally:
        await hub.close()
