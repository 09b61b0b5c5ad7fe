"""The arq worker against a real Redis: deliver jobs run inline and are finished in bulk;
anything unusual still goes through arq's own run_job (retries, max_tries)."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections import Counter
from typing import Any

from arq.connections import create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

from app.adapters.job_worker import BatchClaimWorker, connection_options
from app.background import stop_task
from jobs import delivery as jobs_delivery
from jobs.worker import worker_options


class _Delivery:
    """Records the calls the jobs make; ``fail`` says how often an id raises first."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail = dict(fail or {})
        self.sweeps = 0

    async def deliver_domain(self, message_id: str, domain: str) -> dict[str, Any]:
        self.calls[message_id] += 1
        if self.fail.get(message_id, 0) > 0:
            self.fail[message_id] -= 1
            raise RuntimeError("delivery is shutting down")
        return {"domain": domain}

    async def sweep(self, *, paced: bool = False) -> dict[str, int]:
        self.sweeps += 1
        return {}


class _System:
    def __init__(self, delivery: _Delivery) -> None:
        self.delivery = delivery


class _Worker(BatchClaimWorker):
    """Notes which jobs went through arq's own run_job."""

    async def run_job(self, job_id: str, score: int) -> None:
        self.through_arq = [*getattr(self, "through_arq", []), job_id]
        await super().run_job(job_id, score)


def _options(settings: Any, delivery: _Delivery) -> dict[str, Any]:
    options = {
        **connection_options(settings.redis_url, settings.redis_prefix),
        **worker_options(settings, _System(delivery)),
    }
    # The delivery sweep only (no other service here), copied: arq keeps a cron job's next run
    # on the object, and an earlier worker in this process would have used up run_at_startup.
    options["cron_jobs"] = [dataclasses.replace(c, next_run=None) for c in jobs_delivery.CRON_JOBS]
    return options


async def _run_burst(settings: Any, delivery: _Delivery, enqueue: list[tuple[str, str]]) -> Any:
    options = _options(settings, delivery)
    pool = await create_pool(options["redis_settings"], default_queue_name=options["queue_name"])
    for message_id, domain in enqueue:
        await pool.enqueue_job(
            "deliver_domain", message_id, domain, _job_id=f"deliver:{message_id}:{domain}"
        )
    worker = _Worker(**options, burst=True, handle_signals=False)
    await worker.async_run()
    with warnings.catch_warnings():  # arq 0.28 calls redis-py's deprecated close()
        warnings.simplefilter("ignore", DeprecationWarning)
        await worker.close()
    return worker, pool, options["queue_name"]


async def _leftovers(pool: Any, queue: str, ids: list[str]) -> list[str]:
    keys = [p + i for i in ids for p in (in_progress_key_prefix, retry_key_prefix, job_key_prefix)]
    left = [k for k, there in zip(keys, [await pool.exists(k) for k in keys], strict=True) if there]
    return left + [i for i in ids if await pool.zscore(queue, i) is not None]


async def test_deliver_jobs_run_once_each_and_leave_nothing_behind(settings) -> None:  # type: ignore[no-untyped-def]
    delivery = _Delivery()
    wanted = [(f"m{n:03d}", f"d{n % 7}.test") for n in range(120)]
    worker, pool, queue = await _run_burst(settings, delivery, wanted)
    try:
        assert delivery.calls == Counter({m: 1 for m, _ in wanted})
        assert worker.jobs_complete >= len(wanted) and worker.jobs_failed == 0
        assert await _leftovers(pool, queue, [f"deliver:{m}:{d}" for m, d in wanted]) == []
        assert delivery.sweeps >= 1  # the startup cron job still runs through arq's run_job
        assert [j for j in worker.through_arq if j.startswith("deliver:")] == []
    finally:
        await pool.aclose()


async def test_an_inline_job_that_fails_is_run_again_by_arq(settings) -> None:  # type: ignore[no-untyped-def]
    # m-flaky fails once (inline) and succeeds under arq's run_job; m-broken always fails:
    # arq counts its try, records the failure and removes it, as for any other job.
    delivery = _Delivery(fail={"m-flaky": 1, "m-broken": 100})
    wanted = [("m-ok", "a.test"), ("m-flaky", "a.test"), ("m-broken", "b.test")]
    worker, pool, queue = await _run_burst(settings, delivery, wanted)
    try:
        assert delivery.calls["m-ok"] == 1
        assert delivery.calls["m-flaky"] == 2
        assert delivery.calls["m-broken"] == 2  # inline, then once by arq (a plain failure)
        assert worker.jobs_failed == 1
        assert sorted(j for j in worker.through_arq if j.startswith("deliver:")) == [
            "deliver:m-broken:b.test",
            "deliver:m-flaky:a.test",
        ]
        assert await _leftovers(pool, queue, [f"deliver:{m}:{d}" for m, d in wanted]) == []
    finally:
        await pool.aclose()


async def test_a_job_another_worker_holds_is_left_alone(settings) -> None:  # type: ignore[no-untyped-def]
    options = _options(settings, _Delivery())
    pool = await create_pool(options["redis_settings"], default_queue_name=options["queue_name"])
    try:
        await pool.enqueue_job("deliver_domain", "m-held", "a.test", _job_id="deliver:m-held:a")
        await pool.set(in_progress_key_prefix + "deliver:m-held:a", b"1", px=60_000)
        worker = BatchClaimWorker(**options, handle_signals=False)
        worker._pool = pool
        await worker.start_jobs([b"deliver:m-held:a"])
        assert worker.ctx["system"].delivery.calls == Counter()
        assert await pool.zscore(options["queue_name"], "deliver:m-held:a") is not None
        assert worker.tasks == {}  # nor handed to arq's run_job
    finally:
        await pool.aclose()


async def test_deliver_jobs_take_no_slot_from_the_jobs_arq_runs(settings) -> None:  # type: ignore[no-untyped-def]
    """A job holding the only slot does not hold back deliver jobs (one per sent message)."""
    release = asyncio.Event()

    class _SlowSweep(_Delivery):
        async def sweep(self, *, paced: bool = False) -> dict[str, int]:
            self.sweeps += 1
            await release.wait()
            return {}

    delivery = _SlowSweep()
    options = {**_options(settings, delivery), "max_jobs": 1}
    options["ctx"]["system"] = _System(delivery)
    pool = await create_pool(options["redis_settings"], default_queue_name=options["queue_name"])
    worker = _Worker(**options, handle_signals=False)
    running = asyncio.create_task(worker.async_run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not delivery.sweeps:  # the start-up sweep holds the only slot
            assert asyncio.get_running_loop().time() < deadline, "the sweep never started"
            await asyncio.sleep(0.02)
        for n in range(50):
            await pool.enqueue_job("deliver_domain", f"m{n}", "a.test", _job_id=f"deliver:m{n}:a")
        while sum(delivery.calls.values()) < 50:
            assert asyncio.get_running_loop().time() < deadline, "deliver jobs waited for a slot"
            await asyncio.sleep(0.02)
        assert delivery.sweeps == 1 and not release.is_set()  # still holding its slot
    finally:
        release.set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        await stop_task(running)
        await pool.aclose()
