"""The helper processes (app/helper_processes.py; the MX's and the campaign renders'), with real spawned
processes and socket pairs: answers, errors, large payloads, concurrency, death and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from multiprocessing.connection import Connection

import pytest

from app import helper_processes
from app.helper_processes import HelperDied, HelperProcesses, _header
from tests.support.helper_functions import fail_to_start, remember, start_unless, work


async def _pool(count: int = 2) -> HelperProcesses:
    pool = HelperProcesses(count, work, remember, ("started",))
    await pool.start()
    return pool


async def test_calls_are_answered_by_helpers_that_ran_their_initializer() -> None:
    pool = await _pool(2)
    try:
        assert pool.alive == 2 and len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        answers = await asyncio.gather(*(pool.call("whoami", None) for _ in range(20)))
        assert {state for _, state in answers} == {"started"}
        assert {pid for pid, _ in answers} == set(pool.pids)  # both took calls
        assert await pool.call("echo", {"n": 1}) == {"n": 1}
    finally:
        await pool.stop()
    assert pool.alive == 0


async def test_large_payloads_both_ways_and_many_in_flight() -> None:
    pool = await _pool(2)
    try:
        payloads = [os.urandom(size) for size in (0, 1, 65_535, 65_536, 3_000_000, 10)]
        answers = await asyncio.gather(*(pool.call("echo", p) for p in payloads * 5))
        assert answers == payloads * 5  # each caller gets its own answer, whole
    finally:
        await pool.stop()


async def test_an_error_in_the_function_is_raised_to_its_caller_only() -> None:
    pool = await _pool(1)
    try:
        failing = pool.call("fail", "bad input")
        fine = pool.call("echo", "ok")
        with pytest.raises(ValueError, match="bad input"):
            await failing
        assert await fine == "ok"
        assert pool.alive == 1
    finally:
        await pool.stop()


async def test_an_initializer_that_fails_fails_start() -> None:
    pool = HelperProcesses(1, work, fail_to_start, ("no model here",))
    with pytest.raises(RuntimeError, match="no model here"):
        await pool.start()
    assert pool.alive == 0


async def test_a_killed_helper_fails_its_waiting_calls_and_can_be_replaced() -> None:
    pool = await _pool(1)
    try:
        [pid] = pool.pids
        waiting = asyncio.ensure_future(pool.call("slow", 30))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(HelperDied):
            await asyncio.wait_for(waiting, 10)
        assert pool.alive == 0
        with pytest.raises(HelperDied):
            await pool.call("echo", 1)
        assert len(pool._replacing) == 1  # the lost helper started its replacement
        pool.replace_lost()  # one is starting already: no second
        assert len(pool._replacing) == 1
        for _ in range(200):
            if pool.alive:
                break
            await asyncio.sleep(0.05)
        assert pool.alive == 1 and pool.pids != [pid]
        assert await pool.call("whoami", None) == (pool.pids[0], "started")
    finally:
        await pool.stop()


async def test_stop_ends_every_process() -> None:
    pool = await _pool(2)
    processes = [helper.process for helper in pool.helpers]
    await pool.stop()
    assert all(not p.is_alive() for p in processes)
    assert [p.exitcode for p in processes] == [0, 0]  # they left their loop, not killed


def test_frames_are_those_of_multiprocessing_connection() -> None:
    """The helper side reads and writes with ``multiprocessing.connection.Connection``; the MX's
    side writes and parses the same frames itself (``_header``, ``_Helper.data_received``)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = Connection(os.dup(theirs.fileno()))
        try:
            for payload in (b"", b"abc", os.urandom(70_000)):
                frame = _header(len(payload)) + payload
                connection.send_bytes(payload)
                wire = b""
                while len(wire) < len(frame):
                    wire += ours.recv(1 << 20)
                assert wire == frame
                ours.sendall(frame)
                assert connection.recv_bytes() == payload
        finally:
            connection.close()


async def test_a_helper_outlives_a_ctrl_c_its_caller_decides_when_it_stops() -> None:
    pool = await _pool(1)
    try:
        [pid] = pool.pids
        os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole process group
        await asyncio.sleep(0.3)
        assert await pool.call("whoami", None) == (pid, "started")
    finally:
        await pool.stop()


async def test_after_a_failed_restart_the_pool_waits_before_trying_again(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helper_processes, "RETRY_SECONDS", 2.0)
    flag = tmp_path / "model-gone"
    pool = HelperProcesses(1, work, start_unless, (str(flag),))
    await pool.start()
    try:
        flag.write_text("")
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):  # the replacement starts by itself, and fails
            await asyncio.sleep(0.05)
            if pool._retry is not None:
                break
        assert pool.alive == 0 and not pool._replacing
        pool.replace_lost()  # within RETRY_SECONDS: no new process
        assert not pool._replacing
        flag.unlink()
        for _ in range(200):  # RETRY_SECONDS later the pool tries again by itself
            if pool.alive:
                break
            await asyncio.sleep(0.05)
        assert await pool.call("whoami", None) == (pool.pids[0], "started")
    finally:
        await pool.stop()


async def test_a_helper_whose_module_is_not_its_callers_does_not_start(monkeypatch) -> None:
    """A helper imports its function's module from disk: when that file is not the one its
    caller imported (an upgrade under a running process), it refuses to start."""
    from tests.support import helper_functions

    assert helper_functions.CODE == helper_processes.code_of(helper_functions.__file__)
    monkeypatch.setattr(helper_functions, "CODE", "what the caller imported before")
    pool = HelperProcesses(1, work, remember, ("started",))
    with pytest.raises(RuntimeError, match="is not its caller's"):
        await pool.start()
    assert pool.alive == 0
    monkeypatch.undo()  # the same file on both sides: it starts
    pool = await _pool(1)
    try:
        assert await pool.call("echo", "ok") == "ok"
    finally:
        await pool.stop()


def test_the_modules_whose_functions_run_in_helpers_fingerprint_their_code() -> None:
    from app.services.campaigns import messages
    from app.services.inbound import analysis

    for module in (messages, analysis):
        assert module.CODE == helper_processes.code_of(module.__file__), module.__name__
