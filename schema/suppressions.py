"""GraphQL for suppressions (list, add, remove — with reason and the event that caused each) and
the viewer's sending reputation (seed §9, §17). Thin resolvers: one service call each."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from app.services.feedback.reputation import Standing
from schema import types as T


@strawberry.type
class SuppressionEvent:
    """The delivery event that caused a suppression (a hard bounce or a complaint)."""

    id: strawberry.ID
    event_type: str
    message_id: strawberry.ID
    recipient: str
    occurred_at: datetime
    source: str | None
    bounce_class: str | None
    reply: str | None


@strawberry.type
class Suppression:
    doc: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def address(self) -> str:
        return str(self.doc["address"])

    @strawberry.field(description="hard_bounce | complaint | unsubscribe | manual")
    def reason(self) -> str:
        return str(self.doc["reason"])

    @strawberry.field
    def bounce_class(self) -> str | None:
        return self.doc.get("bounce_class")

    @strawberry.field(description="The classification rule that matched, for auditing.")
    def rule(self) -> str | None:
        return self.doc.get("rule")

    @strawberry.field
    def source_message_id(self) -> strawberry.ID | None:
        value = self.doc.get("source_message_id")
        return strawberry.ID(str(value)) if value else None

    @strawberry.field
    def created_at(self) -> datetime:
        return self.doc.get("created_at") or self.doc["updated_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def expires_at(self) -> datetime | None:
        return self.doc.get("expires_at")

    @strawberry.field
    async def event(self, info: Info) -> SuppressionEvent | None:
        doc = await info.context.system.suppression_views.event(self.doc.get("event_id"))
        if doc is None:
            return None
        meta = doc.get("metadata") or {}
        reply = meta.get("reply") or {}
        return SuppressionEvent(
            id=strawberry.ID(str(doc["_id"])),
            event_type=doc["event_type"],
            message_id=strawberry.ID(str(doc["message_id"])),
            recipient=doc["recipient"],
            occurred_at=doc["occurred_at"],
            source=meta.get("source"),
            bounce_class=meta.get("bounce_class"),
            reply=" ".join(str(reply[k]) for k in ("code", "enhanced", "text") if reply.get(k))
            or None,
        )


@strawberry.type
class SuppressionSuccess:
    suppression: Suppression


@strawberry.type
class RemoveSuppressionSuccess:
    address: str


AddSuppressionResult = Annotated[
    SuppressionSuccess | T.ValidationErrorType, strawberry.union("AddSuppressionResult")
]
RemoveSuppressionResult = Annotated[
    RemoveSuppressionSuccess | T.NotFoundType | T.ValidationErrorType,
    strawberry.union("RemoveSuppressionResult"),
]


@strawberry.type
class ReputationCounts:
    sent: int
    hard_bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float


@strawberry.type
class ReputationEvent:
    event_type: str  # paused | resumed
    reason: str | None
    occurred_at: datetime


@strawberry.type
class SendingReputation:
    """Rolling counts for one sender (the viewer, or one of the viewer's sending domains)."""

    subject: str  # "user" or the domain name
    counts: ReputationCounts
    paused: bool
    paused_reason: str | None


@strawberry.type
class Reputation:
    window_days: int
    bounce_rate_threshold: float
    complaint_rate_threshold: float
    min_recipients: int
    user: SendingReputation
    domains: list[SendingReputation]
    events: list[ReputationEvent]


def _standing(s: Standing) -> SendingReputation:
    c = s.counts
    return SendingReputation(
        subject=s.subject,
        counts=ReputationCounts(
            sent=c.sent,
            hard_bounces=c.hard_bounces,
            complaints=c.complaints,
            bounce_rate=c.bounce_rate,
            complaint_rate=c.complaint_rate,
        ),
        paused=s.paused,
        paused_reason=s.paused_reason,
    )


@strawberry.type
class SuppressionsQuery:
    @strawberry.field(
        description="Your suppressions (caused by your mail or added by you), by address."
    )
    async def suppressions(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> list[Suppression]:
        docs = await info.context.system.suppression_views.list(
            await info.context.viewer(), first=first, after=after
        )
        return [Suppression(doc=d) for d in docs]

    @strawberry.field(description="Your sending reputation over the rolling window, and any pause.")
    async def reputation(self, info: Info) -> Reputation:
        viewer = await info.context.viewer()
        system = info.context.system
        addresses = await system.accounts.addresses_of(viewer.user_id)
        report = await system.reputation.report(viewer.user_id, addresses)
        return Reputation(
            window_days=report.window_days,
            bounce_rate_threshold=report.thresholds.bounce_rate,
            complaint_rate_threshold=report.thresholds.complaint_rate,
            min_recipients=report.thresholds.min_recipients,
            user=_standing(report.user),
            domains=[_standing(d) for d in report.domains],
            events=[
                ReputationEvent(
                    event_type=e["event_type"], reason=e.get("reason"), occurred_at=e["occurred_at"]
                )
                for e in report.events
            ],
        )


@strawberry.type
class SuppressionsMutation:
    @strawberry.mutation(description="Stop your mail to an address (reason: manual).")
    async def add_suppression(
        self, info: Info, address: str, note: str | None = None
    ) -> AddSuppressionResult:
        doc = await info.context.system.suppression_views.add(
            await info.context.viewer(), address, note
        )
        return SuppressionSuccess(suppression=Suppression(doc=doc))

    @strawberry.mutation(
        description="Allow your mail to an address again (your own entry; a hard bounce or "
        "complaint is the system's and answers ValidationError)."
    )
    async def remove_suppression(self, info: Info, address: str) -> RemoveSuppressionResult:
        removed = await info.context.system.suppression_views.remove(
            await info.context.viewer(), address
        )
        return RemoveSuppressionSuccess(address=removed)
