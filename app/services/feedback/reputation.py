"""Sender reputation (seed §9, §17): rolling counts per sending user and per sending domain.

Counts come straight from ``delivery_events`` (append-only, carrying ``sender_user_id`` and
``sender_domain``) over the last ``reputation_window_days``: recipients accepted for sending
(``queued``/``scheduled`` events — one per recipient, local ones included, a bucket counting
as the events it holds), hard bounces and complaints. Over the thresholds, with at least
``reputation_min_recipients`` recipients, the user's (or the domain's) sending is paused: a
``sending_pauses`` document that ``sending.py`` reads on every send, and a
``reputation_events`` record saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.mongo import Mongo
from app.batching import SharedLookup
from app.config import Settings
from app.domain.addresses import domain_of
from app.domain.errors import ValidationError

log = structlog.get_logger(__name__)

SENT_EVENTS = ("queued", "scheduled")


@dataclass(frozen=True)
class Counts:
    sent: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Thresholds:
    bounce_rate: float
    complaint_rate: float
    min_recipients: int

    def breached(self, counts: Counts) -> str | None:
        """Why sending should pause, or None (pure)."""
        if counts.sent < self.min_recipients:
            return None
        if counts.bounce_rate > self.bounce_rate:
            return (
                f"hard-bounce rate {counts.bounce_rate:.1%} over {counts.sent} recipients "
                f"exceeds {self.bounce_rate:.1%}"
            )
        if counts.complaint_rate > self.complaint_rate:
            return (
                f"complaint rate {counts.complaint_rate:.2%} over {counts.sent} recipients "
                f"exceeds {self.complaint_rate:.2%}"
            )
        return None


def pause_key(kind: str, value: ObjectId | str) -> str:
    return f"{kind}:{value}"


class ReputationService:
    def __init__(self, mongo: Mongo, settings: Settings) -> None:
        self.db = mongo.db
        self.settings = settings
        # Concurrent sends and batches share one read of the active pauses (each answer from a
        # query sent after it was asked): one query for what queued meanwhile, not one each.
        self._active_pauses: SharedLookup[str, dict[str, Any]] = SharedLookup(
            self._fetch_active_pauses
        )
        self.thresholds = Thresholds(
            settings.reputation_bounce_rate,
            settings.reputation_complaint_rate,
            settings.reputation_min_recipients,
        )

    async def counts(
        self,
        *,
        user_id: ObjectId | None = None,
        domain: str | None = None,
        now: datetime | None = None,
    ) -> Counts:
        """Rolling-window counts for one sending user or one sending domain: the events
        recorded in the window (an ``_id`` range of the (sender, _id) indexes; a bounce or
        complaint reported late counts from when it arrived)."""
        since = (now or datetime.now(UTC)) - timedelta(days=self.settings.reputation_window_days)
        match: dict[str, Any] = {
            "_id": {"$gte": ObjectId.from_datetime(since)},
            "event_type": {"$in": [*SENT_EVENTS, "bounced", "complained"]},
        }
        if user_id is not None:
            match["sender_user_id"] = user_id
        if domain is not None:
            match["sender_domain"] = domain.lower()
        # a bucket (a campaign batch's ``queued`` events, events/buckets.py) counts as the
        # events it holds
        sent = {
            "$cond": [{"$in": ["$event_type", list(SENT_EVENTS)]}, {"$ifNull": ["$count", 1]}, 0]
        }
        hard = {
            "$cond": [
                {"$and": [{"$eq": ["$event_type", "bounced"]}, {"$eq": ["$metadata.hard", True]}]},
                1,
                0,
            ]
        }
        complained = {"$cond": [{"$eq": ["$event_type", "complained"]}, 1, 0]}
        pipeline = [
            {"$match": match},
            {
                "$group": {
                    "_id": None,
                    "sent": {"$sum": sent},
                    "hard": {"$sum": hard},
                    "complaints": {"$sum": complained},
                }
            },
        ]
        rows = await (await self.db.delivery_events.aggregate(pipeline)).to_list()
        row = rows[0] if rows else {}
        return Counts(
            int(row.get("sent", 0)), int(row.get("hard", 0)), int(row.get("complaints", 0))
        )

    async def evaluate(self, user_id: ObjectId | None, domain: str | None) -> list[str]:
        """Re-check a user and a domain after a bounce or complaint; pause what breaches."""
        paused = []
        for kind, value in (("user", user_id), ("domain", domain)):
            if value is None:
                continue
            if isinstance(value, ObjectId):
                counts = await self.counts(user_id=value)
            else:
                counts = await self.counts(domain=value)
            reason = self.thresholds.breached(counts)
            if reason and await self._pause(kind, value, counts, reason):
                paused.append(pause_key(kind, value))
        return paused

    async def _pause(self, kind: str, value: ObjectId | str, counts: Counts, reason: str) -> bool:
        now = datetime.now(UTC)
        key = pause_key(kind, value)
        fields = {
            "active": True,
            "kind": kind,
            "value": value,
            "reason": reason,
            "paused_at": now,
            "counts": counts.__dict__,
        }
        result = await self.db.sending_pauses.update_one(
            {"_id": key, "active": {"$ne": True}}, {"$set": fields}
        )
        if result.matched_count == 0:
            if await self.db.sending_pauses.find_one({"_id": key}) is not None:
                return False  # already paused
            await self.db.sending_pauses.insert_one({"_id": key, **fields})
        await self.db.reputation_events.insert_one(
            {
                "key": key,
                "kind": kind,
                "value": value,
                "event_type": "paused",
                "reason": reason,
                "counts": counts.__dict__,
                "occurred_at": now,
            }
        )
        log.warning("sending paused", key=key, reason=reason)
        return True

    async def resume(self, kind: str, value: ObjectId | str) -> bool:
        """Lift a pause (an operator decision); recorded as an event."""
        key = pause_key(kind, value)
        result = await self.db.sending_pauses.update_one(
            {"_id": key, "active": True}, {"$set": {"active": False}}
        )
        if result.modified_count:
            await self.db.reputation_events.insert_one(
                {
                    "key": key,
                    "kind": kind,
                    "value": value,
                    "event_type": "resumed",
                    "occurred_at": datetime.now(UTC),
                }
            )
        return bool(result.modified_count)

    async def pause_for(self, user_id: ObjectId, sender_domain: str) -> dict[str, Any] | None:
        """The active pause that stops this user sending from this domain, if any (the
        domain's when both are paused: the first by ``_id``, as an index read gives it)."""
        keys = [pause_key("user", user_id), pause_key("domain", sender_domain.lower())]
        found = await self._active_pauses.get(keys)
        return found[min(found)] if found else None

    async def _fetch_active_pauses(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        docs = await self.db.sending_pauses.find({"_id": {"$in": keys}, "active": True}).to_list()
        return {d["_id"]: d for d in docs}

    async def check_can_send(self, user_id: ObjectId, sender_domain: str) -> None:
        """Raise a clear error when the sender's reputation paused sending (read at send time)."""
        pause = await self.pause_for(user_id, sender_domain)
        if pause is not None:
            raise ValidationError.on(
                "from",
                f"sending is paused for this {pause['kind']}: {pause['reason']} in the last "
                f"{self.settings.reputation_window_days} days",
            )

    async def events(self, keys: list[str], limit: int = 20) -> list[dict[str, Any]]:
        cursor = self.db.reputation_events.find({"key": {"$in": keys}})
        return await cursor.sort("occurred_at", -1).limit(limit).to_list()  # type: ignore[no-any-return]

    async def report(self, user_id: ObjectId, addresses: list[str]) -> ReputationReport:
        """The user's standing and that of each domain they send from (its addresses): rolling
        counts, any active pause, and the user's recent pause/resume events."""
        domains = sorted({domain_of(a) for a in addresses})
        user_key = pause_key("user", user_id)
        keys = {user_key: "user", **{pause_key("domain", d): d for d in domains}}
        pauses = {
            d["_id"]: d
            for d in await self.db.sending_pauses.find(
                {"_id": {"$in": list(keys)}, "active": True}
            ).to_list()
        }
        standings = []
        for key, subject in keys.items():
            counts = await (
                self.counts(user_id=user_id) if key == user_key else self.counts(domain=subject)
            )
            pause = pauses.get(key)
            standings.append(
                Standing(subject, counts, pause.get("reason") if pause else None, pause is not None)
            )
        return ReputationReport(
            window_days=self.settings.reputation_window_days,
            thresholds=self.thresholds,
            user=standings[0],
            domains=standings[1:],
            events=await self.events([user_key]),
        )


@dataclass(frozen=True)
class Standing:
    """One sender's rolling counts and pause: the user ("user") or one sending domain."""

    subject: str
    counts: Counts
    paused_reason: str | None
    paused: bool


@dataclass(frozen=True)
class ReputationReport:
    window_days: int
    thresholds: Thresholds
    user: Standing
    domains: list[Standing]
    events: list[dict[str, Any]]
