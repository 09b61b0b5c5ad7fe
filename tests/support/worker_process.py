"""`mailhub worker` as a process of its own, for the crash tests that SIGKILL it.

Configured like production, by environment only: the settings of the test's world, plus what a
test sets for itself (shorter leases, webhook batch sizes, …) as ``MAILHUB_*`` variables.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


def worker_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment a `mailhub worker` needs to join the world ``settings`` describes."""
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": settings.mongodb_uri,
        "MAILHUB_MONGODB_DATABASE": settings.mongodb_database,
        "MAILHUB_REDIS_URL": settings.redis_url,
        "MAILHUB_REDIS_PREFIX": settings.redis_prefix,
        "MAILHUB_DNS_SERVERS": ",".join(settings.dns_servers),
        "MAILHUB_DELIVERY_PORT": str(settings.delivery_port),
        "MAILHUB_SECRET_KEY": settings.secret_key.get_secret_value(),
        "MAILHUB_HOSTNAME": settings.hostname,
        "MAILHUB_ENVIRONMENT": "test",
        "MAILHUB_DELIVERY_TIMEOUT_SECONDS": "2",
        "MAILHUB_LOG_LEVEL": "WARNING",
        "MAILHUB_WEBHOOK_ALLOW_PRIVATE": str(settings.webhook_allow_private).lower(),
    }
    if settings.typesense_url:
        env["MAILHUB_TYPESENSE_URL"] = settings.typesense_url
        env["MAILHUB_TYPESENSE_API_KEY"] = settings.typesense_api_key.get_secret_value()
        env["MAILHUB_TYPESENSE_COLLECTION"] = settings.typesense_collection
    return env | {f"MAILHUB_{name.upper()}": value for name, value in extra.items()}


def start_worker_process(settings: Any, **extra: str) -> subprocess.Popen[bytes]:
    """``mailhub worker`` in a child process; ``extra`` are settings by name (``lease_seconds="3"``)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main(['worker'])"],
        env=worker_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], seconds: float, what: str, *, every: float = 0.05
) -> None:
    """Poll ``predicate`` until it holds; an AssertionError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def kill_worker_when(
    settings: Any, predicate: Callable[[], Awaitable[bool]], seconds: float, what: str, **extra: str
) -> None:
    """Start a worker process, SIGKILL it as soon as ``predicate`` holds (or it timed out)."""
    process = start_worker_process(settings, **extra)
    try:
        await wait_until(predicate, seconds, what)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
