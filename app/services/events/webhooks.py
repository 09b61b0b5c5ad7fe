"""Outbound webhooks: a user's endpoints receive their events as signed JSON arrays.

Delivery, per endpoint:
- The endpoint keeps a ``cursor`` (the id of the last event it acknowledged) in MongoDB. A job
  (``deliver_webhook``) takes the endpoint's lease, reads the next settled events after the
  cursor (services/events/log.py: the settle window is what makes "after the cursor" complete),
  POSTs them ordered by event time, and advances the cursor only after a 2xx. A crash between
  the POST and the cursor update sends the same batch again: at least once, the same ids.
- Anything but 2xx (or no answer within ``webhook_timeout_seconds``) is retried with
  exponential backoff; after ``webhook_retry_window_seconds`` (24 h) of failing the endpoint is
  marked ``failing`` and is tried at the longest interval from then on, so it catches up by
  itself once it answers again (events are kept 30 days).
- The lease means one job per endpoint at a time (ordering); each endpoint is its own job with
  its own timeout, so a slow or dead endpoint delays neither another endpoint nor mail delivery
  (deliver jobs run inline in the worker and take no job slot).
- ``dispatch`` (a cron job, every second) enqueues a job for each endpoint that is due and has
  events; it is also the sweep that repairs a lost job.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.adapters.queue import JobQueue
from app.adapters.webhook_http import AddressRefused, WebhookClient, check_destination
from app.config import Settings
from app.domain.errors import ValidationError
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.domain.webhooks import (
    SIGNATURE_HEADER,
    check_event_types,
    public_event,
    retry_delay,
    signature,
)
from app.services.events.log import EventLog

MAX_ENDPOINTS_PER_USER = 20
SKIP_AHEAD = timedelta(minutes=1)
SECRET_PREFIX = "whsec_"


def job_id(endpoint_id: ObjectId, lease_seconds: float) -> str:
    """One queued job per endpoint and lease period. Not one per endpoint: arq keeps the id of
    a job whose worker died until the job's timeout, and the endpoint must not wait for that
    once its lease has expired (the lease, not the job id, keeps one POST at a time)."""
    return f"webhook:{endpoint_id}:{int(time.time() // lease_seconds)}"


class WebhookService:
    def __init__(
        self,
        mongo: Mongo,
        queue: JobQueue,
        log: EventLog,
        client: WebhookClient,
        settings: Settings,
    ) -> None:
        self.db = mongo.db
        self.queue = queue
        self.log = log
        self.client = client
        self.settings = settings
        # the lease outlives one POST (timeout) with margin; a killed worker's lease expires
        self.lease_seconds = settings.webhook_timeout_seconds * 2 + 5
        self.lease = timedelta(seconds=self.lease_seconds)

    # --- endpoints -------------------------------------------------------------------------

    async def create(
        self, viewer: Viewer, url: str, events: list[str]
    ) -> tuple[str, dict[str, Any]]:
        """Register an endpoint; returns (its signing secret, shown only now; the endpoint)."""
        if not events:
            raise ValidationError.on("events", "give at least one event type")
        types = check_event_types(events)
        try:
            await check_destination(url, self.settings.webhook_allow_private)
        except AddressRefused as e:
            raise ValidationError.on("url", str(e)) from None
        count = await self.db.webhooks.count_documents({"user_id": viewer.user_id})
        if count >= MAX_ENDPOINTS_PER_USER:
            raise ValidationError.on("url", f"at most {MAX_ENDPOINTS_PER_USER} endpoints")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        doc = {
            "_id": ObjectId(),
            "user_id": viewer.user_id,
            "url": url,
            "events": types,
            # the receiver must verify with it, so it is stored as is (like a DKIM private key)
            "secret": secret,
            "active": True,
            "failing": False,
            "last_error": None,
            "created_at": now,
            "cursor": self.log.start_cursor(),
            "failures": 0,
            "first_failure_at": None,
            "next_attempt_at": None,
            "lease_until": None,
            "last_success_at": None,
        }
        await self.db.webhooks.insert_one(doc)
        return secret, doc

    async def delete(self, viewer: Viewer, endpoint_id: str) -> bool:
        oid = parse_object_id(endpoint_id)
        if oid is None:
            return False
        result = await self.db.webhooks.delete_one({"_id": oid, "user_id": viewer.user_id})
        return result.deleted_count == 1

    async def of_user(self, viewer: Viewer) -> list[dict[str, Any]]:
        return await self.db.webhooks.find({"user_id": viewer.user_id}).sort("_id", 1).to_list()

    # --- delivery --------------------------------------------------------------------------

    async def dispatch(self) -> int:
        """Enqueue a delivery job for every due endpoint with new events; returns how many."""
        now = datetime.now(UTC)
        due = self.db.webhooks.find(
            {
                "active": True,
                "$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now}}],
            },
            {"user_id": 1, "events": 1, "cursor": 1, "lease_until": 1},
        )
        enqueued = 0
        async for ep in due:
            if ep.get("lease_until") and ep["lease_until"] > now:
                continue
            cursor = ep.get("cursor")
            quiet = await self.log.quiet_until(ep["user_id"], ep["events"], cursor)
            if quiet is None:
                await self.queue.enqueue(
                    "deliver_webhook", str(ep["_id"]), job_id=job_id(ep["_id"], self.lease_seconds)
                )
                enqueued += 1
            elif cursor is None or quiet.generation_time - cursor.generation_time > SKIP_AHEAD:
                # nothing to send up to there: skip ahead (at most a write a minute per endpoint)
                await self.db.webhooks.update_one(
                    {"_id": ep["_id"], "cursor": cursor}, {"$set": {"cursor": quiet}}
                )
        return enqueued

    async def deliver(self, endpoint_id: str) -> dict[str, Any]:
        """One POST of the endpoint's next events (the ``deliver_webhook`` job)."""
        oid = parse_object_id(endpoint_id)
        now = datetime.now(UTC)
        token = ObjectId()
        ep = await self.db.webhooks.find_one_and_update(
            {
                "_id": oid,
                "active": True,
                "$and": [
                    {"$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
                    {"$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now}}]},
                ],
            },
            {"$set": {"lease_until": now + self.lease, "lease_token": token}},
            return_document=True,
        )
        if ep is None:  # deleted, leased by another job, or not due yet
            return {"sent": 0}
        released = False
        try:
            events = await self.log.read(
                ep["user_id"], ep["events"], ep.get("cursor"), self.settings.webhook_batch_size
            )
            if not events:
                return {"sent": 0}
            # ids order the log; within the batch the receiver gets event-time order
            batch = sorted(events, key=lambda e: (e["occurred_at"], e["_id"]))
            body = json.dumps([public_event(e) for e in batch], separators=(",", ":")).encode()
            headers = {SIGNATURE_HEADER: signature(ep["secret"], int(time.time()), body)}
            result = await self.client.post(ep["url"], body, headers)
            done = datetime.now(UTC)
            mine = {"_id": ep["_id"], "lease_token": token}
            if result.ok:
                await self.db.webhooks.update_one(
                    mine,
                    {
                        "$set": {
                            "cursor": events[-1]["_id"],
                            "failures": 0,
                            "first_failure_at": None,
                            "next_attempt_at": None,
                            "failing": False,
                            "last_error": None,
                            "last_success_at": done,
                            "lease_until": None,
                        }
                    },
                )
                released = True
                if len(events) == self.settings.webhook_batch_size:  # more waiting: go on now
                    await self.queue.enqueue(
                        "deliver_webhook", str(ep["_id"]), job_id=f"webhook:{ep['_id']}:{token}"
                    )
                return {"sent": len(events), "status": result.status}
            failures = int(ep.get("failures") or 0) + 1
            first = ep.get("first_failure_at") or done
            failing = (done - first).total_seconds() >= self.settings.webhook_retry_window_seconds
            delay = (
                self.settings.webhook_retry_max_seconds
                if failing
                else retry_delay(
                    failures,
                    self.settings.webhook_retry_base_seconds,
                    self.settings.webhook_retry_max_seconds,
                )
            )
            next_at = done + timedelta(seconds=delay)
            await self.db.webhooks.update_one(
                mine,
                {
                    "$set": {
                        "failures": failures,
                        "first_failure_at": first,
                        "next_attempt_at": next_at,
                        "failing": failing,
                        "last_error": result.error,
                        "lease_until": None,
                    }
                },
            )
            released = True
            await self.queue.enqueue(
                "deliver_webhook",
                str(ep["_id"]),
                job_id=f"webhook:{ep['_id']}:retry:{token}",
                defer_until=next_at,
            )
            return {"sent": 0, "error": result.error, "retry_in": delay}
        finally:
            if not released:
                await self.db.webhooks.update_one(
                    {"_id": ep["_id"], "lease_token": token}, {"$set": {"lease_until": None}}
                )
