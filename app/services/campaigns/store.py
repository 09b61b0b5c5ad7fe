"""Campaigns and their recipient lists (issue 15): create, add recipients, start, pause, resume,
cancel, read, and the live statistics.

State is in MongoDB only: ``campaigns`` (one document each) and ``campaign_recipients`` (one
per recipient, numbered by ``seq`` so that a batch is a range query, with its own ``state``:
pending → queued | suppressed | failed | canceled; a recipient stored ``pending`` below the
campaign's ``pending_floor`` was queued by its batch without a write of its own:
``stats.recipient_states``). Redis only carries the jobs that wake the
batch sender; the sweep (``CampaignSender.sweep``) finds a campaign whose job was lost.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo, is_duplicate_key
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
    still_pending,
)
from app.domain.errors import NotFound, ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.campaigns.domains import DomainVerifier
from app.services.campaigns.stats import LiveStats, campaign_stats
from app.services.sending.compose import check_send_at, sender_address
from app.services.templates.store import TemplateStore

MAX_NAME = 200
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
        """Append recipients (duplicates of the list and invalid addresses are reported)."""
        if not csv and len(rows) > MAX_RECIPIENTS_PER_CALL:
            raise ValidationError.on(
                "recipients", f"at most {MAX_RECIPIENTS_PER_CALL} recipients a call"
            )
        campaign = await self.get(viewer, campaign_id)
        if campaign["status"] in TERMINAL:
            raise ValidationError.on("id", f"the campaign is {campaign['status']}")
        checked = check_recipients(rows)
        if not checked.accepted:
            return campaign, checked
        keys = [r.key for r in checked.accepted]
        existing = {
            d["key"]
            async for d in self.db.campaign_recipients.find(
                {"campaign_id": campaign["_id"], "key": {"$in": keys}}, {"key": 1}
            )
        }
        if existing:
            checked.duplicates += [r.email for r in checked.accepted if r.key in existing]
            checked.accepted = [r for r in checked.accepted if r.key not in existing]
        n = len(checked.accepted)
        if not n:
            return campaign, checked
        first_seq, add = await self._reserve(campaign["_id"], n)
        docs = recipient_rows(campaign["_id"], first_seq, checked.accepted, datetime.now(UTC))
        await self._insert(campaign["_id"], docs, add)
        return await self.get(viewer, campaign["_id"]), checked

    async def _reserve(self, campaign_id: ObjectId, n: int) -> tuple[int, dict[str, Any]]:
        """Reserve ``n`` seq numbers (and the room in the list) atomically: (the first, the add).

        The add stays in the campaign's ``adds_open`` until its rows are in: the batch sender's
        floor must not pass seq numbers whose rows may still arrive (``CampaignSender``)."""
        add = {"token": secrets.token_hex(8), "at": datetime.now(UTC)}
        reserved = await self.db.campaigns.find_one_and_update(
            {"_id": campaign_id, "recipients": {"$lte": MAX_RECIPIENTS - n}},
            {"$inc": {"next_seq": n, "recipients": n}, "$push": {"adds_open": add}},
            return_document=False,
        )
        if reserved is None:
            raise ValidationError.on("recipients", f"at most {MAX_RECIPIENTS:,} recipients")
        return int(reserved["next_seq"]), add

    async def _insert(
        self, campaign_id: ObjectId, docs: list[dict[str, Any]], add: dict[str, Any]
    ) -> None:
        """Insert a reserved add's rows, then close the add. Any error but a duplicate leaves
        it open (rows of it may still land after a timeout) until ``ADD_OPEN_SECONDS``."""
        closed: dict[str, Any] = {"$pull": {"adds_open": {"token": add["token"]}}}
        try:
            await self.db.campaign_recipients.insert_many(docs, ordered=False)
        except Exception as e:
            if not is_duplicate_key(e):
                raise
            # a concurrent call added some of the same addresses: count what really went in
            inserted = await self.db.campaign_recipients.count_documents(
                {"_id": {"$in": [d["_id"] for d in docs]}}
            )
            closed["$inc"] = {"recipients": inserted - len(docs)}
        await self.db.campaigns.update_one({"_id": campaign_id}, closed)

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
        if target == "canceled":
            # (no batch commits after the status change, which its transaction checks first)
            await self.db.campaign_recipients.update_many(
                still_pending(result), {"$set": {"state": "canceled", "updated_at": now}}
            )
        if target in ("sending", "scheduled"):
            await wake(self.queue, result)
        return result


def recipient_rows(
    campaign_id: ObjectId, first_seq: int, accepted: list[RecipientRow], now: datetime
) -> list[dict[str, Any]]:
    """The ``campaign_recipients`` documents of an add whose seq numbers start at
    ``first_seq``: pending, in the order given."""
    return [
        {
            "_id": ObjectId(),
            "campaign_id": campaign_id,
            "seq": first_seq + i,
            "email": r.email,
            "key": r.key,
            "variables": r.variables,
            "state": "pending",
            "created_at": now,
        }
        for i, r in enumerate(accepted)
    ]


async def wake(queue: JobQueue, campaign: dict[str, Any]) -> None:
    """Enqueue the campaign's next batch at its ``next_batch_at`` (one job per batch number)."""
    await queue.enqueue(
        "campaign_batch",
        str(campaign["_id"]),
        job_id=f"campaign:{campaign['_id']}:{campaign.get('batches', 0)}",
        defer_until=campaign.get("next_batch_at"),
    )
