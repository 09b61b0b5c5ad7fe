"""``JobQueue.enqueue_many`` against a real Redis: what it stores is what arq's own
``enqueue_job`` stores, duplicate ids are skipped as arq skips them, the jobs run in the real
worker, and a Redis that is down is logged, not raised (docs/overrides.md)."""

from __future__ import annotations

import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import deserialize_job
from arq.utils import to_unix_ms

from app.adapters.job_worker import BatchClaimWorker
from app.adapters.queue import JobQueue, QueuedJob
from tests.integration.test_worker_jobs import _Delivery, _leftovers, _options


async def _stored(pool, queue: str, job_id: str) -> tuple[dict, float, int]:  # type: ignore[no-untyped-def]
    """(the job's data, less its enqueue time; its score; its expiry in ms)."""
    job = deserialize_job(await pool.get(job_key_prefix + job_id))
    data = {k: v for k, v in job.__dict__.items() if k != "enqueue_time"}
    return data, await pool.zscore(queue, job_id), await pool.pttl(job_key_prefix + job_id)


async def test_it_stores_what_arqs_enqueue_job_stores(settings) -> None:  # type: ignore[no-untyped-def]
    queue = JobQueue(settings.redis_url, settings.redis_prefix)
    pool = await queue.pool()
    later = datetime.now(UTC) + timedelta(minutes=5)
    try:
        await pool.enqueue_job("deliver_domain", "m1", "a.test", _job_id="arq-now")
        await pool.enqueue_job(
            "deliver_domain", "m1", "a.test", _job_id="arq-later", _defer_until=later
        )
        assert (
            await queue.enqueue_many(
                [
                    QueuedJob("deliver_domain", ("m1", "a.test"), "ours-now"),
                    QueuedJob("deliver_domain", ("m1", "a.test"), "ours-later", later),
                ]
            )
            == 2
        )
        for when in ("now", "later"):
            theirs, their_score, their_ttl = await _stored(pool, queue.name, f"arq-{when}")
            ours, our_score, our_ttl = await _stored(pool, queue.name, f"ours-{when}")
            assert ours == theirs and theirs["function"] == "deliver_domain"
            assert theirs["args"] == ("m1", "a.test") and theirs["kwargs"] == {}
            assert abs(our_score - their_score) < 1_000  # now: within a second of arq's
            assert abs(our_ttl - their_ttl) < 1_000  # a day past the score, as arq's
        assert await pool.zscore(queue.name, "ours-later") == to_unix_ms(later)  # its defer time
    finally:
        await queue.close()


async def test_an_id_that_is_queued_or_has_a_result_is_skipped_as_arq_skips_it(settings) -> None:  # type: ignore[no-untyped-def]
    queue = JobQueue(settings.redis_url, settings.redis_prefix)
    pool = await queue.pool()
    try:
        await pool.enqueue_job("deliver_domain", "old", "a.test", _job_id="queued")
        await pool.set(result_key_prefix + "finished", b"x", px=60_000)  # kept result
        jobs = [
            QueuedJob("deliver_domain", ("new", "a.test"), "queued"),
            QueuedJob("deliver_domain", ("new", "a.test"), "finished"),
            QueuedJob("deliver_domain", ("new", "a.test"), "fresh"),
            QueuedJob("deliver_domain", ("again", "a.test"), "fresh"),  # twice in one call
        ]
        assert await queue.enqueue_many(jobs) == 1
        assert (await _stored(pool, queue.name, "queued"))[0]["args"] == ("old", "a.test")
        assert not await pool.exists(job_key_prefix + "finished")
        assert await pool.zscore(queue.name, "finished") is None
        assert (await _stored(pool, queue.name, "fresh"))[0]["args"] == ("new", "a.test")
        # arq's own enqueue_job now refuses the ids enqueue_many took
        assert await pool.enqueue_job("deliver_domain", "x", "a.test", _job_id="fresh") is None
        assert await queue.enqueue_many([]) == 0
    finally:
        await queue.close()


async def test_more_jobs_than_a_call_takes_are_all_enqueued_and_run_once(  # type: ignore[no-untyped-def]
    settings, monkeypatch
) -> None:
    monkeypatch.setattr("app.adapters.queue.ENQUEUE_CHUNK", 7)  # several script calls
    queue = JobQueue(settings.redis_url, settings.redis_prefix)
    wanted = [(f"m{n:03d}", f"d{n % 5}.test") for n in range(40)]
    jobs = [QueuedJob("deliver_domain", (m, d), f"deliver:{m}:{d}") for m, d in wanted]
    delivery = _Delivery()
    options = _options(settings, delivery)
    worker = BatchClaimWorker(**options, burst=True, handle_signals=False)
    try:
        assert await queue.enqueue_many(jobs) == 40
        await worker.async_run()
        assert delivery.calls == Counter({m: 1 for m, _ in wanted})
        pool = await queue.pool()
        assert await _leftovers(pool, options["queue_name"], [j.job_id for j in jobs]) == []
    finally:
        with warnings.catch_warnings():  # arq 0.28 calls redis-py's deprecated close()
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        await queue.close()


async def test_a_redis_that_is_down_is_logged_and_answers_none_enqueued(capsys) -> None:  # type: ignore[no-untyped-def]
    queue = JobQueue("redis://127.0.0.1:1/0", "down")  # nothing listens on port 1
    jobs = [QueuedJob("deliver_domain", ("m1", "a.test"), "deliver:m1:a.test")]
    assert await queue.enqueue_many(jobs) == 0
    assert "enqueue failed; the sweep will pick it up" in capsys.readouterr().out
    await queue.close()
