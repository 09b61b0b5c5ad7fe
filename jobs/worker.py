"""The arq worker: one process runs every job module's functions and cron jobs.

Each capability keeps its jobs in its own module exporting ``FUNCTIONS`` and ``CRON_JOBS``;
this file only assembles them. Jobs are thin: they call one service each and are idempotent
(arq is at-least-once; MongoDB says what still has to happen).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from app import loops
from app.background import stop_task
from app.bootstrap import build_system, job_worker
from app.config import Settings
from jobs import campaigns, delivery, events, indexing, maintenance, sending, spam

JOB_MODULES: list[Any] = [maintenance, indexing, delivery, spam, events, campaigns, sending]

JOB_TIMEOUT_SECONDS = 120  # shorter than any lease a job takes (delivery leases are 5 min)

# Run in the worker's own poll loop (app/adapters/job_worker.py): the deliver_domain jobs, one
# per sent message (ids from delivery/outbox.job_id), which only wake their domain's lane and
# return at once. Inline jobs keep no result (deliver_domain's keep_result is 0).
INLINE_PREFIX = "deliver:"
INLINE_FUNCTIONS = frozenset({"deliver_domain"})


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
    """arq's worker settings: the jobs, their hooks and limits (the queue's connection is the
    adapter's: ``app.bootstrap.job_worker``)."""
    ctx: dict[str, Any] = {"settings": settings}
    if system is not None:
        ctx["system"] = system
    return {
        "functions": _collect("FUNCTIONS"),
        "cron_jobs": _collect("CRON_JOBS"),
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
        "inline_prefix": INLINE_PREFIX,
        "inline_functions": INLINE_FUNCTIONS,
    }


def run_worker(settings: Settings) -> int:
    """`mailhub worker`: runs until SIGINT/SIGTERM; arq lets in-flight jobs finish first."""
    from app.logs import configure_logging

    configure_logging(settings)
    if settings.metrics_port:  # worker metrics: /metrics
        from app.services import monitoring

        monitoring.serve(settings.metrics_port, settings.http_host)
    # arq's Worker takes the current loop when it is made (asyncio.get_event_loop())
    loop = loops.loop_factory(settings.event_loop)()
    asyncio.set_event_loop(loop)
    worker = job_worker(settings, worker_options(settings))
    print(
        f"mailhub worker started (pid {os.getpid()}, event loop {loops.name_of(loop)})", flush=True
    )
    worker.run()
    return 0


async def start_embedded_worker(
    settings: Settings, system: Any = None
) -> Callable[[], Awaitable[None]]:
    """A worker inside the current event loop (`mailhub dev`, tests); returns its stop function."""
    worker = job_worker(settings, worker_options(settings, system), handle_signals=False)
    task = asyncio.create_task(worker.async_run())

    async def stop() -> None:
        await worker.stop()
        await stop_task(task)

    return stop
