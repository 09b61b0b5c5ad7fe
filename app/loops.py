"""The event loop that `mailhub mx`, `mailhub worker`, `mailhub imap`/`pop3` and `mailhub dev`
run on: uvloop (libuv's loop, written in C) unless ``MAILHUB_EVENT_LOOP=asyncio`` asks for
the standard library's.

The MX's main process spends its time in the loop's machinery: many SMTP sessions' socket
reads and writes, and the group commit's database round trips, each of which waits until the
loop gets back to it. `mailhub api` has run on uvloop from the start (uvicorn picks it when it
is installed; ``uvicorn[standard]`` installs it), so the setting covers it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoop = Literal["uvloop", "asyncio"]


def loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function that makes a new loop of ``kind``."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def name_of(loop: asyncio.AbstractEventLoop) -> EventLoop:
    """Which kind ``loop`` is (for the servers' start-up lines)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], kind: EventLoop) -> T:
    """``asyncio.run(main)`` on a new loop of ``kind``."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
