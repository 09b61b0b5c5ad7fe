"""Shared fixtures: real servers on loopback (DESIGN.md §4), isolated per test.

The servers start once per test session (SecantusDB, Redis, Typesense as child processes
under a temporary directory) unless MAILHUB_TEST_MONGODB_URI / MAILHUB_TEST_REDIS_URL /
MAILHUB_TEST_TYPESENSE_URL (+ MAILHUB_TEST_TYPESENSE_API_KEY) point at running ones.
Each test gets a fresh database name and Redis key prefix, never a mock.

The tests' event loop is the one the servers run on by default (app/loops.py: uvloop);
MAILHUB_TEST_EVENT_LOOP=asyncio runs the suite on the standard library's loop instead
(tests/support/event_loop.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import monitoring

from app import loops
from app.embedded import EmbeddedStack
from tests.support.cleanup import drop_database
from tests.support.commands import CommandLog
from tests.support.event_loop import suite_loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test and fixture runs on the servers' default loop (or the one named)."""
    try:
        kind = suite_loop()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    return {kind: loops.loop_factory(kind)}


@dataclass(frozen=True)
class ServiceUrls:
    mongodb: str
    redis: str
    typesense: str
    typesense_api_key: str


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceUrls]:
    env = os.environ
    wanted = {
        "mongo": not env.get("MAILHUB_TEST_MONGODB_URI"),
        "redis": not env.get("MAILHUB_TEST_REDIS_URL"),
        "typesense": not env.get("MAILHUB_TEST_TYPESENSE_URL"),
    }
    stack = EmbeddedStack(Path(tmp_path_factory.mktemp("servers")))
    os.environ.setdefault("MAILHUB_EMBEDDED_TEST_COMMANDS", "1")
    stack.start(**wanted)
    try:
        yield ServiceUrls(
            mongodb=env.get("MAILHUB_TEST_MONGODB_URI") or stack.url("mongodb"),
            redis=env.get("MAILHUB_TEST_REDIS_URL") or stack.url("redis"),
            typesense=env.get("MAILHUB_TEST_TYPESENSE_URL") or stack.url("typesense"),
            typesense_api_key=env.get("MAILHUB_TEST_TYPESENSE_API_KEY") or stack.typesense_api_key,
        )
    finally:
        stack.stop()


@pytest.fixture
def commands() -> Iterator[CommandLog]:
    """The MongoDB commands of every client made while it lives (a service's own, when the
    service is built inside the test); quiet afterwards (PyMongo cannot unregister it)."""
    log = CommandLog()
    monitoring.register(log)
    yield log
    log.active = False


@pytest.fixture
def unique_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(services: ServiceUrls, unique_name: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from app.config import Settings

    return Settings(
        mongodb_uri=services.mongodb,
        mongodb_database=unique_name,
        redis_url=services.redis,
        redis_prefix=unique_name,
        typesense_url=services.typesense,
        typesense_api_key=services.typesense_api_key,
        typesense_collection=f"{unique_name}_items",
        hostname="mx.mailhub.test",
        secret_key="test-secret-key-0123456789abcdef",
        environment="test",
        data_dir=tmp_path,
        http_port=0,
        smtp_port=0,
        webhook_allow_private=True,  # test receivers listen on loopback
        _env_file=None,
    )


@pytest.fixture
async def mongo(settings) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    from app.adapters.indexes import ensure_indexes
    from app.adapters.mongo import Mongo

    m = Mongo.open(settings.mongodb_uri, settings.mongodb_database)
    await ensure_indexes(m.db)
    yield m
    await drop_database(m.client, settings.mongodb_database)
    await m.close()


@pytest.fixture
def private_database(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``settings`` on a SecantusDB of the test's own: a SIGKILLed worker leaves a transaction
    open (the server aborts it only after 60 s), and its locks must not reach the next tests."""
    stack = EmbeddedStack(tmp_path / "servers")
    stack.start(mongo=True, redis=False, typesense=False)
    try:
        yield settings.model_copy(update={"mongodb_uri": stack.url("mongodb")})
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _watch_async_tests(request: pytest.FixtureRequest) -> None:
    """The dump below for async tests only (an async fixture costs every test a few ms)."""
    import inspect

    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        request.getfixturevalue("_dump_tasks_before_timeout")


@pytest.fixture
async def _dump_tasks_before_timeout(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A hung async test shows only the idle event loop in pytest-timeout's dump; ten seconds
    before the timeout, print where every asyncio task is waiting instead."""
    import asyncio
    import sys

    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else 120.0
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"\n--- {request.node.nodeid}: asyncio tasks near the timeout ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            print(f"{task!r}", file=sys.stderr)
            awaited = task.get_coro()
            while awaited is not None:  # the whole await chain, not just the outer frame
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
                if frame is not None:
                    code = frame.f_code
                    print(f"  {code.co_filename}:{frame.f_lineno} {code.co_name}", file=sys.stderr)
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)

    handle = loop.call_later(max(1.0, timeout - 10), dump)
    yield
    handle.cancel()
