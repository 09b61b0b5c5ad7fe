"""The campaign batch sender (issue 15): one batch at a time, paced, through the ordinary
delivery pipeline.

A batch, run by the ``campaign_batch`` job under the campaign's batch lease:

1. reads the campaign from MongoDB: only a ``sending`` campaign sends, so pause and cancel
   take effect before the next batch; a reputation pause or the warm-up ramp makes it wait
   (``waiting`` shows why);
2. takes the next pending recipients in ``seq`` order (the parts of the list from the
   campaign's ``pending_floor``: ``lists.pending_from``), as many as the pacing plan and the
   warm-up allowance permit;
3. checks the suppression list *now* (MongoDB, the sender's scope and the global one): an
   unsubscribe POSTed a moment ago stops this batch's message;
4. renders each message (template version + campaign variables + recipient variables), with
   List-Unsubscribe headers and, when the campaign asks, tracking;
5. in one transaction: the ``recipients`` rows (queued for the delivery workers, which apply
   per-domain throttles and reputation as for any mail), the ``queued`` events (in one bucket
   document: ``events/buckets.py``) and the campaign's ``pending_floor`` moved past the batch:
   that is what makes its recipients ``queued``; only the suppressed and failed ones, and the
   tracked links of a queued one, are written to the list (``lists.mark``). A row to a remote
   address carries its rendered MIME itself (``raw``, dropped once the row's delivery is
   final): campaign mail has no mailbox view, so it needs no message document or blob, which
   the orphan sweep would only delete again after delivery. Mail to a hosted user is stored
   as a message with its mailbox copy.
   A row's id *is* its campaign recipient's id, so a batch replayed after a crash cannot
   store a second message for anyone (the insert fails on the duplicate id and nothing of
   that batch commits twice);
6. wakes the delivery lanes and schedules the next batch.

The ``campaign_batch`` job runs an unpaced campaign's batches one after another for up to
``CHAIN_SECONDS`` (``run_batches``), and each of them but the last renders ahead
(``_Ahead``): while a batch checks suppressions and commits, which is the database's work,
the next batch's recipients are read and their messages rendered and built, which is this
process's. The next batch takes them when nothing has moved under them (its floor is where
the batch before left it, no add since, the same template version), and steps 1, 3 and 5
are still its own: the status and the suppression list are read when it runs, so a pause,
cancel or unsubscribe stops a rendered-ahead message as it stops any other.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import structlog
from bson import ObjectId

from app.adapters.blob_batches import write_blobs
from app.adapters.mongo import Mongo, in_transaction, is_duplicate_key, update_and_read
from app.adapters.queue import JobQueue, QueuedJob
from app.config import Settings
from app.domain.addresses import Address, domain_of
from app.domain.campaigns import (
    aware,
    batch_plan,
    day_of,
    next_day_start,
    warmup_allowance,
)
from app.domain.errors import ValidationError
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
from app.services.campaigns import lists
from app.services.campaigns.lists import Recipient, pending_from
from app.services.campaigns.messages import Built, RenderHelpers, Signing, build
from app.services.campaigns.store import wake
from app.services.delivery.parcels import parcels_of
from app.services.events.buckets import in_buckets
from app.services.feedback.reputation import ReputationService
from app.services.feedback.suppression import SuppressionService, user_scope
from app.services.sending.accepted import deliver_locally
from app.services.sending.compose import Recipients, message_doc, recipient_docs
from app.services.templates.render import TemplateRenderer

log = structlog.get_logger(__name__)

MAX_EARLY_SECONDS = 2.0  # a batch job this early waits for its time; earlier ones end
WAIT_SECONDS = 60.0  # how often a campaign waiting on a reputation pause looks again
AHEAD_SECONDS = 60.0  # a batch rendered ahead and not taken by then is dropped
CHAIN_SECONDS = 30.0  # how long one campaign_batch job runs an unpaced campaign's batches
BUILD_CHUNK = 50  # messages built between yields to the event loop (a commit's replies wait)


class CampaignSender:
    def __init__(
        self,
        *,
        mongo: Mongo,
        queue: JobQueue,
        accounts: AccountService,
        renderer: TemplateRenderer,
        suppression: SuppressionService,
        reputation: ReputationService,
        settings: Settings,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.queue = queue
        self.accounts = accounts
        self.renderer = renderer
        self.suppression = suppression
        self.reputation = reputation
        self.settings = settings
        key = settings.secret_key.get_secret_value() if settings.secret_key else ""
        self.signing = Signing(settings.base_url, key.encode(), settings.hostname)
        self.helpers = RenderHelpers(
            settings.campaign_render_processes, renderer.limits, self.signing
        )
        self._lease = timedelta(seconds=settings.campaign_lease_seconds)
        # by campaign: the next batch, read and rendered while the last one committed
        self._ahead: dict[ObjectId, _Ahead] = {}
        self.ahead_taken = 0  # batches that took what was rendered ahead (what tests read)

    async def close(self) -> None:
        """Drop what is rendered ahead (the process is stopping: the next holder renders it)
        and stop the render helpers."""
        for ahead in self._ahead.values():
            ahead.task.cancel()
        self._ahead.clear()
        await self.helpers.close()

    # --- one batch ---------------------------------------------------------------------

    async def run_batches(
        self, campaign_id: ObjectId, seconds: float = CHAIN_SECONDS
    ) -> dict[str, Any]:
        """What the ``campaign_batch`` job runs: the campaign's next batch and, while the
        campaign is unpaced and still sending, the batches after it, one after another in
        this process for up to ``seconds`` (each under its own lease, in its own
        transaction). The last one hands the campaign on to the next job as any batch does.
        So the batch rendered ahead is rendered where it is taken: with several workers the
        next job may run in any of them. Returns the last batch's result, with ``chained``:
        how many batches ran."""
        deadline = time.monotonic() + seconds
        chained = 0
        while True:
            last = time.monotonic() >= deadline
            result = await self.run_batch(campaign_id, chain=not last)
            chained += 1
            if not result.pop("next_now", False):
                return {**result, "chained": chained}

    async def _update_campaign(
        self, query: dict[str, Any], update: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The campaign after ``update`` if ``query`` matched: an update and a read, not a
        findAndModify, which SecantusDB runs as a scan of the collection when it matches
        (``update_and_read``); outside a transaction, as every caller here acts on the campaign
        as it is then."""
        return await update_and_read(
            self.db.campaigns, query, update, None, outside_transaction=True
        )

    async def run_batch(self, campaign_id: ObjectId, *, chain: bool = False) -> dict[str, Any]:
        """One batch. ``chain``: the caller runs the next batch itself when it is due at once
        (``next_now`` in the result, and no job is enqueued for it), so this batch renders
        that one ahead (``_Ahead``); without it the next batch's job is enqueued."""
        due = await self.db.campaigns.find_one({"_id": campaign_id}, {"next_batch_at": 1})
        if due and due.get("next_batch_at"):
            # the queue may run a deferred job a few milliseconds early: wait for the plan
            early = (aware(due["next_batch_at"]) - datetime.now(UTC)).total_seconds()
            if 0 < early <= MAX_EARLY_SECONDS:
                await asyncio.sleep(early)
        now = datetime.now(UTC)
        lease = secrets.token_hex(8)
        campaign = await self._update_campaign(
            {
                "_id": campaign_id,
                "status": {"$in": ["sending", "scheduled"]},
                "batch_lease_until": _lease_free(now),
                "next_batch_at": {"$lte": now},
            },
            {
                "$set": {
                    "batch_lease_until": now + self._lease,
                    "lease": lease,
                }
            },
        )
        if campaign is None or campaign.get("lease") != lease:  # (its lease lapsed at once)
            return {"ran": False}
        try:
            return await self._batch(campaign, now, chain)
        finally:  # (already released when the batch scheduled the next one)
            await self.db.campaigns.update_one(
                {"_id": campaign_id, "lease": lease}, {"$set": {"batch_lease_until": None}}
            )

    async def _batch(self, campaign: dict[str, Any], now: datetime, chain: bool) -> dict[str, Any]:
        if campaign["status"] == "scheduled":
            campaign["status"] = "sending"
            await self.db.campaigns.update_one(
                {"_id": campaign["_id"], "status": "scheduled"}, {"$set": {"status": "sending"}}
            )
        pause = await self.reputation.pause_for(campaign["user_id"], campaign["from_domain"])
        if pause is not None:
            return await self._wait(campaign, "reputation", now + timedelta(seconds=WAIT_SECONDS))
        plan = batch_plan(campaign.get("rate_per_minute"), self.settings.campaign_batch_max)
        size = plan.size
        sending_days, sent_today = await self._warmup_state(campaign["from_domain"], now)
        allowance = warmup_allowance(self.settings.campaign_warmup_ramp, sending_days, sent_today)
        if allowance is not None:
            if allowance == 0:
                return await self._wait(campaign, "warmup", next_day_start(now))
            size = min(size, allowance)
        taken = await self._take_ahead(campaign, size)
        prebuilt: dict[ObjectId, Built] = {}
        if taken is not None:
            pending, prebuilt = taken
        else:
            pending = await pending_from(self.db, campaign, _floor(campaign), size)
        if not pending:
            done = await self.db.campaigns.update_one(
                # an add that committed since has recipients for another batch
                {"_id": campaign["_id"], "status": "sending", "next_seq": campaign["next_seq"]},
                {"$set": {"status": "completed", "completed_at": now, "waiting": None}},
            )
            if not done.modified_count:
                return await self._wait(campaign, None, now)
            return {"ran": True, "completed": True}
        floor = pending[-1].seq + 1  # what this batch moves the campaign's pending_floor to
        chain = chain and not plan.interval_seconds  # a paced batch's successor waits anyway
        if chain and floor < campaign["next_seq"]:
            # the next batch reads and renders while this one checks, builds and commits
            self._render_ahead(campaign, floor, plan.size)
        outcome = await self._send(campaign, pending, now, floor, prebuilt)
        if outcome["queued"]:
            await self._count_warmup(campaign["from_domain"], now, outcome["queued"])
        following = await self._update_campaign(
            {"_id": campaign["_id"]},
            {
                "$set": {
                    "next_batch_at": now + timedelta(seconds=plan.interval_seconds),
                    "waiting": None,
                    # released here, before the next batch's job is enqueued: that job may
                    # start at once and must find the lease free
                    "batch_lease_until": None,
                },
                "$inc": {"batches": 1},
                "$push": {
                    "batch_log": {
                        "$each": [{"at": now, "size": len(pending), **outcome}],
                        "$slice": -200,
                    }
                },
            },
        )
        if following and following["status"] == "sending":
            if chain:
                return {"ran": True, **outcome, "next_now": True}  # the caller runs it
            await wake(self.queue, following)
        return {"ran": True, **outcome}

    async def _wait(
        self, campaign: dict[str, Any], why: str | None, until: datetime
    ) -> dict[str, Any]:
        updated = await self._update_campaign(
            {"_id": campaign["_id"]},
            {
                "$set": {"waiting": why, "next_batch_at": until, "batch_lease_until": None},
                "$inc": {"batches": 1},
            },
        )
        if updated and updated["status"] == "sending":
            await wake(self.queue, updated)
        return {"ran": True, "waiting": why}

    async def _send(
        self,
        campaign: dict[str, Any],
        pending: list[Recipient],
        now: datetime,
        floor: int,
        prebuilt: dict[ObjectId, Built],
    ) -> dict[str, int]:
        """Queue a batch (``prebuilt``: those of its messages rendered ahead)."""
        scope = user_scope(campaign["user_id"])
        # three reads at once: the suppressions in force now, the template version, and which
        # recipients are hosted here (of the whole batch: a suppressed one is simply unused)
        suppressed, version, local_users = await asyncio.gather(
            self.suppression.suppressed([r.key for r in pending], scope=scope),
            self.db.template_versions.find_one({"_id": campaign["version_id"]}),
            self._hosted_users(pending),
        )
        to_send = [r for r in pending if r.key not in suppressed]
        skipped = [r for r in pending if r.key in suppressed]
        if version is None:
            raise ValidationError.on("template", "the campaign's template version is gone")
        missing = [r for r in to_send if r.id not in prebuilt]
        prebuilt.update(await self._render(campaign, version, missing, now))
        # a render helper answers a message's bytes alone (messages.py): a hosted recipient's
        # mailbox copy needs the message too, built here again (the bytes with it)
        hosted = [
            r
            for r in to_send
            if r.key in local_users and prebuilt[r.id].message is None and not prebuilt[r.id].error
        ]
        prebuilt.update(await self._render(campaign, version, hosted, now, helpers=False))
        built = [prebuilt[r.id] for r in to_send]
        failed = [(r, b.error) for r, b in zip(to_send, built, strict=True) if b.error is not None]
        ready = [(r, b) for r, b in zip(to_send, built, strict=True) if b.error is None]
        viewer = Viewer(campaign["user_id"], campaign["from"]["email"])
        # messages: only those to hosted users, who get a mailbox copy (``local``, with its
        # raw MIME in a blob); ``raws``: their MIME bytes, in the same order
        messages, raws, recipients = [], [], []
        carried = _carried(campaign)
        for r, b in ready:
            to = Recipients([Address(r.email, None)], [], [])  # (as the message's To)
            if r.key not in local_users:  # (the address normalized)
                # remote: the delivery row carries its MIME (``raw``), no message document
                (row,) = recipient_docs(
                    {"_id": r.id, "sender_user_id": campaign["user_id"]},
                    to,
                    local_users,
                    set(),
                    now,
                    None,
                )
                row.update(_id=r.id, **carried, raw=b.raw, size=len(b.raw))
                recipients.append(row)
                continue
            # raw_blob_id: set when the blob is written, in the batch's transaction
            assert b.message is not None  # (built here above)
            message = message_doc(viewer, b.message, [], b.raw, ObjectId(), now, None)
            message.update(_id=r.id, campaign_id=campaign["_id"], bulk=True)
            rows = recipient_docs(message, to, local_users, set(), now, None)
            for row in rows:
                row.update(_id=r.id, campaign_id=campaign["_id"])
            messages.append(message)
            raws.append(b.raw)
            recipients.extend(rows)
        # the batch's events: a bucket document for each kind (events/buckets.py)
        events = in_buckets(
            [_event(campaign, r["_id"], r["address"], "queued", now) for r in recipients]
            + [_event(campaign, r.id, r.email, "suppressed", now) for r in skipped]
        )
        # what the list keeps of a recipient beyond what the floor says (lists.py): the
        # suppressed and the failed ones, and the links a queued one's clicks may go to
        marks = lists.mark(
            [(r, {"states": "suppressed"}) for r in skipped]
            + [(r, {"states": "failed", "errors": err}) for r, err in failed]
            + [(r, {"links": list(b.links)}) for r, b in ready if b.links]
        )
        read_floor = _floor(campaign)

        async def work(session: Any) -> list[Any]:
            changes: list[Any] = []
            # first, in the transaction: the campaign is still sending and its floor where this
            # batch read it. A cancel (or pause) that landed while the batch was rendering
            # aborts the whole batch: nothing of it is stored or delivered, and its recipients,
            # above the floor, are canceled with the campaign (issue 15: a batch either
            # completes or its recipients end canceled, never queued for nothing). A floor
            # moved meanwhile is another run of this batch that committed first.
            still = await self.db.campaigns.update_one(
                {
                    "_id": campaign["_id"],
                    "status": "sending",
                    "pending_floor": read_floor or {"$in": [0, None]},
                },
                {"$set": {"batch_committed_at": now, "pending_floor": floor}},
                session=session,
            )
            if not still.matched_count:
                raise _Stopped
            if marks:
                await self.db.campaign_lists.bulk_write(marks, ordered=False, session=session)
            if messages:
                # the raw MIME commits with the messages that name it, or not at all
                written = await write_blobs(
                    self.db,
                    [(raw, "message.eml", {"kind": "raw"}) for raw in raws],
                    session=session,
                )
                for message, blob in zip(messages, written, strict=True):
                    message["raw_blob_id"] = blob
                await self.db.messages.insert_many(messages, session=session)
            if recipients:
                # mail to remote addresses: one parcel per domain (delivery/parcels.py)
                remote = [x for x in recipients if x.get("raw") is not None]
                rows = [x for x in recipients if x.get("raw") is None]
                for part in (rows, parcels_of(remote)):
                    if part:
                        await self.db.recipients.insert_many(part, session=session)
                local: dict[ObjectId, list[dict[str, Any]]] = {}
                for x in recipients:  # one row per message: by message id, not a scan each
                    if x.get("local_user_id"):
                        local.setdefault(x["message_id"], []).append(x)
                for message in messages:
                    if message["_id"] in local:
                        changes += await deliver_locally(
                            self.db,
                            message,
                            local[message["_id"]],
                            now,
                            session,
                            hostname=self.settings.hostname,
                        )
            if events:
                await self.db.delivery_events.insert_many(events, session=session)
            return changes

        try:
            await in_transaction(self.mongo, work)
        except _Stopped:
            log.info("campaign batch stopped: its campaign changed", campaign=str(campaign["_id"]))
            return {"queued": 0, "suppressed": 0, "failed": 0}
        except Exception as e:
            if is_duplicate_key(e):  # replayed: another run committed these already
                log.warning("campaign batch replayed", campaign=str(campaign["_id"]))
                return {"queued": 0, "suppressed": 0, "failed": 0}
            raise
        await self._wake_lanes(recipients)
        return {"queued": len(recipients), "suppressed": len(skipped), "failed": len(failed)}

    async def _hosted_users(self, pending: list[Recipient]) -> dict[str, ObjectId]:
        """The users of the batch's addresses hosted here (``users_for_addresses``), asking
        only about those at a hosted domain: every identity is at one (``create_user``,
        ``add_alias``), and a batch's 500 addresses are at a few dozen domains. The identities
        read cost SecantusDB 10-17 ms of CPU a batch of 500, the domains read 1.5."""
        hosted = await self.accounts.hosted_among({domain_of(r.key) for r in pending})
        ours = [r.email for r in pending if domain_of(r.key) in hosted]
        return await self.accounts.users_for_addresses(ours) if ours else {}

    async def _wake_lanes(self, recipients: list[dict[str, Any]]) -> None:
        """One ``deliver_domain`` job per destination domain of the batch's remote mail, all
        in one Redis round trip (``enqueue_many``)."""
        first: dict[str, dict[str, Any]] = {}
        for x in recipients:
            if not x.get("local_user_id"):
                first.setdefault(x["domain"], x)
        lanes = sorted((domain, str(row["message_id"])) for domain, row in first.items())
        await self.queue.enqueue_many(
            [
                QueuedJob("deliver_domain", (mid, domain), f"deliver:{mid}:{domain}")
                for domain, mid in lanes
            ]
        )

    async def _render(
        self,
        campaign: dict[str, Any],
        version: dict[str, Any],
        rows: list[Recipient],
        now: datetime,
        *,
        helpers: bool = True,
    ) -> dict[ObjectId, Built]:
        """Each recipient's message, by recipient id: rendered and built in the render helper
        processes (messages.py; their answers carry the bytes, not the message), or when none
        can (or not ``helpers``), rendered in the render threads and built ``BUILD_CHUNK`` at a
        time with the event loop free in between, so that a batch rendered ahead does not hold
        up the replies of the transaction it overlaps."""
        if not rows:
            return {}
        helped = (
            await self.helpers.render(
                campaign, version, [(r.id, r.email, r.variables) for r in rows], now
            )
            if helpers
            else None
        )
        if helped is not None:
            return {r.id: b for r, b in zip(rows, helped, strict=True)}
        shared = campaign.get("variables", {})
        rendered = await self.renderer.render_versions(
            [(version, {**shared, **r.variables}) for r in rows]
        )
        built: dict[ObjectId, Built] = {}
        for n, (r, answer) in enumerate(zip(rows, rendered, strict=True), 1):
            built[r.id] = build(campaign, r.id, r.email, answer, now, self.signing)
            if n % BUILD_CHUNK == 0:
                await asyncio.sleep(0)
        return built

    # --- rendering ahead -----------------------------------------------------------------

    def _render_ahead(self, campaign: dict[str, Any], floor: int, size: int) -> None:
        """Start reading and rendering the batch after this one: the ``size`` recipients
        pending from ``floor``, the floor this batch sets when it commits. The batch's own
        writes are all below it, so what the read finds is what the next batch would."""
        now = datetime.now(UTC)
        following = {**campaign, "pending_floor": floor}

        async def prepare() -> tuple[list[Recipient], dict[ObjectId, Built]]:
            pending = await pending_from(self.db, following, floor, size)
            version = await self.db.template_versions.find_one({"_id": campaign["version_id"]})
            if version is None:  # the batch itself says so
                return [], {}
            return pending, await self._render(following, version, pending, now)

        for cid, old in list(self._ahead.items()):  # this campaign's, and any left lying
            if cid == campaign["_id"] or old.stale():
                del self._ahead[cid]
                old.task.cancel()
        task = asyncio.create_task(prepare())
        task.add_done_callback(_retrieved)
        self._ahead[campaign["_id"]] = _Ahead(
            floor, size, campaign["next_seq"], campaign["version_id"], time.monotonic(), task
        )

    async def _take_ahead(
        self, campaign: dict[str, Any], size: int
    ) -> tuple[list[Recipient], dict[ObjectId, Built]] | None:
        """(pending, built) rendered ahead for this batch, or None: nothing was, or
        something moved under it (the last batch did not commit, an add committed, another
        process ran a batch, the version changed) or this batch may take more than it read
        (the warm-up's allowance held the last one back)."""
        ahead = self._ahead.pop(campaign["_id"], None)
        if ahead is None:
            return None
        if (
            ahead.floor != _floor(campaign)
            or ahead.size < size
            or ahead.next_seq != campaign["next_seq"]
            or ahead.version_id != campaign["version_id"]
            or ahead.stale()
        ):
            ahead.task.cancel()
            return None
        try:
            pending, built = await ahead.task
        except Exception as e:  # the batch reads and renders again
            log.warning("campaign batch rendered ahead failed", error=repr(e))
            return None
        pending = pending[:size]
        if not pending:
            return None
        self.ahead_taken += 1
        return pending, {r.id: built[r.id] for r in pending}

    # --- warm-up -------------------------------------------------------------------------

    async def _warmup_state(self, domain: str, now: datetime) -> tuple[int, int]:
        """(days the domain has sent campaign mail before today, recipients queued today)."""
        doc = await self.db.campaign_warmup.find_one({"_id": domain}) or {}
        today = day_of(now)
        days = [d for d in doc.get("days", []) if d < today]
        return len(days), int((doc.get("counts") or {}).get(today, 0))

    async def _count_warmup(self, domain: str, now: datetime, n: int) -> None:
        today = day_of(now)
        await self.db.campaign_warmup.update_one(
            {"_id": domain},
            {"$addToSet": {"days": today}, "$inc": {f"counts.{today}": n}},
            upsert=True,
        )

    # --- the sweep -------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Wake every campaign that should be sending and has no live batch: after a worker
        was killed (its lease lapses) or Redis lost the jobs. Returns how many it woke."""
        now = datetime.now(UTC)
        woke = 0
        async for c in self.db.campaigns.find(
            {
                "status": {"$in": ["sending", "scheduled"]},
                "next_batch_at": {
                    "$lte": now - timedelta(seconds=self.settings.campaign_stall_seconds)
                },
                "batch_lease_until": _lease_free(now),
            }
        ):
            await self.queue.enqueue(
                "campaign_batch", str(c["_id"]), job_id=f"campaign-sweep:{c['_id']}:{c['batches']}"
            )
            woke += 1
        return woke


class _Ahead(NamedTuple):
    """A batch being read and rendered ahead, and the state it was read in."""

    floor: int  # the pending_floor it reads from
    size: int  # how many it reads (a batch may take fewer: its first ones)
    next_seq: int  # the campaign's next_seq then (an add since moves it)
    version_id: Any
    started: float  # time.monotonic()
    task: asyncio.Task[tuple[list[Recipient], dict[ObjectId, Built]]]

    def stale(self) -> bool:
        return self.started < time.monotonic() - AHEAD_SECONDS


def _lease_free(now: datetime) -> dict[str, Any]:
    """A batch lease that is free at ``now``: none, or lapsed. One condition on the field
    (``$not $gt``, which also matches null and missing) where ``$or`` of two would make
    SecantusDB scan the collection (docs/architecture.md)."""
    return {"$not": {"$gt": now}}


def _floor(campaign: dict[str, Any]) -> int:
    """The campaign's ``pending_floor``: no recipient below it is pending (lists.py)."""
    return int(campaign.get("pending_floor") or 0)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A render-ahead task nobody took: its error (or cancellation) is not left unread."""
    if not task.cancelled():
        task.exception()


class _Stopped(Exception):
    """The campaign left ``sending``, or a recipient left ``pending``, during the batch."""


def _carried(campaign: dict[str, Any]) -> dict[str, Any]:
    """What a campaign's delivery row to a remote address carries in place of a message
    document: the lanes sign and send its ``raw`` MIME (``delivery/prepare.py``), and bounces,
    the event log and the stats need only these."""
    return {
        "campaign_id": campaign["_id"],
        "from": {"email": campaign["from"]["email"], "name": campaign["from"].get("name")},
        "bulk": True,
    }


def _event(
    campaign: dict[str, Any], message_id: ObjectId, address: str, kind: str, now: datetime
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "recipient": address,
        "recipient_id": message_id,
        "event_type": kind,
        "occurred_at": now,
        "sender_user_id": campaign["user_id"],
        "sender_domain": campaign["from_domain"],
        "campaign_id": campaign["_id"],
        "metadata": {},
    }
