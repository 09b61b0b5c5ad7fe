"""Which delivery jobs are missing from the arq queue (the sweep's cheap pre-check).

The sweep re-enqueues work MongoDB says is due. Most of the time its job is still waiting in
Redis, and arq would refuse the duplicate anyway, but each refused enqueue costs a WATCH/MULTI
round trip; one pipelined EXISTS per id is much cheaper when the backlog is large.
"""

from __future__ import annotations

from arq.constants import job_key_prefix
from redis.exceptions import RedisError

from app.adapters.queue import JobQueue


async def missing_jobs(queue: JobQueue, job_ids: list[str]) -> list[str]:
    """The ids among ``job_ids`` that have no queued or running job; all of them on error."""
    if not job_ids:
        return []
    try:
        pool = await queue.pool()
        async with pool.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(job_key_prefix + job_id)
            found = await pipe.execute()
    except (RedisError, OSError):
        return list(job_ids)
    return [job_id for job_id, exists in zip(job_ids, found, strict=True) if not exists]
