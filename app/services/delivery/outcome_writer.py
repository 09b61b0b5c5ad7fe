"""Writing one batch of delivery outcomes: recipient status, delivery_events, notices,
suppressions, then live status and retry jobs (the recorder in outcomes.py decides what goes in
a batch and when).

One MongoDB transaction per batch, the recipient updates in one bulk write. Every write is
conditional on the recipient still being pending at the attempt count the worker read: an
outcome for a recipient that another worker attempted meanwhile (after this one's domain lease
ran out) is dropped, not written over theirs. A batch's ``sent`` events are one bucket document
for each sender (events/buckets.py)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters import metrics
from app.adapters.blobs import BlobStore
from app.adapters.live_status import publish_many
from app.adapters.mongo import DeleteOne, Mongo, UpdateMany, UpdateOne, in_transaction
from app.adapters.queue import JobQueue, QueuedJob
from app.adapters.redis_store import RedisStore
from app.domain.bounces import SmtpOutcome
from app.domain.changes import Change
from app.domain.outcomes import UNFINISHED, Decision, decide, dsn_report, status_event
from app.domain.retry import retry_until
from app.services.after_commit import Notifier
from app.services.delivery.notices import Notice, build_notice, file_notices, store_raw
from app.services.delivery.outbox import (
    DUE_STATUSES,
    Work,
    chunked,
    job_id,
    state_of,
    unleased_status,
)
from app.services.delivery.parcels import as_row
from app.services.events.buckets import in_buckets
from app.services.feedback.suppression import SuppressionService

# the events a batch writes in buckets: the one every delivered message has. Bounces,
# complaints and the rest stay documents of their own (the reputation window reads their
# metadata, a suppression names its bounce by id)
BUCKETED = ("sent",)


def _attempts(w: Work) -> int:
    return int(w.recipient.get("attempts") or 0)


class _LeaseLost(Exception):
    """Some recipient's lease expired and was taken over before its outcome was written."""


@dataclass
class Attempt:
    """The reply to one delivery attempt (``mx``: the host that gave it)."""

    work: Work
    reply: SmtpOutcome
    mx: str | None


@dataclass
class Release:
    """A recipient given back without an attempt, due again at ``due``."""

    work: Work
    due: datetime


@dataclass
class Suppressed:
    """A recipient not attempted: its address is suppressed."""

    work: Work


Outcome = Attempt | Suppressed | Release


@dataclass
class OutcomeBatch:
    """The outcomes one transaction writes, by kind."""

    attempts: list[Attempt] = field(default_factory=list)
    suppressed: list[Work] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> OutcomeBatch:
        batch = cls()
        for outcome in outcomes:
            if isinstance(outcome, Attempt):
                batch.attempts.append(outcome)
            elif isinstance(outcome, Suppressed):
                batch.suppressed.append(outcome.work)
            else:
                batch.releases.append(outcome)
        return batch

    def outcomes(self) -> list[Outcome]:
        return [*self.attempts, *(Suppressed(w) for w in self.suppressed), *self.releases]

    def __len__(self) -> int:
        return len(self.attempts) + len(self.suppressed) + len(self.releases)

    def works(self) -> list[Work]:
        return [a.work for a in self.attempts] + self.suppressed + [r.work for r in self.releases]

    def halves(self) -> tuple[OutcomeBatch, OutcomeBatch]:
        a, b = OutcomeBatch(), OutcomeBatch()
        for name in ("attempts", "suppressed", "releases"):
            items = getattr(self, name)
            setattr(a, name, items[: len(items) // 2])
            setattr(b, name, items[len(items) // 2 :])
        return a, b

    def extend(self, other: OutcomeBatch) -> None:
        self.attempts += other.attempts
        self.suppressed += other.suppressed
        self.releases += other.releases


class OutcomeWriter:
    """Writes one batch of outcomes and what follows from them."""

    def __init__(
        self,
        *,
        mongo: Mongo,
        redis: RedisStore,
        queue: JobQueue,
        blobs: BlobStore,
        suppression: SuppressionService,
        notifier: Notifier,
        hostname: str,
        policy_for: Any,
        rng: random.Random | None = None,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.redis = redis
        self.queue = queue
        self.blobs = blobs
        self.suppression = suppression
        self.notifier = notifier
        self.hostname = hostname
        self.policy_for = policy_for  # (message doc) -> RetryPolicy
        self.rng = rng

    async def write(self, batch: OutcomeBatch) -> None:
        """Write ``batch`` in one transaction, then publish live status, tell listeners and
        enqueue retries. Outcomes of recipients this worker no longer holds are dropped."""
        now = datetime.now(UTC)
        decisions = {
            id(a): decide(
                a.reply,
                state_of(a.work.recipient),
                now,
                self.policy_for(a.work.message.doc),
                self.rng,
            )
            for a in batch.attempts
        }
        works = {w.id: w for w in batch.works()}
        ids = list(works)
        notices = await self._build_notices(batch, decisions, now)
        filed: set[int] = set()

        checked: list[bool] = [False]

        async def work(session: Any) -> tuple[list[dict[str, Any]], list[Change]]:
            filed.clear()
            if checked[0]:  # a lease was lost: find out which outcomes are still ours to write
                owned = {
                    d["_id"]
                    for part in chunked(ids)
                    for d in await self.db.recipients.find(
                        {"_id": {"$in": part}},
                        {"delivery_status": 1, "attempts": 1},
                        session=session,
                    ).to_list()
                    if d.get("delivery_status") in DUE_STATUSES
                    and int(d.get("attempts") or 0) == _attempts(works[d["_id"]])
                } | await self._still_in_parcels(list(works.values()), session)
            else:
                owned = set(ids)
            updates: list[tuple[Work, dict[str, Any]]] = []
            events: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            for a in batch.attempts:
                if a.work.id not in owned:
                    continue
                d = decisions[id(a)]
                fields = self._attempt_fields(a, d, now)
                updates.append((a.work, _update(a.work, fields)))
                changed.append({**a.work.recipient, **fields})
                events.append(self._event(a.work, d.event_type, now, self._metadata(a, d)))
            for w in batch.suppressed:
                if w.id not in owned:
                    continue
                fields = {
                    "delivery_status": "suppressed",
                    "lease_until": None,
                    "lease_token": None,
                    "updated_at": now,
                }
                updates.append((w, _update(w, fields)))
                changed.append({**w.recipient, **fields})
                events.append(self._event(w, "suppressed", now, {"at": "attempt"}))
            for r in batch.releases:
                if r.work.id not in owned:
                    continue
                fields = {
                    "delivery_status": unleased_status(r.work.recipient),
                    "lease_until": None,
                    "lease_token": None,
                    "next_attempt_at": r.due,
                    "updated_at": now,
                    "job_id": job_id(r.work.message.id, r.work.domain, r.due),
                }
                updates.append((r.work, {"$set": fields}))
                changed.append({**r.work.recipient, **fields})
            if await self._write(updates, session) != len(updates) and not checked[0]:
                raise _LeaseLost  # roll back, then write only what we still hold
            if events:
                # the ``sent`` events of a batch in one bucket a sender (events/buckets.py)
                docs = in_buckets(events, BUCKETED)
                await self.db.delivery_events.insert_many(docs, session=session)
            ours = [i for i, (n, _) in enumerate(notices) if set(n.recipient_ids) <= owned]
            changes = await file_notices(
                self.db,
                [notices[i] for i in ours],
                hostname=self.hostname,
                now=now,
                session=session,
            )
            filed.update(ours)
            for a in batch.attempts:
                d = decisions[id(a)]
                if d.suppress and a.work.id in owned:
                    await self.suppression.add(
                        a.work.address,
                        reason="hard_bounce",
                        bounce_class=d.bounce_class,
                        rule=d.rule,
                        source_message_id=a.work.message.id,
                        session=session,
                    )
            return changed, changes

        try:
            try:
                changed, changes = await in_transaction(self.mongo, work)
            except _LeaseLost:
                checked[0] = True
                changed, changes = await in_transaction(self.mongo, work)
        except BaseException:
            filed.clear()
            raise
        finally:
            for index, (_, blob_id) in enumerate(notices):
                if index not in filed:  # the transaction did not keep this notice
                    await self.blobs.delete(blob_id)
        written = {r["_id"] for r in changed}
        for a in batch.attempts:
            if a.work.id in written:
                d = decisions[id(a)]
                metrics.delivery_attempt(a.work.domain, d.status, d.bounce_class)
        await publish_many(self.redis, [status_event(r["message_id"], r) for r in changed])
        await self.notifier.committed(changes)
        await self._enqueue_retries(changed)

    async def _build_notices(
        self, batch: OutcomeBatch, decisions: dict[int, Decision], now: datetime
    ) -> list[tuple[Notice, ObjectId]]:
        """One DSN per (message, kind) in this batch, its raw bytes already in the blob store."""
        groups: dict[tuple[ObjectId, str], list[tuple[Attempt, Decision]]] = defaultdict(list)
        for a in batch.attempts:
            d = decisions[id(a)]
            # campaign mail: bounces are in the campaign's stats and event log, not thousands
            # of DSNs in the sender's inbox (docs/campaigns.md)
            if d.notice and not a.work.message.doc.get("campaign_id"):
                groups[(a.work.message.id, d.notice)].append((a, d))
        out = []
        for (_, kind), group in groups.items():
            message = group[0][0].work.message
            until = None
            if kind == "delay":
                until = retry_until(
                    state_of(group[0][0].work.recipient).queued_at,
                    self.policy_for(message.doc).lifetime,
                )
            notice = build_notice(
                hostname=self.hostname,
                message=message.doc,
                original_headers=message.headers,
                reports=[dsn_report(a.work.address, a.reply, d, a.mx) for a, d in group],
                recipient_ids=[a.work.id for a, _ in group],
                kind=kind,
                now=now,
                will_retry_until=until,
            )
            out.append((notice, await store_raw(self.blobs, notice)))
        return out

    @staticmethod
    def _key(w: Work) -> dict[str, Any]:
        return w.owned

    async def _write(self, updates: list[tuple[Work, dict[str, Any]]], session: Any) -> int:
        """The transaction's recipient updates: rows updated (``_update_rows``), parcel
        members moved out of their parcels as rows (``_move_out``). Returns how many of them
        were still ours."""
        rows = [(self._key(w), u) for w, u in updates if "parcel_id" not in w.recipient]
        moved = [(w, u) for w, u in updates if "parcel_id" in w.recipient]
        return await self._update_rows(rows, session) + await self._move_out(moved, session)

    async def _move_out(self, moved: list[tuple[Work, dict[str, Any]]], session: Any) -> int:
        """Members leaving their parcels with an outcome (delivery/parcels.py). Their parcels
        are read in the transaction first: each must still hold every member written here
        (whoever holds the domain owns what its parcels hold), else nothing moves and the
        count says so (the caller rolls back and writes what is still ours). Then, in one bulk
        write, a parcel left with nothing is deleted and from any other the members are
        pulled (a parcel changed meanwhile by another transaction makes this one conflict
        and run again); the members are inserted as rows with the outcome applied. Every
        filter is an ``_id``: SecantusDB scans the whole collection for an update whose
        filter adds a condition on the parcel's members."""
        if not moved:
            return 0
        groups: dict[str, list[tuple[Work, dict[str, Any]]]] = {}
        for w, u in moved:
            groups.setdefault(w.recipient["parcel_id"], []).append((w, u))
        held = await self._parcels_hold(list(groups), session)
        requests: list[DeleteOne | UpdateOne] = []
        for pid, group in groups.items():
            ids = {w.id for w, _ in group}
            if not ids <= held.get(pid, set()):
                return 0
            if ids == held[pid]:
                requests.append(DeleteOne({"_id": pid}))
            else:
                requests.append(
                    UpdateOne({"_id": pid}, {"$pull": {"parcel": {"_id": {"$in": list(ids)}}}})
                )
        await self.db.recipients.bulk_write(requests, ordered=False, session=session)
        await self.db.recipients.insert_many(
            [_applied(as_row(w.recipient), u) for w, u in moved], session=session
        )
        return len(moved)

    async def _parcels_hold(self, pids: list[Any], session: Any) -> dict[Any, set[ObjectId]]:
        """What each of these parcels still holds (read in the transaction); a parcel gone
        holds nothing."""
        if not pids:
            return {}
        found = await self.db.recipients.find(
            {"_id": {"$in": pids}}, {"parcel._id": 1}, session=session
        ).to_list()
        return {d["_id"]: {m["_id"] for m in d.get("parcel", [])} for d in found}

    async def _still_in_parcels(self, works: list[Work], session: Any) -> set[ObjectId]:
        """The members of ``works`` their parcels still hold (read in the transaction)."""
        pids = list({w.recipient["parcel_id"] for w in works if "parcel_id" in w.recipient})
        return set().union(*(await self._parcels_hold(pids, session)).values())

    async def _update_rows(
        self, updates: list[tuple[dict[str, Any], dict[str, Any]]], session: Any
    ) -> int:
        """All the transaction's row updates in one unordered bulk write (one round
        trip): identical updates (the same reply from one MX, for recipients at the same
        attempt count) as one multi-document update each, the rest one by one. SecantusDB's
        cost per updated document is a third lower in a multi-document update than in single
        updates. Returns how many recipients matched (each filter says "still pending, at the
        attempt count we read")."""
        groups: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        for key, update in updates:
            signature = repr((key["attempts"], sorted(update["$set"].items()), "$unset" in update))
            groups.setdefault(signature, ([], update))[0].append(key)
        requests: list[UpdateOne | UpdateMany] = []
        for keys, update in groups.values():
            if len(keys) < 2:
                requests += [UpdateOne(k, update) for k in keys]
                continue
            condition = {k: v for k, v in keys[0].items() if k != "_id"}
            requests += [
                UpdateMany({"_id": {"$in": [k["_id"] for k in part]}, **condition}, update)
                for part in chunked(keys)
            ]
        if not requests:
            return 0
        result = await self.db.recipients.bulk_write(requests, ordered=False, session=session)
        return int(result.matched_count)

    @staticmethod
    def _attempt_fields(a: Attempt, d: Decision, now: datetime) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "delivery_status": d.status,
            "attempts": d.attempts,
            "lease_until": None,
            "lease_token": None,
            "updated_at": now,
            "bounce_class": d.bounce_class,
            "last_reply": {
                "code": a.reply.code,
                "enhanced": a.reply.enhanced,
                "text": a.reply.text,
                "mx": a.mx,
            },
            "last_attempt_at": now,
        }
        if d.status == "deferred":
            fields["next_attempt_at"] = d.next_attempt_at
            fields["job_id"] = job_id(a.work.message.id, a.work.domain, d.next_attempt_at)
            if d.notice == "delay":
                fields["delay_notice_sent"] = True
        return fields

    @staticmethod
    def _metadata(a: Attempt, d: Decision) -> dict[str, Any]:
        return {
            "attempt": d.attempts,
            "code": a.reply.code,
            "enhanced": a.reply.enhanced,
            "text": a.reply.text,
            "mx": a.mx,
            "bounce_class": d.bounce_class,
            "rule": d.rule,
            "next_attempt_at": d.next_attempt_at,
        }

    @staticmethod
    def _event(w: Work, event_type: str, now: datetime, metadata: dict[str, Any]) -> dict[str, Any]:
        # sender_user_id / sender_domain: the reputation counters aggregate on them.
        event = {
            "message_id": w.message.id,
            "recipient": w.address,
            "recipient_id": w.id,
            "event_type": event_type,
            "occurred_at": now,
            "sender_user_id": w.message.sender_user_id,
            "sender_domain": w.message.sender_domain,
            "metadata": metadata,
        }
        if w.message.doc.get("campaign_id"):  # campaign mail: in the campaign's event log
            event["campaign_id"] = w.message.doc["campaign_id"]
        return event

    async def _enqueue_retries(self, changed: list[dict[str, Any]]) -> None:
        """A job at each recipient's next due time (the id the sweep would use for it too)."""
        jobs: dict[str, tuple[ObjectId, str, datetime]] = {}
        for r in changed:
            if r["delivery_status"] in ("deferred", "queued") and r.get("job_id"):
                jobs[r["job_id"]] = (r["message_id"], r["domain"], r["next_attempt_at"])
        await self.queue.enqueue_many(
            [
                QueuedJob("deliver_domain", (str(message_id), domain), jid, at)
                for jid, (message_id, domain, at) in jobs.items()
            ]
        )


def _applied(row: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``update`` (``$set`` and ``$unset`` only) applied."""
    out = {**row, **update["$set"]}
    for key in update.get("$unset", {}):
        out.pop(key, None)
    return out


def _update(w: Work, fields: dict[str, Any]) -> dict[str, Any]:
    """The recipient's update: ``fields``, and a row that carried its own MIME (campaign mail,
    ``delivery/prepare.py``) lets it go once nothing will be sent from it again."""
    if w.recipient.get("raw") is not None and fields["delivery_status"] not in UNFINISHED:
        return {"$set": fields, "$unset": {"raw": ""}}
    return {"$set": fields}
