"""The durable outbox (DESIGN.md §6): what "due", "leased" and a delivery job id mean.

MongoDB's ``recipients`` collection is the queue. A recipient is *due* when it is pending and
its ``next_attempt_at`` has passed (and, for a ``sending`` recipient left by an older release,
its ``lease_until`` has passed too).

A *lease* is taken per destination domain, not per recipient: a ``domain_leases`` document
(``_id`` = domain, ``token``, ``until``) says which worker process delivers that domain's mail
until when. Only the holder pulls the domain's due recipients, so a recipient needs no write of
its own before the attempt: its outcome is its one write, conditional on the recipient still
being pending with the attempt count the worker read (a worker whose lease ran out and was
taken over cannot write over the new holder's outcome).

Queries select on indexed equality fields only (message, domain, status) and the time
conditions are checked here in Python: range and negation predicates make the query planner
(SecantusDB's, at least) scan the whole collection, and the candidate sets are small.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.domain.outcomes import RecipientState

DUE_STATUSES = ["queued", "deferred", "sending"]
IN_LIMIT = 50  # ids per "$in": SecantusDB matches each candidate against the whole list


def chunked(values: list[Any], size: int = IN_LIMIT) -> list[list[Any]]:
    """``values`` in slices small enough for one ``$in``."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def is_due(recipient: dict[str, Any], now: datetime) -> bool:
    """Pending, due, not local, and not under an unexpired per-recipient lease (older releases
    leased recipients one by one; such a lease still counts until it expires)."""
    lease = recipient.get("lease_until")
    return (
        recipient.get("delivery_status") in DUE_STATUSES
        and not recipient.get("local_user_id")
        and recipient["next_attempt_at"] <= now
        and (lease is None or lease < now)
    )


def unleased_status(recipient: dict[str, Any]) -> str:
    """The status a leased recipient goes back to when released without an attempt."""
    return "deferred" if recipient.get("attempts", 0) else "queued"


def job_id(message_id: ObjectId | str, domain: str, due: datetime | None = None) -> str:
    """Deterministic arq job id: the send-time job has no suffix (sending.py enqueues it);
    every later one is keyed by the due time, so a deferral and a sweep agree on it."""
    base = f"deliver:{message_id}:{domain}"
    return base if due is None else f"{base}:{int(due.timestamp() * 1000)}"


def state_of(recipient: dict[str, Any]) -> RecipientState:
    return RecipientState(
        attempts=int(recipient.get("attempts") or 0),
        queued_at=recipient.get("queued_at") or recipient["created_at"],
        delay_notice_sent=bool(recipient.get("delay_notice_sent")),
    )


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready for the wire: signed bytes plus what notices need."""

    id: ObjectId
    doc: dict[str, Any]  # the message document (no bodies)
    data: bytes  # DKIM-signed RFC 5322 bytes
    headers: bytes  # the original header block, for DSNs (RFC 3464 text/rfc822-headers)
    sender_domain: str

    @property
    def sender_user_id(self) -> ObjectId:
        return self.doc["sender_user_id"]  # type: ignore[no-any-return]


@dataclass
class DomainLease:
    """This process's lease on one destination domain; ``until`` moves on with each renewal."""

    domain: str
    until: datetime


@dataclass
class Work:
    """One recipient of a leased domain on its way through a lane to the recorder."""

    recipient: dict[str, Any]
    message: PreparedMessage
    lease: DomainLease

    @property
    def lease_until(self) -> datetime:
        return self.lease.until

    @property
    def owned(self) -> dict[str, Any]:
        """The filter an outcome is written under: still pending, attempted by nobody else."""
        return {"_id": self.id, **owned_filter(int(self.recipient.get("attempts") or 0))}

    @property
    def id(self) -> ObjectId:
        return self.recipient["_id"]  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        return self.recipient["address"]  # type: ignore[no-any-return]

    @property
    def domain(self) -> str:
        return self.recipient["domain"]  # type: ignore[no-any-return]


def owned_filter(attempts: int) -> dict[str, Any]:
    """Still pending and still at the attempt count a worker read (see ``Work.owned``)."""
    return {
        "delivery_status": {"$in": DUE_STATUSES},
        "attempts": attempts if attempts else {"$in": [0, None]},
    }
