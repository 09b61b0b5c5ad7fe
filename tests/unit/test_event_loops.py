"""The servers' event loop (app/loops.py): uvloop by default, the standard library's on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from pydantic import ValidationError

from app import loops
from app.config import Settings
from tests.support.event_loop import suite_loop


async def _running_loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_run_uses_the_loop_it_is_asked_for() -> None:
    assert issubclass(loops.run(_running_loop_type(), "uvloop"), uvloop.Loop)
    kind = loops.run(_running_loop_type(), "asyncio")
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)


def test_loops_are_named_by_their_kind() -> None:
    for kind in ("uvloop", "asyncio"):
        loop = loops.loop_factory(kind)()  # type: ignore[arg-type]
        try:
            assert loops.name_of(loop) == kind
        finally:
            loop.close()


def test_the_default_is_uvloop_and_the_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).event_loop == "uvloop"
    monkeypatch.setenv("MAILHUB_EVENT_LOOP", "asyncio")
    assert Settings(_env_file=None).event_loop == "asyncio"
    monkeypatch.setenv("MAILHUB_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        Settings(_env_file=None)


async def test_the_suite_runs_on_the_servers_default_loop() -> None:
    # tests/conftest.py: MAILHUB_TEST_EVENT_LOOP, else the setting's default
    assert loops.name_of(asyncio.get_running_loop()) == suite_loop()


def test_the_test_loop_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILHUB_TEST_EVENT_LOOP", raising=False)
    monkeypatch.setenv("MAILHUB_EVENT_LOOP", "asyncio")  # a server setting, not the suite's
    assert suite_loop() == "uvloop"
    monkeypatch.setenv("MAILHUB_TEST_EVENT_LOOP", "asyncio")
    assert suite_loop() == "asyncio"
    monkeypatch.setenv("MAILHUB_TEST_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="MAILHUB_TEST_EVENT_LOOP='trio'"):
        suite_loop()
