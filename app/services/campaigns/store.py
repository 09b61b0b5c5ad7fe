"""Campaigns and their recipient lists (issue 15): create, add recipients, start, pause, resume,
cancel, read, and the live statistics.

State is in MongoDB only: ``campaigns`` (one document each) and ``campaign_lists`` (the
recipient list in parts of up to 500, numbered by ``seq`` so that a batch is a range: lists.py,
which also says how a recipient's state follows from the campaign's ``pending_floor``). Redis
only carries the jobs that wake the batch sender; the sweep (``CampaignSender.sweep``) finds a
campaign whose job was lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction, update_and_read
from app.adapters.queue import JobQueue
from app.domain.addresses import domain_of
from app.domain.campaigns import (
    MAX_RECIPIENTS,
    MAX_RECIPIENTS_PER_CALL,
    RecipientCheck,
    RecipientRow,
    check_rate,
    check_recipients,
    next_status,
)
from app.domain.errors import NotFound, ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.campaigns.domains import DomainVerifier
from app.services.campaigns.lists import existing_keys, parts_of
from app.services.campaigns.stats import LiveStats, campaign_stats
from app.services.sending.compose import check_send_at, sender_address
from app.services.templates.store import TemplateStore

MAX_NAME = 200
ADD_CHUNK = 5_000  # recipients of a CSV upload stored in one transaction
ADD_ATTEMPTS = 8
TERMINAL = ("completed", "canceled")


class CampaignService:
    def __init__(
        self,
        mongo: Mongo,
        queue: JobQueue,
        accounts: AccountService,
        templates: TemplateStore,
        domains: DomainVerifier,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.live = LiveStats(mongo)
        self.queue = queue
        self.accounts = accounts
        self.templates = templates
        self.domains = domains

    async def create(
        self,
        viewer: Viewer,
        *,
        name: str,
        template_key: str,
        template_version: int | None,
        variables: Any,
        from_: str | None,
        rate_per_minute: int | None,
        send_at: datetime | None,
        track_opens: bool,
        track_clicks: bool,
    ) -> dict[str, Any]:
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValidationError.on("name", f"a name of 1 to {MAX_NAME} characters")
        check_rate(rate_per_minute)
        if variables is not None and not isinstance(variables, dict):
            raise ValidationError.on("template.variables", "variables must be a JSON object")
        sender = await sender_address(self.accounts, viewer, from_)
        from_domain = domain_of(sender.email)
        if not await self.domains.is_verified(from_domain):
            raise ValidationError.on(
                "from",
                f"{from_domain} is not verified: publish its SPF, DKIM and DMARC records "
                f"(domains query) and run verifyDomain",
            )
        template, version = await self.templates.version(viewer, template_key, template_version)
        now = datetime.now(UTC)
        doc = {
            "_id": ObjectId(),
            "user_id": viewer.user_id,
            "name": name,
            "from": {"email": sender.email, "name": sender.name},
            "from_domain": from_domain,
            "template_id": template["_id"],
            "template_key": template["key"],
            "template_version": version["version"],
            "version_id": version["_id"],
            "variables": dict(variables or {}),
            "rate_per_minute": rate_per_minute,
            "send_at": check_send_at(send_at, now),
            "track_opens": bool(track_opens),
            "track_clicks": bool(track_clicks),
            "status": "draft",
            "recipients": 0,
            "next_seq": 0,
            "pending_floor": 0,  # no recipient below it is pending (lists.py)
            "batches": 0,
            "next_batch_at": None,
            "batch_lease_until": None,
            "waiting": None,  # why no batch goes out now: warmup, reputation (shown in stats)
            "created_at": now,
            "started_at": None,
            "completed_at": None,
        }
        await self.db.campaigns.insert_one(doc)
        return doc

    async def get(self, viewer: Viewer, campaign_id: str | ObjectId) -> dict[str, Any]:
        oid = campaign_id if isinstance(campaign_id, ObjectId) else parse_object_id(campaign_id)
        doc = (
            await self.db.campaigns.find_one({"_id": oid, "user_id": viewer.user_id})
            if oid
            else None
        )
        if doc is None:
            raise NotFound("no such campaign")
        return doc

    async def stats(self, campaign: dict[str, Any]) -> dict[str, Any]:
        """``CampaignStats`` of a campaign document, counted now (services/campaigns/stats.py)."""
        return await campaign_stats(self.mongo, campaign)

    async def live_stats(self, campaign: dict[str, Any]) -> dict[str, Any]:
        """``stats`` for ``campaignProgress``: one count shared by this process's subscribers,
        paced so that counting a long list takes at most a tenth of the database's time."""
        return await self.live.stats(campaign)

    async def template_of(
        self, campaign: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(template, its versions) of a campaign; the template as the campaign named it when
        it has been deleted since."""
        tid = campaign["template_id"]
        doc = await self.db.templates.find_one({"_id": tid})
        versions = await self.templates.versions([tid])
        return doc or {"_id": tid, "key": campaign["template_key"]}, versions.get(tid, [])

    async def page(
        self, viewer: Viewer, first: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        if not 1 <= first <= 100:
            raise ValidationError.on("first", "first must be 1 to 100")
        query: dict[str, Any] = {"user_id": viewer.user_id}
        if after:
            cursor = parse_object_id(after)
            if cursor is None:
                raise ValidationError.on("after", "not a campaign cursor")
            query["_id"] = {"$lt": cursor}
        docs = await self.db.campaigns.find(query).sort("_id", -1).limit(first + 1).to_list()
        return docs[:first], len(docs) > first

    async def add_recipients(
        self, viewer: Viewer, campaign_id: str, rows: list[tuple[str, Any]], *, csv: bool = False
    ) -> tuple[dict[str, Any], RecipientCheck]:
        """Append recipients (duplicates of the list and invalid addresses are reported).

        Each ``ADD_CHUNK`` of them goes in one transaction (``_add``): the check for addresses
        the list has already, the campaign's new ``next_seq`` and count, and the parts. A
        batch sees an add whole or not at all, and two adds of the same address cannot both
        commit: both write the campaign document, so the second's transaction conflicts and
        runs again, and then its check sees the first's parts. A CSV upload of more than one
        chunk that fails part way keeps the chunks before the failure (an upload again
        reports them as duplicates)."""
        if not csv and len(rows) > MAX_RECIPIENTS_PER_CALL:
            raise ValidationError.on(
                "recipients", f"at most {MAX_RECIPIENTS_PER_CALL} recipients a call"
            )
        campaign = await self.get(viewer, campaign_id)
        if campaign["status"] in TERMINAL:
            raise ValidationError.on("id", f"the campaign is {campaign['status']}")
        checked = check_recipients(rows)
        accepted: list[RecipientRow] = []
        for start in range(0, len(checked.accepted), ADD_CHUNK):
            chunk = checked.accepted[start : start + ADD_CHUNK]
            repeated = await self._add(campaign["_id"], chunk)
            checked.duplicates += [r.email for r in chunk if r.key in repeated]
            accepted += [r for r in chunk if r.key not in repeated]
        checked.accepted = accepted
        if not accepted:
            return campaign, checked
        return await self.get(viewer, campaign["_id"]), checked

    async def _add(self, campaign_id: ObjectId, chunk: list[RecipientRow]) -> set[str]:
        """Store ``chunk`` but the addresses the list has already; returns those."""

        async def work(session: Any) -> set[str]:
            repeated = await existing_keys(self.db, campaign_id, [r.key for r in chunk], session)
            new = [r for r in chunk if r.key not in repeated]
            if not new:
                return repeated
            # (an update and a read: SecantusDB scans for a findAndModify by _id)
            reserved = await update_and_read(
                self.db.campaigns,
                {"_id": campaign_id, "recipients": {"$lte": MAX_RECIPIENTS - len(new)}},
                {"$inc": {"next_seq": len(new), "recipients": len(new)}},
                session,
                {"next_seq": 1, "status": 1},
            )
            if reserved is None:
                raise ValidationError.on("recipients", f"at most {MAX_RECIPIENTS:,} recipients")
            if reserved["status"] in TERMINAL:
                raise ValidationError.on("id", f"the campaign is {reserved['status']}")
            first = int(reserved["next_seq"]) - len(new)  # read after the update
            parts = parts_of(campaign_id, first, new, datetime.now(UTC))
            await self.db.campaign_lists.insert_many(parts, session=session)
            return repeated

        # (adds of one campaign at once conflict on its document: more tries than a send's)
        result: set[str] = await in_transaction(self.mongo, work, attempts=ADD_ATTEMPTS)
        return result

    async def transition(self, viewer: Viewer, campaign_id: str, action: str) -> dict[str, Any]:
        """start, pause, resume or cancel; each takes effect before the next batch (the batch
        sender reads the status from MongoDB when it begins a batch)."""
        campaign = await self.get(viewer, campaign_id)
        target = next_status(action, campaign["status"])
        now = datetime.now(UTC)
        update: dict[str, Any] = {"status": target}
        if action in ("start", "resume") and not await self.domains.is_verified(
            campaign["from_domain"]
        ):  # the daily re-check may have found the records gone since the campaign was made
            raise ValidationError.on("from", f"{campaign['from_domain']} is no longer verified")
        if action == "start":
            if not campaign["recipients"]:
                raise ValidationError.on("id", "add recipients before starting the campaign")
            if campaign.get("send_at") and campaign["send_at"] > now:
                update["status"] = target = "scheduled"
            update["started_at"] = now
            update["next_batch_at"] = campaign.get("send_at") or now
        if action == "resume":
            update["next_batch_at"] = now
        if target == "canceled":
            update["completed_at"] = now
        result = await self.db.campaigns.find_one_and_update(
            {"_id": campaign["_id"], "status": campaign["status"]},
            {"$set": update},
            return_document=True,
        )
        if result is None:  # changed under us: report against the fresh state
            return await self.transition(viewer, campaign_id, action)
        if target in ("sending", "scheduled"):
            await wake(self.queue, result)
        return result


async def wake(queue: JobQueue, campaign: dict[str, Any]) -> None:
    """Enqueue the campaign's next batch at its ``next_batch_at`` (one job per batch number)."""
    await queue.enqueue(
        "campaign_batch",
        str(campaign["_id"]),
        job_id=f"campaign:{campaign['_id']}:{campaign.get('batches', 0)}",
        defer_until=campaign.get("next_batch_at"),
    )
