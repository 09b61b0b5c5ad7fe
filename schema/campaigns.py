"""Campaigns and domains in GraphQL (CONTRACT.md "Bulk campaigns, unsubscribe, tracking",
"Domains"). Resolvers call services only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from schema import types as T
from schema.templates import Template, TemplateRef

PROGRESS_INTERVAL = 1.0  # campaignProgress: at most one frame a second, only on change


@strawberry.type
class CampaignStats:
    recipients: int
    queued: int
    sent: int
    delivered: int
    deferred: int
    bounced: int
    complained: int
    suppressed: int
    unsubscribed: int
    opened: int
    clicked: int
    machine_opened: int
    failed: int
    # additions
    pending: int = strawberry.field(description="Not yet taken by a batch.")
    machine_clicked: int
    waiting_for_warmup: int = strawberry.field(
        description="Pending recipients held until tomorrow by the domain's warm-up ramp."
    )
    waiting: str | None = strawberry.field(
        description="Why no batch goes out now: warmup, reputation; null when none holds it."
    )

    @staticmethod
    def of(s: dict[str, Any]) -> CampaignStats:
        return CampaignStats(
            recipients=s["recipients"],
            queued=s["queued"],
            sent=s["sent"],
            delivered=s["delivered"],
            deferred=s["deferred"],
            bounced=s["bounced"],
            complained=s["complained"],
            suppressed=s["suppressed"],
            unsubscribed=s["unsubscribed"],
            opened=s["opened"],
            clicked=s["clicked"],
            machine_opened=s["machineOpened"],
            failed=s["failed"],
            pending=s["pending"],
            machine_clicked=s["machineClicked"],
            waiting_for_warmup=s["waitingForWarmup"],
            waiting=s["waiting"],
        )


@strawberry.type
class Campaign:
    id: strawberry.ID
    name: str
    from_: str = strawberry.field(name="from")
    status: str
    template_version: int
    rate_per_minute: int | None
    track_opens: bool
    track_clicks: bool
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    send_at: datetime | None
    doc: strawberry.Private[dict[str, Any]]

    @strawberry.field
    async def template(self, info: Info) -> Template:
        doc, versions = await info.context.system.campaigns.template_of(self.doc)
        return Template.of(doc, versions)

    @strawberry.field
    async def stats(self, info: Info) -> CampaignStats:
        return CampaignStats.of(await info.context.system.campaigns.stats(self.doc))

    @staticmethod
    def of(d: dict[str, Any]) -> Campaign:
        sender = d["from"]
        return Campaign(
            id=strawberry.ID(str(d["_id"])),
            name=d["name"],
            from_=f"{sender['name']} <{sender['email']}>"
            if sender.get("name")
            else sender["email"],
            status=d["status"],
            template_version=d["template_version"],
            rate_per_minute=d.get("rate_per_minute"),
            track_opens=d["track_opens"],
            track_clicks=d["track_clicks"],
            created_at=d["created_at"],
            started_at=d.get("started_at"),
            completed_at=d.get("completed_at"),
            send_at=d.get("send_at"),
            doc=d,
        )


@strawberry.input
class CampaignInput:
    name: str
    template: TemplateRef
    from_: str | None = strawberry.field(default=None, name="from")
    rate_per_minute: int | None = None
    send_at: datetime | None = None
    track_opens: bool | None = False
    track_clicks: bool | None = False


@strawberry.input
class CampaignRecipientInput:
    email: str
    variables: JSON | None = None


@strawberry.type
class RejectedRecipient:
    email: str
    reason: str


@strawberry.type
class CampaignSuccess:
    campaign: Campaign
    # addCampaignRecipients: what was not added (reported, never sent)
    added: int = 0
    duplicates: list[str] = strawberry.field(default_factory=list)
    invalid: list[RejectedRecipient] = strawberry.field(default_factory=list)


CampaignResult = Annotated[
    CampaignSuccess | T.ValidationErrorType | T.NotFoundType, strawberry.union("CampaignResult")
]


@strawberry.type
class CampaignEdge:
    cursor: str
    node: Campaign


@strawberry.type
class CampaignConnection:
    edges: list[CampaignEdge]
    page_info: T.PageInfo


@strawberry.type
class DnsRecord:
    type: str
    name: str
    value: str = strawberry.field(description="The exact record to publish.")
    status: str = strawberry.field(description="ok, missing or wrong")
    kind: str = strawberry.field(description="SPF, DKIM, DMARC or MX")
    found: list[str] = strawberry.field(description="What is published now.")
    detail: str = strawberry.field(description="Why it is wrong; the DMARC policy when ok.")


@strawberry.type
class Domain:
    name: str
    verified: bool
    records: list[DnsRecord]
    checked_at: datetime | None

    @staticmethod
    def of(d: dict[str, Any], expected: list[Any]) -> Domain:
        v = d.get("verification") or {}
        records = v.get("records") or [
            {
                "kind": "",
                "type": r.type,
                "name": r.name,
                "value": r.value,
                "status": "missing",
                "found": [],
                "detail": "not checked yet: run verifyDomain",
            }
            for r in expected
        ]
        return Domain(
            name=d["_id"],
            verified=bool(v.get("verified")),
            records=[
                DnsRecord(
                    type=r["type"],
                    name=r["name"],
                    value=r["value"],
                    status=r["status"],
                    kind=r["kind"],
                    found=list(r.get("found") or []),
                    detail=r.get("detail") or "",
                )
                for r in records
            ],
            checked_at=v.get("checked_at"),
        )


def _domain(info: Info, d: dict[str, Any]) -> Domain:
    return Domain.of(d, info.context.system.accounts.dns_records(d))


@strawberry.type
class CampaignsQuery:
    @strawberry.field(description="The viewer's campaigns, newest first.")
    async def campaigns(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> CampaignConnection:
        docs, more = await info.context.system.campaigns.page(
            await info.context.viewer(), first, after
        )
        edges = [CampaignEdge(cursor=str(d["_id"]), node=Campaign.of(d)) for d in docs]
        return CampaignConnection(
            edges=edges,
            page_info=T.PageInfo(
                has_next_page=more, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @strawberry.field
    async def campaign(self, info: Info, id: strawberry.ID) -> Campaign | None:
        from app.domain.errors import NotFound

        try:
            doc = await info.context.system.campaigns.get(await info.context.viewer(), str(id))
        except NotFound:
            return None
        return Campaign.of(doc)

    @strawberry.field(description="The domains of the viewer's addresses, as last verified.")
    async def domains(self, info: Info) -> list[Domain]:
        docs = await info.context.system.domain_verifier.viewer_domains(await info.context.viewer())
        return [_domain(info, d) for d in docs]


@strawberry.type
class CampaignsMutation:
    @strawberry.mutation
    async def create_campaign(self, info: Info, input: CampaignInput) -> CampaignResult:
        doc = await info.context.system.campaigns.create(
            await info.context.viewer(),
            name=input.name,
            template_key=input.template.key,
            template_version=input.template.version,
            variables=input.template.variables,
            from_=input.from_,
            rate_per_minute=input.rate_per_minute,
            send_at=input.send_at,
            track_opens=bool(input.track_opens),
            track_clicks=bool(input.track_clicks),
        )
        return CampaignSuccess(campaign=Campaign.of(doc))

    @strawberry.mutation(
        description="At most 1,000 a call; duplicates and invalid addresses "
        "are reported in the answer and never sent."
    )
    async def add_campaign_recipients(
        self, info: Info, id: strawberry.ID, recipients: list[CampaignRecipientInput]
    ) -> CampaignResult:
        doc, checked = await info.context.system.campaigns.add_recipients(
            await info.context.viewer(),
            str(id),
            [(r.email, r.variables) for r in recipients],
        )
        return CampaignSuccess(
            campaign=Campaign.of(doc),
            added=len(checked.accepted),
            duplicates=checked.duplicates,
            invalid=[RejectedRecipient(email=e, reason=r) for e, r in checked.invalid],
        )

    @strawberry.mutation
    async def start_campaign(self, info: Info, id: strawberry.ID) -> CampaignResult:
        return await _transition(info, id, "start")

    @strawberry.mutation
    async def pause_campaign(self, info: Info, id: strawberry.ID) -> CampaignResult:
        return await _transition(info, id, "pause")

    @strawberry.mutation
    async def resume_campaign(self, info: Info, id: strawberry.ID) -> CampaignResult:
        return await _transition(info, id, "resume")

    @strawberry.mutation
    async def cancel_campaign(self, info: Info, id: strawberry.ID) -> CampaignResult:
        return await _transition(info, id, "cancel")

    @strawberry.mutation(description="Look the domain's SPF, DKIM, DMARC and MX records up now.")
    async def verify_domain(self, info: Info, name: str) -> Domain:
        doc = await info.context.system.domain_verifier.verify_for(
            await info.context.viewer(), name
        )
        return _domain(info, doc)


async def _transition(info: Info, id: strawberry.ID, action: str) -> CampaignSuccess:
    doc = await info.context.system.campaigns.transition(
        await info.context.viewer(), str(id), action
    )
    return CampaignSuccess(campaign=Campaign.of(doc))


@strawberry.type
class CampaignsSubscription:
    @strawberry.subscription(
        description="The campaign's stats whenever they change (checked every second; a "
        "list that takes long to count is counted less often, at most a tenth of the time); ends "
        "once the campaign completed (or was canceled) and every queued message has left."
    )
    async def campaign_progress(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[CampaignStats, None]:
        system = info.context.system
        viewer = await info.context.viewer()
        doc = await system.campaigns.get(viewer, str(id))
        last: dict[str, Any] | None = None
        while True:
            stats = await system.campaigns.live_stats(doc)
            if stats != last:
                last = stats
                yield CampaignStats.of(stats)
            settled = stats["queued"] <= stats["sent"] + stats["failed"]
            if doc["status"] in ("completed", "canceled") and not stats["pending"] and settled:
                return
            await asyncio.sleep(PROGRESS_INTERVAL)
            doc = await system.campaigns.get(viewer, str(id))
