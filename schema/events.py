"""The event log and outbound webhooks in GraphQL (CONTRACT.md "Event log and outbound
webhooks"). Cursors are event ids; a page is complete and repeatable (services/events/log.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.domain.webhooks import public_event
from schema import types as T


@strawberry.type
class Event:
    id: strawberry.ID
    type: str
    at: datetime
    message_id: strawberry.ID | None
    recipient: str | None
    campaign_id: strawberry.ID | None
    machine: bool
    data: JSON

    @staticmethod
    def of(doc: dict[str, Any]) -> Event:
        e = public_event(doc)
        return Event(
            id=strawberry.ID(e["id"]),
            type=e["type"],
            at=doc["occurred_at"],
            message_id=strawberry.ID(e["messageId"]) if e["messageId"] else None,
            recipient=e["recipient"],
            campaign_id=strawberry.ID(e["campaignId"]) if e["campaignId"] else None,
            machine=e["machine"],
            data=e["data"],
        )


@strawberry.type
class EventEdge:
    cursor: str
    node: Event


@strawberry.type
class EventConnection:
    edges: list[EventEdge]
    page_info: T.PageInfo


@strawberry.type
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    failing: bool = strawberry.field(
        description="Every delivery failed for MAILHUB_WEBHOOK_RETRY_WINDOW_SECONDS (24 h); "
        "still retried hourly."
    )
    last_error: str | None
    last_success_at: datetime | None

    @staticmethod
    def of(d: dict[str, Any]) -> WebhookEndpoint:
        return WebhookEndpoint(
            id=strawberry.ID(str(d["_id"])),
            url=d["url"],
            events=list(d["events"]),
            active=bool(d.get("active", True)),
            created_at=d["created_at"],
            failing=bool(d.get("failing")),
            last_error=d.get("last_error"),
            last_success_at=d.get("last_success_at"),
        )


@strawberry.type
class WebhookCreated:
    secret: str = strawberry.field(description="The signing secret: shown this once.")
    endpoint: WebhookEndpoint


WebhookResult = Annotated[WebhookCreated | T.ValidationErrorType, strawberry.union("WebhookResult")]


@strawberry.type
class EventsQuery:
    @strawberry.field(
        description="The viewer's outgoing-mail events in log order; `after` = an event id "
        "(replay from any point within the retention)."
    )
    async def events(
        self,
        info: Info,
        types: list[str] | None = None,
        after: str | None = None,
        first: int = 100,
    ) -> EventConnection:
        docs, has_next = await info.context.system.event_log.page(
            await info.context.viewer(), types, after, first
        )
        edges = [EventEdge(cursor=str(d["_id"]), node=Event.of(d)) for d in docs]
        return EventConnection(
            edges=edges,
            page_info=T.PageInfo(
                has_next_page=has_next, end_cursor=edges[-1].cursor if edges else after
            ),
        )

    @strawberry.field
    async def webhooks(self, info: Info) -> list[WebhookEndpoint]:
        docs = await info.context.system.webhooks.of_user(await info.context.viewer())
        return [WebhookEndpoint.of(d) for d in docs]


@strawberry.type
class EventsMutation:
    @strawberry.mutation(description="POSTs signed JSON arrays of these event types to `url`.")
    async def create_webhook(self, info: Info, url: str, events: list[str]) -> WebhookResult:
        secret, doc = await info.context.system.webhooks.create(
            await info.context.viewer(), url, events
        )
        return WebhookCreated(secret=secret, endpoint=WebhookEndpoint.of(doc))

    @strawberry.mutation
    async def delete_webhook(self, info: Info, id: strawberry.ID) -> T.DeleteResult:
        if not await info.context.system.webhooks.delete(await info.context.viewer(), str(id)):
            return T.NotFoundType(message=f"no webhook with id {id}")
        return T.DeleteSuccess(ids=[id])
