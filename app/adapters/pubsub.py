"""Redis pub/sub fan-in for one api process: ONE Redis connection, any number of websockets.

Channels are per user (``<prefix>:ev:user:<id>``). The hub subscribes to a user's channel
when that user's first local listener arrives and unsubscribes when the last one leaves.
Each listener has a bounded queue: a client that cannot keep up is marked overflowed and its
subscription ends (the client reconnects and catches up with ``changes``), so a slow client
never grows this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.background import stop_task

log = structlog.get_logger(__name__)

# Per listener. Large enough for a bulk change (updateMessages takes at most 500 ids), small
# enough to bound memory (~1000 × ~200 bytes). A listener that falls further behind is cut off.
QUEUE_LIMIT = 1000


@dataclass(eq=False)
class Listener:
    channel: str
    coalesce: bool = False  # only "something changed" matters: drop extras instead of overflowing
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self.coalesce:
                self.overflowed = True


class PubSubHub:
    def __init__(self, url: str, prefix: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=3, health_check_interval=30
        )
        self.prefix = prefix
        self.listeners: dict[str, set[Listener]] = {}
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def channel(self, user_id: str) -> str:
        return f"{self.prefix}:ev:user:{user_id}"

    async def publish(self, user_id: str, event: dict[str, Any]) -> None:
        """Best effort (events are eventually consistent; `changes` is the source of truth)."""
        await self.publish_many([(user_id, event)])

    async def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``publish`` of each (user id, event), in order, in one round trip (a pipeline
        without MULTI): a group commit's changes cost one connection and one write, not one
        of each per change. Best effort, as ``publish``."""
        if not events:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id, event in events:
                    pipe.publish(self.channel(user_id), json.dumps(event, separators=(",", ":")))
                await pipe.execute()
        except RedisError as e:
            log.warning("publish failed", error=str(e), events=len(events))

    @contextlib.asynccontextmanager
    async def listen(self, user_id: str, *, coalesce: bool = False) -> AsyncIterator[Listener]:
        channel = self.channel(user_id)
        listener = Listener(channel, coalesce)
        async with self.lock:
            await self._ensure_reader()
            first = channel not in self.listeners
            self.listeners.setdefault(channel, set()).add(listener)
            if first:
                await self.pubsub.subscribe(channel)
        try:
            yield listener
        finally:
            async with self.lock:
                group = self.listeners.get(channel, set())
                group.discard(listener)
                if not group:
                    self.listeners.pop(channel, None)
                    with contextlib.suppress(RedisError, RuntimeError):
                        await self.pubsub.unsubscribe(channel)

    async def _ensure_reader(self) -> None:
        if self.pubsub is None:
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                if not self.listeners or not self.pubsub.subscribed:
                    await asyncio.sleep(0.02)
                    continue
                message = await self.pubsub.get_message(timeout=1.0)
            except (RedisError, OSError, RuntimeError) as e:
                log.warning("pub/sub connection lost; resubscribing", error=str(e))
                await asyncio.sleep(1)
                with contextlib.suppress(Exception):
                    async with self.lock:
                        if self.listeners:
                            await self.pubsub.subscribe(*self.listeners)
                continue
            if not message or message.get("type") != "message":
                continue
            channel = (
                message["channel"].decode()
                if isinstance(message["channel"], bytes)
                else message["channel"]
            )
            try:
                event = json.loads(message["data"])
            except (ValueError, TypeError):
                continue
            for listener in list(self.listeners.get(channel, ())):
                listener.offer(event)

    async def close(self) -> None:
        await stop_task(self.reader)
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
        await self.client.aclose()
