"""Which event loop the test suite runs on (tests/conftest.py): MAILHUB_TEST_EVENT_LOOP, else
the loop the servers run on by default (``Settings.event_loop``, app/loops.py)."""

from __future__ import annotations

import os
from typing import get_args

from app.config import Settings
from app.loops import EventLoop


def suite_loop() -> EventLoop:
    kind = os.environ.get("MAILHUB_TEST_EVENT_LOOP") or Settings.model_fields["event_loop"].default
    if kind not in get_args(EventLoop):
        raise ValueError(
            f"MAILHUB_TEST_EVENT_LOOP={kind!r}: one of {', '.join(get_args(EventLoop))}"
        )
    return kind  # type: ignore[no-any-return]
