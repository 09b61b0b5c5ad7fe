"""Subscriptions (mailboxEvents, unreadCounts, deliveryStatus) and resumable sync (changes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from app.domain.errors import NotFound
from app.services.mailbox.realtime import CannotCalculateChanges as NoChanges
from app.services.mailbox.realtime import Listener
from schema import types as T

# unreadCounts: a change is sent at once unless a frame went out less than this long ago; then
# it waits for the rest of the gap and everything that came meanwhile becomes one frame. A lone
# change (local mail) is therefore instant, and a flood costs at most 20 counter reads per second
# per subscription. (It was a 1 s interval that also counted the snapshot: a message arriving
# right after subscribing, or right after another one, waited up to a second.)
COUNTS_MIN_GAP = 0.05


@strawberry.type
class MailboxEvent:
    type: str
    item: T.MailboxItem | None
    item_id: strawberry.ID
    state: str


@strawberry.type
class Changes:
    created: list[strawberry.ID]
    updated: list[strawberry.ID]
    deleted: list[strawberry.ID]
    new_state: str


@strawberry.type
class CannotCalculateChanges:
    message: str
    new_state: str


ChangesResult = Annotated[Changes | CannotCalculateChanges, strawberry.union("ChangesResult")]


@strawberry.type
class RealtimeQuery:
    @strawberry.field(
        description="The viewer's current sync state (every event carries the state after it)."
    )
    async def state(self, info: Info) -> str:
        return await info.context.system.realtime.current_state(await info.context.viewer())

    @strawberry.field(
        description="Item ids created/updated/deleted since a state, for clients that were offline."
    )
    async def changes(self, info: Info, since: str) -> ChangesResult:
        realtime = info.context.system.realtime
        viewer = await info.context.viewer()
        try:
            c = await realtime.changes(viewer, since)
        except NoChanges as e:
            return CannotCalculateChanges(
                message=str(e), new_state=await realtime.current_state(viewer)
            )
        return Changes(
            created=[strawberry.ID(i) for i in c.created],
            updated=[strawberry.ID(i) for i in c.updated],
            deleted=[strawberry.ID(i) for i in c.deleted],
            new_state=c.new_state,
        )


TOKEN_RECHECK = 2.0  # seconds before asking again about a token the store could not check


async def _events(info: Info, listener: Listener) -> AsyncGenerator[dict[str, Any], None]:
    """Events for this subscription; ends it when the token is revoked or the client lags."""
    context = info.context
    system = context.system
    viewer = await context.viewer()
    interval = system.settings.ws_token_check_seconds
    next_check = time.monotonic() + interval
    while True:
        if listener.overflowed:
            await context.disconnect_slow_client()
            raise GraphQLError(
                "client too slow: subscription ended; reconnect and call `changes`",
                extensions={"code": "SLOW_CONSUMER"},
            )
        timeout = max(0.05, next_check - time.monotonic())
        try:
            event = await asyncio.wait_for(listener.queue.get(), timeout)
        except TimeoutError:
            event = None
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + interval
            live = bool(viewer.token_id) and await system.accounts.token_still_live(
                str(viewer.token_id)
            )
            if live is None:  # the store did not answer: keep going, ask again soon
                next_check = time.monotonic() + min(interval, TOKEN_RECHECK)
            elif not live:
                return  # revoked or expired while connected: the subscription ends
        if event is not None and event.get("type") == "revoked":  # an API key (issue 14)
            if event.get("tokenId") == viewer.token_id:
                return  # revoked while connected: the subscription ends at once
            continue
        if event is not None:
            yield event


@strawberry.type
class RealtimeSubscription:
    @strawberry.subscription(description="Created/updated/deleted items of the viewer's mailbox.")
    async def mailbox_events(self, info: Info) -> AsyncGenerator[MailboxEvent, None]:
        system = info.context.system
        viewer = await info.context.viewer()
        async with system.realtime.listen(viewer) as listener:
            async for event in _events(info, listener):
                if event.get("type") != "mailbox":
                    continue
                item = None
                if event["kind"] != "deleted":
                    doc = await system.mailbox.get_item(viewer, event["itemId"])
                    item = T.MailboxItem(doc=doc) if doc else None
                yield MailboxEvent(
                    type=event["kind"],
                    item=item,
                    item_id=strawberry.ID(event["itemId"]),
                    state=event.get("state") or "",
                )

    @strawberry.subscription(
        description="All folders and labels: once on subscribe, then after each change "
        "(changes less than 50 ms apart are coalesced into one frame)."
    )
    async def unread_counts(self, info: Info) -> AsyncGenerator[list[T.Mailbox], None]:
        system = info.context.system
        viewer = await info.context.viewer()
        async with system.realtime.listen(viewer, coalesce=True) as listener:
            yield [T.Mailbox.of(d) for d in await system.mailbox.mailboxes(viewer)]
            sent_at = time.monotonic()
            async for event in _events(info, listener):
                if event.get("type") != "mailbox":
                    continue
                wait = sent_at + COUNTS_MIN_GAP - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                while not listener.queue.empty():  # coalesce everything that came meanwhile
                    listener.queue.get_nowait()
                yield [T.Mailbox.of(d) for d in await system.mailbox.mailboxes(viewer)]
                sent_at = time.monotonic()

    @strawberry.subscription(
        description="Each recipient status change of a message the viewer sent."
    )
    async def delivery_status(
        self, info: Info, message_id: strawberry.ID
    ) -> AsyncGenerator[T.RecipientStatus, None]:
        system = info.context.system
        viewer = await info.context.viewer()
        try:
            oid = await system.realtime.sent_message_id(viewer, str(message_id))
        except NotFound as e:  # a subscription answers with a top-level error, not a union
            raise GraphQLError(e.message, extensions={"code": e.code}) from None
        async with system.realtime.listen(viewer) as listener:
            async for event in _events(info, listener):
                if event.get("type") != "delivery" or event.get("messageId") != str(message_id):
                    continue
                doc = await system.realtime.recipient_of(oid, event.get("recipientId") or "")
                if doc:
                    yield T.RecipientStatus.of(doc)
