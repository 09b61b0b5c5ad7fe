"""Helper processes that answer calls over a socket the event loop reads itself.

What ``concurrent.futures.ProcessPoolExecutor`` does for the MX's analysis, without its two
threads in the calling process. There, each call wakes a manager thread (a pipe write, then a
new selector over every pipe on each wait), which hands the call to a queue whose feeder thread
pickles and writes it, and the result comes back through the manager thread and
``call_soon_threadsafe``: three hand-offs between threads per message, each taking the GIL from
the event loop. On the inbound benchmark that plumbing was 5-6 % of the MX's CPU samples.

Here each helper is a spawned process (no copy of the caller's loop or connections) with one
end of a socket pair; the caller's end is an asyncio connection. A call is written to the
socket from the loop (the transport buffers what the socket does not take at once) and its
answer arrives through ``data_received``. Frames are ``multiprocessing.connection``'s (a
4-byte big-endian length, or -1 and an 8-byte length), so the helper reads and writes with a
plain ``Connection``; each frame is a pickle of ``(call id, payload)``.

A helper runs one call at a time; a call goes to the helper with the fewest calls waiting.
When a helper's socket closes (the process died), its waiting calls fail with
``HelperDied``, the helper is gone from the pool (``alive`` says how many are left) and the
pool starts its replacement (``replace_lost``); the caller decides what to do with the calls
that failed (``Analysis`` analyses them inline).

A helper imports its function's module from disk when it starts, maybe long after its caller
did: after an upgrade under a running process the two would speak different versions of their
exchange (a campaign sender once took every answer of a newer render helper as a failure). So a
module whose functions run in helpers sets ``CODE = code_of(__file__)``, a fingerprint of the
file as each process imported it, and a helper whose ``CODE`` is not its caller's refuses to
start (``start`` raises; its caller falls back as for any helper that does not start).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import structlog

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
log = structlog.get_logger(__name__)

RETRY_SECONDS = 30.0  # after a replacement failed to start, before the next try
_READY = -1  # the call id of a helper's first frame: its initializer ran (or what it raised)


class HelperDied(Exception):
    """The helper process answering a call went away before it answered."""


def _header(size: int) -> bytes:
    """The length prefix of a frame of ``size`` bytes."""
    if size > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(size)
    return _SHORT.pack(size)


def code_of(path: str) -> str:
    """A fingerprint of a module's file: ``CODE = code_of(__file__)`` at the top of a module
    whose functions run in helpers records the code this process imported (see above)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _code(function: Callable[..., Any]) -> str | None:
    """The ``CODE`` of ``function``'s module as this process imported it (None: not set)."""
    return getattr(sys.modules.get(function.__module__), "CODE", None)


def _serve(
    conn: Connection,
    initializer: Callable[..., Any],
    initargs: tuple[Any, ...],
    function: Callable[..., Any],
    code: str | None,
) -> None:
    """A helper's main: check that its code is its caller's (``code``), run ``initializer``,
    say so, then answer calls until the socket closes.

    Ctrl-C in a terminal signals the whole process group: the caller decides when its helpers
    stop (it closes their sockets), so a helper ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if _code(function) != code:
            raise RuntimeError(
                f"the helper's {function.__module__} is not its caller's: the installed code "
                "changed since the caller started (restart it)"
            )
        initializer(*initargs)
    except BaseException as exc:
        conn.send_bytes(pickle.dumps((_READY, (False, _picklable(exc)))))
        return
    try:
        conn.send_bytes(pickle.dumps((_READY, (True, None))))
        while True:
            call_id, args = pickle.loads(conn.recv_bytes())
            try:
                answer = (True, function(*args))
            except Exception as exc:  # the caller re-raises it, as a pool's future would
                answer = (False, _picklable(exc))
            conn.send_bytes(pickle.dumps((call_id, answer), protocol=pickle.HIGHEST_PROTOCOL))
    except (EOFError, OSError):  # the caller closed its end, or went away: stop
        return


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class _Helper(asyncio.Protocol):
    """The caller's end of one helper's socket: frames out, frames in, calls waiting."""

    def __init__(self, process: BaseProcess, on_lost: Callable[[_Helper], None]) -> None:
        self.process = process
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _SHORT.size:
            size = _SHORT.unpack_from(buffer)[0]
            start = _SHORT.size
            if size == -1:
                if len(buffer) < start + _LONG.size:
                    return
                size = _LONG.unpack_from(buffer, start)[0]
                start += _LONG.size
            if len(buffer) < start + size:
                return
            call_id, (ok, value) = pickle.loads(buffer[start : start + size])
            del buffer[: start + size]
            self._answer(call_id, ok, value)

    def _answer(self, call_id: int, ok: bool, value: Any) -> None:
        future = self.ready if call_id == _READY else self.waiting.pop(call_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def connection_lost(self, exc: Exception | None) -> None:
        died = self._died()
        for future in [self.ready, *self.waiting.values()]:
            if not future.done():
                future.set_exception(died)
        self.waiting.clear()
        self._on_lost(self)

    def _died(self) -> HelperDied:
        return HelperDied(f"helper process {self.process.pid} went away")

    def send(self, call_id: int, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(self._died())
            return future
        self.waiting[call_id] = future
        data = pickle.dumps((call_id, args), protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.writelines((_header(len(data)), data))  # no copy of a large message
        return future


class HelperProcesses:
    """``count`` spawned processes that run ``initializer(*initargs)`` once, then
    ``function(*args)`` for each ``call(*args)``. ``start`` returns once every helper's
    initializer has run, and raises what one of them raised."""

    def __init__(
        self,
        count: int,
        function: Callable[..., Any],
        initializer: Callable[..., Any],
        initargs: tuple[Any, ...] = (),
        *,
        name: str = "mx",
    ) -> None:
        self.name = name  # whose helpers: in logs and the process titles
        self.count = count
        self.function = function
        self.initializer = initializer
        self.initargs = initargs
        self.code = _code(function)  # what each helper's copy of the module must be
        self.helpers: list[_Helper] = []
        self._calls = 0
        self._replacing: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None  # the next try after a failed start
        self._stopping = False

    @property
    def alive(self) -> int:
        return len(self.helpers)

    @property
    def calls(self) -> int:
        """Calls handed to a helper since the pool started (a caller that analyses inline
        when no helper is running does not count here)."""
        return self._calls

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self.helpers if h.process.pid is not None]  # started

    async def start(self) -> None:
        try:
            await asyncio.gather(*(self._start_one() for _ in range(self.count)))
        except BaseException:
            await self.stop()
            raise

    def replace_lost(self) -> None:
        """Start, in the background, a helper for each one that went away (none when enough
        are running or starting already); each joins the pool once its initializer has run.
        A helper that goes away calls this itself. After a replacement failed to start (the
        model file gone, say), the pool tries again by itself ``RETRY_SECONDS`` later, and
        starts nothing before that: each try costs a process start and its initializer."""
        if self._stopping or self._retry is not None:
            return
        for _ in range(self.count - len(self.helpers) - len(self._replacing)):
            task = asyncio.create_task(self._start_one())
            self._replacing.add(task)
            task.add_done_callback(self._replaced)

    def _replaced(self, task: asyncio.Task[None]) -> None:
        self._replacing.discard(task)
        if not task.cancelled() and task.exception() is not None and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._try_again)
            log.warning(
                "helper process could not be restarted",
                pool=self.name,
                error=str(task.exception()),
                retry_in_s=RETRY_SECONDS,
            )

    def _try_again(self) -> None:
        self._retry = None
        self.replace_lost()

    async def _start_one(self) -> None:
        ours, theirs = socket.socketpair()
        child = Connection(os.dup(theirs.fileno()))
        theirs.close()
        process = get_context("spawn").Process(
            target=_serve,
            args=(child, self.initializer, self.initargs, self.function, self.code),
            daemon=True,
            name=f"mailhub-{self.name}-helper",
        )
        try:
            await asyncio.to_thread(process.start)
        finally:
            child.close()  # the process has its own copy
        loop = asyncio.get_running_loop()
        ours.setblocking(False)  # uvloop takes the socket as it is; asyncio sets it too
        _, helper = await loop.create_unix_connection(
            lambda: _Helper(process, self._lost), sock=ours
        )
        try:
            await helper.ready
        except BaseException:
            if helper.transport is not None:
                helper.transport.close()
            await asyncio.to_thread(process.join, 10)
            raise
        self.helpers.append(helper)

    def _lost(self, helper: _Helper) -> None:
        helper.process.join(0)  # reap it if it is gone already
        if helper in self.helpers:
            self.helpers.remove(helper)
            self.replace_lost()

    async def call(self, *args: Any) -> Any:
        """``function(*args)`` in the helper with the fewest calls waiting."""
        if not self.helpers:
            raise HelperDied("no helper process is running")
        helper = min(self.helpers, key=lambda h: len(h.waiting))
        self._calls += 1
        return await helper.send(self._calls, args)

    async def stop(self) -> None:
        """Close every socket (each helper leaves its loop) and wait for the processes."""
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
        for task in list(self._replacing):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        helpers, self.helpers = self.helpers, []
        for helper in helpers:
            if helper.transport is not None:
                helper.transport.close()
        for helper in helpers:
            await asyncio.to_thread(helper.process.join, 10)
            if helper.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    helper.process.kill()
                await asyncio.to_thread(helper.process.join, 5)
