"""After-commit hooks: whatever must follow a committed change (events, indexing, GC).

Listeners run only after the write that caused them is committed (STYLE.md §5), and a failing
listener never fails the request: each of them is eventually consistent and has a sweep that
repairs what a lost notification missed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from bson import ObjectId

from app.domain.changes import Change

log = structlog.get_logger(__name__)

ChangeListener = Callable[[list[Change]], Awaitable[None]]
ReleaseListener = Callable[[list[ObjectId]], Awaitable[object]]


class Notifier:
    def __init__(self) -> None:
        self.change_listeners: list[ChangeListener] = []
        self.release_listeners: list[ReleaseListener] = []

    def on_change(self, listener: ChangeListener) -> None:
        self.change_listeners.append(listener)

    def on_release(self, listener: ReleaseListener) -> None:
        self.release_listeners.append(listener)

    async def committed(self, changes: list[Change]) -> None:
        if changes:
            await self._run(self.change_listeners, changes)

    async def content_released(self, message_ids: list[ObjectId]) -> None:
        if message_ids:
            await self._run(self.release_listeners, message_ids)

    @staticmethod
    async def _run(listeners: list[Any], payload: Any) -> None:
        for listener in listeners:
            try:
                await listener(payload)
            except Exception:
                log.exception(
                    "after-commit listener failed", listener=getattr(listener, "__qualname__", "?")
                )
