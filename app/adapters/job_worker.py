"""The arq worker, with a faster claim of due jobs and inline jobs (docs/overrides.md).

arq 0.28 (pinned exactly) claims each job with four Redis round trips and runs every job as a
task of its own; this subclass overrides ``start_jobs``, ``_poll_iteration`` and ``close`` and
calls arq's private helpers (``_release_sem_dec_counter_on_complete``, ``_pool``,
``_queue_read_offset``, ``_handle_signals``). tests/unit/test_library_internals.py fails when an
arq release moves any of them; tests/integration/test_worker_jobs.py checks the behaviour.
Which jobs run inline and everything else about the jobs is jobs/worker.py's business.
"""

from __future__ import annotations

import asyncio
import signal
import warnings
from typing import Any

import structlog
from arq.connections import RedisSettings
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import timestamp_ms
from arq.worker import Worker

from app.adapters.queue import queue_name

log = structlog.get_logger(__name__)


def connection_options(redis_url: str, prefix: str) -> dict[str, Any]:
    """Where the worker finds its jobs: the Redis and the queue ``JobQueue`` enqueues to."""
    return {
        "redis_settings": RedisSettings.from_dsn(redis_url),
        "queue_name": queue_name(prefix),
        "health_check_key": f"{prefix}:arq:health",
    }


# arq 0.28's start_jobs claims each job with WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC: four
# round trips per job, a third of the worker's CPU when every sent message is a job. This
# script makes the same checks and the same claim for all the ids of one poll at once, and is
# just as atomic (a Lua script runs alone on the server). For the ids of inline jobs (below) it
# also returns the job's data, so they need no round trip of their own.
_CLAIM = """
local out = {}
local inline = ARGV[5]
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  if redis.call('exists', key) == 0 then
    local score = redis.call('zscore', KEYS[1], id)
    if score and tonumber(score) > 0 and tonumber(score) <= tonumber(ARGV[2]) then
      redis.call('psetex', key, ARGV[1], '1')
      local data = ''
      if inline ~= '' and string.sub(id, 1, #inline) == inline then
        data = redis.call('get', ARGV[4] .. id) or ''
      end
      out[#out + 1] = id
      out[#out + 1] = score
      out[#out + 1] = data
    end
  end
end
return out
"""

# Inline jobs: those whose ids start with ``inline_prefix`` and that call one of
# ``inline_functions``, functions that return at once (jobs/worker.py names them: the
# deliver_domain jobs, one per sent message, which only wake their domain's lane). The worker
# runs a poll's worth of them in its own loop and finishes them with one transaction, instead
# of a task, two Redis transactions and two log lines each (arq's run_job) — most of the
# worker's per-message overhead besides delivery itself. Anything unusual (no data, another
# function, an exception) goes through arq's run_job as before, retries and max_tries included.
INLINE_TIMEOUT = 5.0  # seconds an inline job may take


class BatchClaimWorker(Worker):  # type: ignore[misc]
    """arq's Worker with one Redis round trip to claim a poll's jobs instead of four per job,
    inline deliver jobs, and a shutdown that survives a job cancelled at an awkward moment."""

    async def close(self) -> None:
        """arq 0.28's close, except that a job cancelled by the shutdown while it was between
        steps (arq lets that CancelledError out of run_job) no longer skips on_shutdown: the
        delivery service still writes its pending outcomes and gives its leases back. The job
        itself is run again later, as arq intends for cancelled jobs."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    def __init__(
        self,
        *args: Any,
        inline_prefix: str = "",
        inline_functions: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._inline_functions = inline_functions
        # Inline jobs keep no result (keep_result=0), as arq's finish would not either.
        inline = bool(inline_functions) and all(
            name in self.functions and self.functions[name].keep_result_s == 0
            for name in inline_functions
        )
        self._inline_prefix = inline_prefix if inline else ""

    def _inline(self, job_id: str) -> bool:
        return bool(self._inline_prefix) and job_id.startswith(self._inline_prefix)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        wanted: list[str] = []
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            if self._inline(job_id):  # runs in this loop: takes no slot
                wanted.append(job_id)
                continue
            if self.job_counter >= self.max_jobs:  # no slot: left for a later poll
                continue
            await self.sem.acquire()  # the same slot accounting as arq's start_jobs
            self.job_counter = self.job_counter + 1
            wanted.append(job_id)
        if not wanted:
            return
        if not hasattr(self, "_claim"):
            self._claim = self.pool.register_script(_CLAIM)
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        try:
            claimed = await self._claim(
                keys=[self.queue_name],
                args=[
                    timeout_ms,
                    timestamp_ms(),
                    in_progress_key_prefix,
                    job_key_prefix,
                    self._inline_prefix,
                    *wanted,
                ],
            )
        except BaseException:
            for job_id in wanted:
                if not self._inline(job_id):
                    self._release_sem_dec_counter_on_complete()
            raise
        started: dict[str, tuple[int, bytes]] = {}
        for i in range(0, len(claimed), 3):
            started[claimed[i].decode()] = (int(float(claimed[i + 1])), claimed[i + 2])
        finished: list[str] = []
        for job_id in wanted:
            inline = self._inline(job_id)
            found = started.get(job_id)
            if found is None:  # running elsewhere, finished, or deferred meanwhile
                if not inline:
                    self._release_sem_dec_counter_on_complete()
                continue
            score, data = found
            if inline:
                if data and await self._run_inline(job_id, score, data):
                    finished.append(job_id)
                else:  # to arq's run_job after all (rare): claimed already, so run it now
                    self.tasks[job_id] = self.loop.create_task(self.run_job(job_id, score))
                continue
            t = self.loop.create_task(self.run_job(job_id, score))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t
        if finished:
            await self._finish_inline(finished)

    async def _poll_iteration(self) -> None:
        """arq reads the queue only while a slot is free; deliver jobs need none, so with every
        slot taken (long jobs) they are still read and run."""
        if self.job_counter >= self.max_jobs and self.allow_pick_jobs and self._inline_prefix:
            job_ids = await self.pool.zrangebyscore(
                self.queue_name,
                min=float("-inf"),
                max=timestamp_ms(),
                start=self._queue_read_offset,
                num=self.queue_read_limit,
            )
            await self.start_jobs(job_ids)
        await super()._poll_iteration()

    async def _run_inline(self, job_id: str, score: int, data: bytes) -> bool:
        """Run one inline job in this loop; False hands it to arq's run_job instead."""
        try:
            name, args, kwargs, _, _ = deserialize_job_raw(data, deserializer=self.job_deserializer)
        except SerializationError:
            return False
        if name not in self._inline_functions:
            return False
        ctx = {**self.ctx, "job_id": job_id, "job_try": 1, "score": score}
        try:
            async with asyncio.timeout(INLINE_TIMEOUT):
                await self.functions[name].coroutine(ctx, *args, **kwargs)
        except Exception:
            log.warning("inline job failed; arq runs it again", job_id=job_id, exc_info=True)
            return False
        self.jobs_complete += 1
        return True

    async def _finish_inline(self, job_ids: list[str]) -> None:
        """What arq's finish_job does for a finished job that keeps no result, for all of them
        in one transaction."""
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(
                *(
                    prefix + job_id
                    for job_id in job_ids
                    for prefix in (in_progress_key_prefix, retry_key_prefix, job_key_prefix)
                )
            )
            tr.zrem(abort_jobs_ss, *job_ids)
            tr.zrem(self.queue_name, *job_ids)
            await tr.execute()

    async def stop(self) -> None:
        """``close`` for a worker running inside another program's loop (`mailhub dev`, tests)."""
        with warnings.catch_warnings():
            # arq 0.28 calls redis-py's deprecated close(); harmless, and not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            await self.close()
