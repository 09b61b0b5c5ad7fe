"""The arq job queue: the fast path only. MongoDB holds what must happen; a sweep re-enqueues
anything a lost job missed (DESIGN.md §6), so enqueue failures are logged, never raised.

``enqueue_many`` enqueues many jobs in one Redis round trip: arq 0.28's ``enqueue_job`` (pinned
exactly) spends three (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC) on each, and a campaign batch wakes
a lane for each of its few dozen destination domains. It writes what ``enqueue_job`` writes (the
job serialized by arq's ``serialize_job``, the same key, score and expiry) and skips an id whose
job or result exists, as it does (docs/overrides.md; tests/integration/test_enqueue_many.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import structlog
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)


ENQUEUE_CHUNK = 500  # jobs a script call enqueues at most (the script runs alone on Redis)

# arq 0.28's enqueue_job for each job: skipped when its job key or result key exists (a duplicate
# id), else the job stored with its expiry and added to the queue at its score. Atomic as arq's
# WATCH/MULTI is, since a script runs alone on the server. KEYS: the queue, then each job's key
# and result key; ARGV: each job's id, score, expiry (ms) and data. Answers 1 or 0 per job.
_ENQUEUE = """
local out = {}
for j = 0, #ARGV / 4 - 1 do
  local job_key, result_key = KEYS[2 * j + 2], KEYS[2 * j + 3]
  if redis.call('exists', job_key, result_key) == 0 then
    redis.call('psetex', job_key, ARGV[4 * j + 3], ARGV[4 * j + 4])
    redis.call('zadd', KEYS[1], ARGV[4 * j + 2], ARGV[4 * j + 1])
    out[j + 1] = 1
  else
    out[j + 1] = 0
  end
end
return out
"""


class QueuedJob(NamedTuple):
    """A job for ``enqueue_many``: what ``enqueue(function, *args, job_id=, defer_until=)``
    takes."""

    function: str
    args: tuple[Any, ...]
    job_id: str
    defer_until: datetime | None = None


def queue_name(prefix: str) -> str:
    return f"{prefix}:arq:queue"


class JobQueue:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.settings = RedisSettings.from_dsn(redis_url)
        self.settings.conn_timeout = 3
        self.settings.conn_retries = 1
        self.name = queue_name(prefix)
        self._pool: ArqRedis | None = None
        self._enqueue_script: AsyncScript | None = None

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

    async def enqueue_many(self, jobs: list[QueuedJob]) -> int:
        """Enqueue ``jobs`` as ``enqueue`` would, ``ENQUEUE_CHUNK`` a Redis round trip; a
        duplicate id (a job or result that exists, or an earlier one of ``jobs``) is skipped.
        Answers how many were enqueued (0 when Redis failed: logged, the sweep picks them up)."""
        enqueued = 0
        try:
            pool = await self.pool()
            if self._enqueue_script is None:
                self._enqueue_script = pool.register_script(_ENQUEUE)
            for start in range(0, len(jobs), ENQUEUE_CHUNK):
                keys, args = self._script_input(pool, jobs[start : start + ENQUEUE_CHUNK])
                enqueued += sum(await self._enqueue_script(keys=keys, args=args))
        except (RedisError, OSError, ConnectionError) as e:
            log.warning(
                "enqueue failed; the sweep will pick it up",
                functions=sorted({j.function for j in jobs}),
                jobs=len(jobs),
                error=str(e),
            )
        return enqueued

    def _script_input(self, pool: ArqRedis, jobs: list[QueuedJob]) -> tuple[list[str], list[Any]]:
        """The script's keys and arguments for ``jobs``, each as arq's ``enqueue_job`` makes
        them: the score its defer time (else now), the expiry a day past that, its data
        serialized by arq (function, args, no kwargs, no try, the enqueue time)."""
        now = timestamp_ms()
        keys: list[str] = [self.name]
        args: list[Any] = []
        for job in jobs:
            score = to_unix_ms(job.defer_until) if job.defer_until is not None else now
            expires = max(score - now + pool.expires_extra_ms, 1)
            data = serialize_job(
                job.function, job.args, {}, None, now, serializer=pool.job_serializer
            )
            keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
            args += [job.job_id, score, expires, data]
        return keys, args

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
            self._enqueue_script = None
