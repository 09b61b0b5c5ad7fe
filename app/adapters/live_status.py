"""Per-user live events in bulk: one Redis round trip for a batch of status changes.

Same channel names as ``RedisStore.publish`` (the realtime subscriptions listen there); best
effort like it, since clients can always re-read the recipients.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from app.adapters.redis_store import RedisStore


async def publish_many(store: RedisStore, events: list[tuple[str, str]]) -> None:
    """Publish (channel, data) pairs, e.g. ("user:<id>", json), pipelined."""
    if not events:
        return
    try:
        async with store.client.pipeline(transaction=False) as pipe:
            for channel, data in events:
                pipe.publish(store.key("ev", channel), data)
            await pipe.execute()
    except RedisError:
        pass
