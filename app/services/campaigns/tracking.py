"""Unsubscribe, opens and clicks of campaign mail (issue 15).

Every token is verified before anything is read (app/domain/campaign_tokens.py); a forged or
altered token is ``NotFound`` — the web layer answers 404 and says nothing more. Events go to
``delivery_events`` (the event log of issue 14) with the campaign's id and ``machine``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.config import Settings
from app.domain.campaign_tokens import (
    parse_click_token,
    parse_open_token,
    parse_unsubscribe_address,
    parse_unsubscribe_token,
)
from app.domain.campaigns import aware
from app.domain.errors import NotFound
from app.domain.tracking import BURST_SECONDS, Hit, burst_partners, machine_click, machine_open
from app.services.campaigns.lists import Recipient, find_recipient
from app.services.feedback.suppression import SuppressionService, user_scope

FORGED = "no such link"


class TrackingService:
    def __init__(self, mongo: Mongo, suppression: SuppressionService, settings: Settings) -> None:
        self.db = mongo.db
        self.suppression = suppression
        self.settings = settings
        key = settings.secret_key.get_secret_value() if settings.secret_key else ""
        self.secret = key.encode()

    async def _recipient(self, rid: ObjectId | None) -> tuple[Recipient, dict[str, Any]]:
        if rid is None:
            raise NotFound(FORGED)
        recipient = await find_recipient(self.db, rid)
        campaign = (
            await self.db.campaigns.find_one({"_id": recipient.campaign_id}) if recipient else None
        )
        if recipient is None or campaign is None:
            raise NotFound(FORGED)
        return recipient, campaign

    # --- unsubscribe -------------------------------------------------------------------

    async def check_unsubscribe(self, token: str) -> Recipient:
        """The recipient a valid token names (the GET page shows its address)."""
        recipient, _ = await self._recipient(parse_unsubscribe_token(self.secret, token))
        return recipient

    async def unsubscribe(self, token: str, *, via: str = "one-click") -> Recipient:
        """Suppress the recipient for the campaign's sender (before its next batch: the batch
        sender reads suppressions from MongoDB when it starts). Idempotent."""
        return await self._unsubscribe(parse_unsubscribe_token(self.secret, token), via)

    async def unsubscribe_by_mail(self, address: str) -> bool:
        """Mail to ``unsubscribe+<token>@<domain>`` (the MX accepted it at RCPT)."""
        rid = parse_unsubscribe_address(self.secret, address)
        if rid is None:
            return False
        try:
            await self._unsubscribe(rid, "mailto")
        except NotFound:
            return False
        return True

    def is_unsubscribe_address(self, address: str) -> bool:
        return bool(self.secret) and parse_unsubscribe_address(self.secret, address) is not None

    async def _unsubscribe(self, rid: ObjectId | None, via: str) -> Recipient:
        recipient, campaign = await self._recipient(rid)
        await self.suppression.add(
            recipient.email,
            reason="unsubscribe",
            scope=user_scope(campaign["user_id"]),
            source_message_id=recipient.id,
        )
        now = datetime.now(UTC)
        at = f"unsubscribed.{recipient.place}"
        first = await self.db.campaign_lists.update_one(
            {"_id": recipient.part, at: {"$exists": False}},
            {"$set": {at: {"at": now, "via": via}}},
        )
        if first.modified_count:
            await self.db.delivery_events.insert_one(
                _event(campaign, recipient, "unsubscribed", now, False, {"via": via})
            )
        return recipient

    # --- opens and clicks ----------------------------------------------------------------

    async def _delivered_at(self, rid: ObjectId) -> datetime | None:
        doc = await self.db.delivery_events.find_one(
            {"message_id": rid, "event_type": {"$in": ["sent", "delivered"]}},
            sort=[("occurred_at", 1)],
        )
        if doc is None:
            return None
        return aware(doc["occurred_at"])

    async def open(self, token: str, *, method: str, user_agent: str) -> bool:
        """Record an open (the pixel is served either way); False when tracking is off."""
        recipient, campaign = await self._recipient(parse_open_token(self.secret, token))
        if not campaign.get("track_opens"):
            return False
        now = datetime.now(UTC)
        hit = Hit(method, user_agent, now, await self._delivered_at(recipient.id))
        rule = machine_open(hit, self.settings.tracking_prefetch_seconds)
        await self.db.delivery_events.insert_one(
            _event(
                campaign,
                recipient,
                "opened",
                now,
                rule is not None,
                {"rule": rule, "userAgent": user_agent[:300], "method": method},
            )
        )
        return True

    async def click(self, token: str, *, method: str, user_agent: str) -> str:
        """The original URL of that link of that message (else NotFound); records the click."""
        parsed = parse_click_token(self.secret, token)
        recipient, campaign = await self._recipient(parsed[0] if parsed else None)
        assert parsed is not None
        links = recipient.links
        if not campaign.get("track_clicks") or not 0 <= parsed[1] < len(links):
            raise NotFound(FORGED)
        url: str = links[parsed[1]]
        now = datetime.now(UTC)
        window = timedelta(seconds=BURST_SECONDS)
        recent_docs = await self.db.delivery_events.find(
            {
                "message_id": recipient.id,
                "event_type": "clicked",
                "occurred_at": {"$gte": now - window},
            }
        ).to_list()
        recent = [(aware(d["occurred_at"]), int(d["metadata"]["link"])) for d in recent_docs]
        hit = Hit(method, user_agent, now, None)
        rule = machine_click(hit, parsed[1], recent)
        if rule == "click_burst":  # the earlier clicks of the burst were a scanner's too
            partners = {t for t, _ in burst_partners(now, parsed[1], recent)}
            ids = [d["_id"] for d in recent_docs if aware(d["occurred_at"]) in partners]
            await self.db.delivery_events.update_many(
                {"_id": {"$in": ids}, "machine": False},
                {"$set": {"machine": True, "metadata.rule": "click_burst"}},
            )
        await self.db.delivery_events.insert_one(
            _event(
                campaign,
                recipient,
                "clicked",
                now,
                rule is not None,
                {"rule": rule, "link": parsed[1], "url": url, "userAgent": user_agent[:300]},
            )
        )
        return url


def _event(
    campaign: dict[str, Any],
    recipient: Recipient,
    kind: str,
    now: datetime,
    machine: bool,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "message_id": recipient.id,
        "recipient": recipient.email,
        "recipient_id": recipient.id,
        "event_type": kind,
        "occurred_at": now,
        "sender_user_id": campaign["user_id"],
        "sender_domain": campaign["from_domain"],
        "campaign_id": campaign["_id"],
        "machine": machine,
        "metadata": metadata,
    }
