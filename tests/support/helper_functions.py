"""Functions a spawned helper process runs in tests (importable by name, as spawn needs)."""

from __future__ import annotations

import os
import time

from app.helper_processes import code_of

CODE = code_of(__file__)  # as app modules whose functions run in helpers set it
_state: dict[str, object] = {}


def remember(value: object) -> None:
    _state["value"] = value


def fail_to_start(reason: str) -> None:
    raise RuntimeError(reason)


def work(kind: str, value: object) -> object:
    """What the pool tests call: echo, an error, a slow answer, or which process answered."""
    if kind == "echo":
        return value
    if kind == "fail":
        raise ValueError(value)
    if kind == "slow":
        time.sleep(float(value))  # type: ignore[arg-type]
        return value
    if kind == "whoami":
        return os.getpid(), _state.get("value")
    raise AssertionError(kind)


def start_unless(flag: str) -> None:
    """Start, or fail to when the file ``flag`` exists (a model file that went away)."""
    if os.path.exists(flag):
        raise RuntimeError(f"{flag} is there")
    _state["value"] = "started"
