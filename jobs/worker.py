"""The arq worker: one process runs every job module's functions and cron jobs.

Each capability keeps its jobs in its own module exporting ``FUNCTIONS`` and ``CRON_JOBS``;
this file only assembles them. Jobs are thin: they call one service each and are idempotent
(arq is at-least-once; MongoDB says what still has to happen).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
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
from app.background import stop_task
from app.bootstrap import build_system
from app.config import Settings
from jobs import campaigns, delivery, events, indexing, maintenance, spam

JOB_MODULES: list[Any] = [maintenance, indexing, delivery, spam, events, campaigns]

log = structlog.get_logger(__name__)

JOB_TIMEOUT_SECONDS = 120  # shorter than any lease a job takes (delivery leases are 5 min)


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

# Inline jobs: those whose ids start with this prefix are deliver_domain jobs (outbox.job_id),
# one per sent message. The function only wakes its domain's lane and returns at once, so the
# worker runs a poll's worth of them in its own loop and finishes them with one transaction,
# instead of a task, two Redis transactions and two log lines each (arq's run_job) — most of
# the worker's per-message overhead besides delivery itself. Anything unusual (no data, another
# function, an exception) goes through arq's run_job as before, retries and max_tries included.
INLINE_PREFIX = "deliver:"
INLINE_FUNCTIONS = frozenset({"deliver_domain"})
INLINE_TIMEOUT = 5.0  # seconds an inline job may take (deliver_domain returns at once)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Inline jobs keep no result (keep_result=0), as arq's finish would not either.
        inline = all(
            name in self.functions and self.functions[name].keep_result_s == 0
            for name in INLINE_FUNCTIONS
        )
        self._inline_prefix = INLINE_PREFIX if inline else ""

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
        if name not in INLINE_FUNCTIONS:
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


def _collect(name: str) -> list[Any]:
    return [item for module in JOB_MODULES for item in getattr(module, name, [])]


async def startup(ctx: dict[str, Any]) -> None:
    if "system" not in ctx:
        ctx["system"] = await build_system(ctx["settings"])
        ctx["owns_system"] = True


async def shutdown(ctx: dict[str, Any]) -> None:
    if ctx.pop("owns_system", False):
        await ctx["system"].close()


def worker_options(settings: Settings, system: Any = None) -> dict[str, Any]:
    from arq.connections import RedisSettings

    assert settings.redis_url
    ctx: dict[str, Any] = {"settings": settings}
    if system is not None:
        ctx["system"] = system
    return {
        "functions": _collect("FUNCTIONS"),
        "cron_jobs": _collect("CRON_JOBS"),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": queue_name(settings.redis_prefix),
        "health_check_key": f"{settings.redis_prefix}:arq:health",
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_timeout": JOB_TIMEOUT_SECONDS,
        "max_jobs": 20,
        # ids read per poll; inline deliver jobs take no slot, so a backlog of them (one per
        # sent message) drains in a few polls and never holds cron jobs (the sweep) back long
        "queue_read_limit": 500,
        # arq polls Redis for due jobs; 0.5 s (its default) would be most of the time from a
        # change to "searchable" or to the first delivery attempt. 50 ms costs little.
        "poll_delay": 0.05,
        "keep_result": 60,
        "ctx": ctx,
    }


def run_worker(settings: Settings) -> int:
    """`mailhub worker`: runs until SIGINT/SIGTERM; arq lets in-flight jobs finish first."""
    from app.logs import configure_logging

    configure_logging(settings)
    if settings.metrics_port:  # worker metrics: /metrics
        from app.services import monitoring

        monitoring.serve(settings.metrics_port, settings.http_host)
    worker = BatchClaimWorker(**worker_options(settings))
    worker.run()
    return 0


async def start_embedded_worker(
    settings: Settings, system: Any = None
) -> Callable[[], Awaitable[None]]:
    """A worker inside the current event loop (`mailhub dev`, tests); returns its stop function."""
    worker = BatchClaimWorker(**worker_options(settings, system), handle_signals=False)
    task = asyncio.create_task(worker.async_run())

    async def stop() -> None:
        import warnings

        with warnings.catch_warnings():
            # arq 0.28 calls redis-py's deprecated close(); harmless, and not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        await stop_task(task)

    return stop
