"""The arq worker: one process runs every job module's functions and cron jobs.

Each capability keeps its jobs in its own module exporting ``FUNCTIONS`` and ``CRON_JOBS``;
this file only assembles them. Jobs are thin: they call one service each and are idempotent
(arq is at-least-once; MongoDB says what still has to happen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from arq.worker import Worker

from app.adapters.queue import queue_name
from app.bootstrap import build_system
from app.config import Settings
from jobs import delivery, indexing, maintenance, spam

JOB_MODULES: list[Any] = [maintenance, indexing, delivery, spam]

JOB_TIMEOUT_SECONDS = 120  # shorter than any lease a job takes (delivery leases are 5 min)


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
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(
            settings.metrics_port, addr=settings.http_host
        )  # worker metrics: /metrics
    worker = Worker(**worker_options(settings))
    worker.run()
    return 0


async def start_embedded_worker(
    settings: Settings, system: Any = None
) -> Callable[[], Awaitable[None]]:
    """A worker inside the current event loop (`mailhub dev`, tests); returns its stop function."""
    worker = Worker(**worker_options(settings, system), handle_signals=False)
    task = asyncio.create_task(worker.async_run())

    async def stop() -> None:
        import warnings

        with warnings.catch_warnings():
            # arq 0.28 calls redis-py's deprecated close(); harmless, and not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass

    return stop
