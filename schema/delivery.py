"""Delivery in GraphQL: cancelSend (CONTRACT.md) and a message's delivery events."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from schema import types as T


@strawberry.type
class DeliveryEvent:
    """One entry of a sent message's delivery history (append-only)."""

    id: strawberry.ID
    recipient: str
    type: str  # queued deferred sent delivered bounced suppressed expired canceled ...
    occurred_at: datetime
    attempt: int | None
    reply: str | None  # the remote server's reply, "550 5.1.1 ..."
    mx: str | None
    bounce_class: str | None
    details: str  # the event's metadata as JSON

    @staticmethod
    def of(d: dict[str, Any]) -> DeliveryEvent:
        meta = d.get("metadata") or {}
        reply = (
            " ".join(
                str(p)
                for p in (meta.get("code") or None, meta.get("enhanced"), meta.get("text"))
                if p
            )
            or None
        )
        return DeliveryEvent(
            id=strawberry.ID(str(d["_id"])),
            recipient=d["recipient"],
            type=d["event_type"],
            occurred_at=d["occurred_at"],
            attempt=meta.get("attempt"),
            reply=reply,
            mx=meta.get("mx"),
            bounce_class=meta.get("bounce_class"),
            details=json.dumps(meta, default=str, sort_keys=True),
        )


@strawberry.type
class DeliveryQuery:
    @strawberry.field(
        description="Delivery history of a message the viewer sent (MailboxItem."
        "messageId), oldest first; empty for any other id."
    )
    async def delivery_events(self, info: Info, message_id: strawberry.ID) -> list[DeliveryEvent]:
        events = await info.context.system.delivery.events_for(
            await info.context.viewer(), str(message_id)
        )
        return [DeliveryEvent.of(e) for e in events]


@strawberry.type
class DeliveryMutation:
    @strawberry.mutation(
        description="Cancel a scheduled send (or one inside the undo window) not "
        "yet handed to delivery; its Sent item moves to Drafts."
    )
    async def cancel_send(self, info: Info, id: strawberry.ID) -> T.SendEmailResult:
        item = await info.context.system.scheduling.cancel_send(
            await info.context.viewer(), str(id)
        )
        return T.SendEmailSuccess(item=T.MailboxItem(doc=item))
