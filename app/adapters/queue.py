"""The arq job queue: the fast path only. MongoDB holds what must happen; a sweep re-enqueues
anything a lost job missed (DESIGN.md §6), so enqueue failures are logged, never raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)


def queue_name(prefix: str) -> str:
    return f"{prefix}:arq:queue"


async def in_waves(calls: Iterable[Callable[[], Awaitable[Any]]], at_once: int) -> None:
    """Run ``calls`` (enqueues, mostly) ``at_once`` at a time: one after the other they are a
    Redis round trip each on the caller's path; all at once, a connection each."""
    todo = list(calls)
    for start in range(0, len(todo), at_once):
        await asyncio.gather(*(call() for call in todo[start : start + at_once]))


class JobQueue:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.settings = RedisSettings.from_dsn(redis_url)
        self.settings.conn_timeout = 3
        self.settings.conn_retries = 1
        self.name = queue_name(prefix)
        self._pool: ArqRedis | None = None

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            self._pool = await create_pool(self.settings, default_queue_name=self.name)
        return self._pool

    async def enqueue(
        self,
        function: str,
        *args: Any,
        job_id: str | None = None,
        defer_until: datetime | None = None,
    ) -> bool:
        """Enqueue once per ``job_id`` (arq ignores a duplicate id while the job exists)."""
        try:
            pool = await self.pool()
            job = await pool.enqueue_job(
                function, *args, _job_id=job_id, _defer_until=defer_until, _queue_name=self.name
            )
            return job is not None
        except (RedisError, OSError, ConnectionError) as e:
            log.warning(
                "enqueue failed; the sweep will pick it up", function=function, error=str(e)
            )
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
