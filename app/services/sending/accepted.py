"""What every path that stores a send writes beside it, and what follows its commit.

The per-send group commit (``group_commit.py``), the materializer of accepted sends
(``send_intake/materialize.py``), the scheduled release and the campaign sender all store
messages: each records the same first events, delivers to recipients hosted here the same way
(inside its own transaction), and enqueues the same delivery jobs after commit (``delivery_jobs``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.adapters.queue import QueuedJob
from app.domain.addresses import domain_of
from app.domain.changes import Change
from app.domain.folders import Folder
from app.services.mailbox.filing import ViewSpec, file_message


def delivery_jobs(
    message: dict[str, Any], recipients: list[dict[str, Any]], send_at: datetime | None
) -> list[QueuedJob]:
    """The fast path after a send commits: a delivery job per remote domain (or the scheduled
    release); the sweep finds the queued recipients if these are lost. Enqueued with
    ``JobQueue.enqueue_many``, a commit's sends together."""
    domains = sorted(
        {
            r["domain"]
            for r in recipients
            if not r.get("local_user_id") and r["delivery_status"] in ("queued", "scheduled")
        }
    )
    jobs = [
        QueuedJob(
            "deliver_domain",
            (str(message["_id"]), domain),
            f"deliver:{message['_id']}:{domain}",
            send_at,
        )
        for domain in domains
    ]
    if send_at:  # the release queues the recipients (and delivers local ones) when due
        jobs.append(
            QueuedJob(
                "release_scheduled", (str(message["_id"]),), f"release:{message['_id']}", send_at
            )
        )
    return jobs


def accepted_events(
    message: dict[str, Any], recipients: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """The first event of each recipient of an accepted send: ``queued`` or ``suppressed``."""
    return [
        {
            "message_id": message["_id"],
            "recipient": r["address"],
            "recipient_id": r["_id"],
            "event_type": "suppressed" if r["delivery_status"] == "suppressed" else "queued",
            "occurred_at": now,
            "sender_user_id": message["sender_user_id"],
            "sender_domain": domain_of(message["from"]["email"]),
            "metadata": {},
        }
        for r in recipients
    ]


async def deliver_locally(
    db: Any,
    message: dict[str, Any],
    recipients: list[dict[str, Any]],
    now: datetime,
    session: Any,
    *,
    hostname: str,
) -> list[Change]:
    """File Inbox views for recipients hosted here and mark them delivered (inside the send's
    or the scheduled release's transaction)."""
    local = [
        r
        for r in recipients
        if r.get("local_user_id") and r["delivery_status"] in ("queued", "scheduled")
    ]
    if not local:
        return []
    users = list(dict.fromkeys(r["local_user_id"] for r in local))
    _, changes = await file_message(
        db,
        message,
        [ViewSpec(u, "received", Folder.INBOX.value) for u in users],
        received_at=now,
        session=session,
    )
    ids = [r["_id"] for r in local]
    await db.recipients.update_many(
        {"_id": {"$in": ids}},
        {
            "$set": {
                "delivery_status": "sent",
                "updated_at": now,
                "attempts": 1,
                "last_reply": {
                    "code": 250,
                    "enhanced": "2.0.0",
                    "text": "delivered to a local mailbox",
                    "mx": hostname,
                },
            }
        },
        session=session,
    )
    await db.delivery_events.insert_many(
        [
            {
                "message_id": message["_id"],
                "recipient": r["address"],
                "recipient_id": r["_id"],
                "event_type": "delivered",
                "occurred_at": now,
                "sender_user_id": message["sender_user_id"],
                "sender_domain": domain_of(message["from"]["email"]),
                "metadata": {"local": True},
            }
            for r in local
        ],
        session=session,
    )
    return changes
