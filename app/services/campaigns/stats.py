"""A campaign's statistics (``CampaignStats``), counted from the records themselves.

- recipients: on the list; queued/suppressed/failed: what the batch sender did with them
  (suppressed = skipped at the moment of sending their batch);
- sent / delivered / deferred / bounced / complained: the delivery state of the campaign's
  messages (``recipients`` rows carry the campaign id): sent = handed to a receiving server
  or beyond (sent + bounced after acceptance are both counted), delivered = accepted;
- unsubscribed: recipients who unsubscribed through this campaign's links or mailto;
- opened / clicked: recipients with at least one *human* open / click; machineOpened: with a
  machine open only (privacy proxies, scanners: app/domain/tracking.py), machineClicked alike;
- waitingForWarmup: pending recipients while the warm-up ramp holds the campaign until
  tomorrow (``waiting`` says why a campaign is not sending right now).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.services.campaigns import lists

# campaignProgress: the share of the time one campaign's live stats may spend counting. Each
# count reads every part of the campaign's list and groups every delivery row of it, which
# grows with the list, so after a count that took T seconds the next one starts no
# sooner than T / STATS_SHARE after it began; subscribers in between get the last count.
STATS_SHARE = 0.1
_FORGET_AFTER = 3600.0  # seconds: counts nobody asked for since are dropped


async def campaign_stats(mongo: Mongo, campaign: dict[str, Any]) -> dict[str, Any]:
    """The stats of a campaign document, counted now."""
    return stats_of(campaign, await count(mongo, campaign))


@dataclass
class _Counted:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    counts: dict[str, Any] | None = None
    next_at: float = 0.0  # clock time before which the counts are reused
    asked_at: float = 0.0


class LiveStats:
    """The stats ``campaignProgress`` pushes, shared by every subscriber of this process.

    One count per campaign at a time (a second subscriber waits for the count in flight), and
    counts paced by ``STATS_SHARE``: a campaign small enough to count in 0.1 s is counted every
    time it is asked (the subscription asks once a second), one of 100,000 recipients about
    every 100 s instead of back to back, which held the database busy and slowed the
    campaign's own delivery. The campaign document's own fields (list size, why it waits) are
    always the caller's fresh copy; the ``campaign(id) { stats }`` query counts afresh.
    """

    def __init__(self, mongo: Mongo, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.mongo = mongo
        self.clock = clock
        self._counted: dict[tuple[ObjectId, bool], _Counted] = {}

    async def stats(self, campaign: dict[str, Any]) -> dict[str, Any]:
        key = (campaign["_id"], _tracked(campaign))
        entry = self._counted.setdefault(key, _Counted())
        async with entry.lock:
            now = self.clock()
            entry.asked_at = now
            if entry.counts is None or now >= entry.next_at:
                entry.counts = await count(self.mongo, campaign)
                entry.next_at = now + (self.clock() - now) / STATS_SHARE
            counts = entry.counts
        self._forget(now)
        return stats_of(campaign, counts)

    def _forget(self, now: float) -> None:
        for key, entry in list(self._counted.items()):
            if now - entry.asked_at > _FORGET_AFTER and not entry.lock.locked():
                del self._counted[key]


def _tracked(campaign: dict[str, Any]) -> bool:
    return bool(campaign.get("track_opens") or campaign.get("track_clicks"))


async def count(mongo: Mongo, campaign: dict[str, Any]) -> dict[str, Any]:
    """What ``stats_of`` needs counted from the records (every recipient of the campaign)."""
    db = mongo.db
    cid = campaign["_id"]
    states, unsubscribed = await recipient_states(mongo, cid)
    delivery = {
        d["_id"]: d["n"]
        async for d in await db.recipients.aggregate(
            [
                {"$match": {"campaign_id": cid}},
                {"$group": {"_id": "$delivery_status", "n": {"$sum": 1}}},
            ]
        )
    }
    complained = await db.recipients.count_documents(
        {"campaign_id": cid, "complained_at": {"$ne": None}}
    )
    tracked: dict[tuple[str, bool], int] = {}
    people: dict[str, set[Any]] = {"opened": set(), "clicked": set()}
    machines: dict[str, set[Any]] = {"opened": set(), "clicked": set()}
    if _tracked(campaign):
        async for d in await db.delivery_events.aggregate(
            [
                {"$match": {"campaign_id": cid, "event_type": {"$in": ["opened", "clicked"]}}},
                {
                    "$group": {
                        "_id": {
                            "t": "$event_type",
                            "m": {"$ifNull": ["$machine", False]},
                            "r": "$recipient_id",
                        }
                    }
                },
            ]
        ):
            key = d["_id"]
            (machines if key["m"] else people)[key["t"]].add(key["r"])
        for kind in ("opened", "clicked"):
            tracked[(kind, False)] = len(people[kind])
            tracked[(kind, True)] = len(machines[kind] - people[kind])
    return {
        "states": states,
        "delivery": delivery,
        "complained": complained,
        "unsubscribed": unsubscribed,
        "tracked": tracked,
    }


async def recipient_states(mongo: Mongo, campaign_id: ObjectId) -> tuple[dict[str, int], int]:
    """How many of a campaign's recipients are in each state (pending, queued, suppressed,
    failed, canceled), and how many unsubscribed through it.

    Counted from the list's parts (``lists.states``) and the campaign's ``pending_floor`` and
    status, read first: a batch committing meanwhile can only leave its recipients counted
    pending in this count, never queued twice."""
    doc = await mongo.db.campaigns.find_one({"_id": campaign_id}, {"pending_floor": 1, "status": 1})
    return await lists.states(mongo.db, doc or {"_id": campaign_id})


def stats_of(campaign: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """``CampaignStats`` from a campaign document and ``count``'s result."""
    states = counts["states"]
    delivery = counts["delivery"]
    tracked = counts["tracked"]
    complained = counts["complained"]
    unsubscribed = counts["unsubscribed"]
    delivered = delivery.get("sent", 0) + delivery.get("delivered", 0)
    pending = states.get("pending", 0)
    return {
        "recipients": campaign.get("recipients", 0),
        "pending": pending,
        "queued": states.get("queued", 0),
        "sent": delivered + delivery.get("bounced", 0),
        "delivered": delivered,
        "deferred": delivery.get("deferred", 0),
        "bounced": delivery.get("bounced", 0),
        "complained": complained,
        "suppressed": states.get("suppressed", 0),
        "unsubscribed": unsubscribed,
        "opened": tracked.get(("opened", False), 0),
        "clicked": tracked.get(("clicked", False), 0),
        "machineOpened": tracked.get(("opened", True), 0),
        "machineClicked": tracked.get(("clicked", True), 0),
        "failed": states.get("failed", 0) + delivery.get("failed", 0) + delivery.get("expired", 0),
        "waitingForWarmup": pending if campaign.get("waiting") == "warmup" else 0,
        "waiting": campaign.get("waiting"),
    }
