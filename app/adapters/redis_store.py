"""Redis: rate-limit counters and per-user event channels.

Counters are fixed windows keyed by the window start, so every api/worker process shares the
same budget. Redis is allowed to lose these (DESIGN.md §6): a lost counter only forgives a
little, it never loses mail.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.domain.errors import ServiceUnavailable


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_seconds: int


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=3,
            socket_connect_timeout=3,
            health_check_interval=30,
        )
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def hit(self, name: str, limit: int, window_seconds: int, cost: int = 1) -> Verdict:
        """Count ``cost`` against ``name`` in the current window; refuse past ``limit``."""
        now = time.time()
        window = int(now // window_seconds)
        key = self.key("rl", name, str(window))
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, cost)
                pipe.expire(key, window_seconds + 5)
                count, _ = await pipe.execute()
        except RedisError as e:
            raise ServiceUnavailable("rate limiter unavailable", retry_after_seconds=2) from e
        if int(count) > limit:
            retry = math.ceil((window + 1) * window_seconds - now)
            return Verdict(False, max(1, retry))
        return Verdict(True, 0)

    async def peek(self, name: str, window_seconds: int) -> int:
        window = int(time.time() // window_seconds)
        try:
            value = await self.client.get(self.key("rl", name, str(window)))
        except RedisError as e:
            raise ServiceUnavailable("rate limiter unavailable", retry_after_seconds=2) from e
        return int(value or 0)

    async def reset(self, name: str, window_seconds: int) -> None:
        window = int(time.time() // window_seconds)
        try:
            await self.client.delete(self.key("rl", name, str(window)))
        except RedisError:
            pass

    async def publish(self, channel: str, data: bytes | str) -> None:
        """Best effort: events are eventually consistent (clients resync with `changes`)."""
        try:
            await self.client.publish(self.key("ev", channel), data)
        except RedisError:
            pass
