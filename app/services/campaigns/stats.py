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

from typing import Any

from app.adapters.mongo import Mongo


async def campaign_stats(mongo: Mongo, campaign: dict[str, Any]) -> dict[str, Any]:
    db = mongo.db
    cid = campaign["_id"]
    states = {
        d["_id"]: d["n"]
        async for d in await db.campaign_recipients.aggregate(
            [{"$match": {"campaign_id": cid}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        )
    }
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
    unsubscribed = await db.campaign_recipients.count_documents(
        {"campaign_id": cid, "unsubscribed_at": {"$ne": None}}
    )
    tracked: dict[tuple[str, bool], int] = {}
    people: dict[str, set[Any]] = {"opened": set(), "clicked": set()}
    machines: dict[str, set[Any]] = {"opened": set(), "clicked": set()}
    if campaign.get("track_opens") or campaign.get("track_clicks"):
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
