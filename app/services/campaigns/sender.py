"""The campaign batch sender (issue 15): one batch at a time, paced, through the ordinary
delivery pipeline.

A batch, run by the ``campaign_batch`` job under the campaign's batch lease:

1. reads the campaign from MongoDB: only a ``sending`` campaign sends, so pause and cancel
   take effect before the next batch; a reputation pause or the warm-up ramp makes it wait
   (``waiting`` shows why);
2. takes the next pending recipients in ``seq`` order (bounded ranges from the campaign's
   ``pending_floor``: ``_next_pending``), as many as the pacing plan and the warm-up allowance
   permit;
3. checks the suppression list *now* (MongoDB, the sender's scope and the global one): an
   unsubscribe POSTed a moment ago stops this batch's message;
4. renders each message (template version + campaign variables + recipient variables), with
   List-Unsubscribe headers and, when the campaign asks, tracking;
5. in one transaction: the ``recipients`` rows (queued for the delivery workers, which apply
   per-domain throttles and reputation as for any mail), the ``queued`` events (in one bucket
   document: ``events/buckets.py``) and the
   campaign recipients' new states (queued ones by moving the campaign's ``pending_floor``
   past them when it can: ``_mark_queued``). A row to a remote address carries its rendered MIME
   itself (``raw``, dropped once the row's delivery is final): campaign mail has no mailbox
   view, so it needs no message document or blob, which the orphan sweep would only delete
   again after delivery. Mail to a hosted user is stored as a message with its mailbox copy.
   A row's id *is* its campaign recipient's id, so a batch replayed after a crash cannot
   store a second message for anyone (the insert fails on the duplicate id and nothing of
   that batch commits twice);
6. wakes the delivery lanes and schedules the next batch.

The ``campaign_batch`` job runs an unpaced campaign's batches one after another for up to
``CHAIN_SECONDS`` (``run_batches``), and each of them but the last renders ahead
(``_Ahead``): while a batch checks suppressions and commits, which is the database's work,
the next batch's recipients are read and their messages rendered and built, which is this
process's. The next batch takes them when nothing has moved under them (its floor is where
the batch before left it, no add is open, the same template version), and steps 1, 3 and 5
are still its own: the status and the suppression list are read when it runs, so a pause,
cancel or unsubscribe stops a rendered-ahead message as it stops any other.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import structlog
from bson import ObjectId

from app.adapters.blob_batches import write_blobs
from app.adapters.mongo import Mongo, UpdateMany, in_transaction, is_duplicate_key
from app.adapters.queue import JobQueue, in_waves
from app.config import Settings
from app.domain.addresses import Address, normalize_email
from app.domain.campaign_tokens import (
    campaign_message_id,
    click_token,
    open_token,
    unsubscribe_address,
    unsubscribe_token,
)
from app.domain.campaigns import (
    adds_open,
    aware,
    batch_plan,
    day_of,
    next_day_start,
    still_pending,
    warmup_allowance,
)
from app.domain.errors import ValidationError
from app.domain.html_safety import sanitize_html
from app.domain.mime import OutgoingMessage, build_mime
from app.domain.templates import Rendered
from app.domain.tracking import add_pixel, rewrite_links
from app.domain.viewer import Viewer
from app.services.accounts import AccountService
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
ADD_WAIT_SECONDS = 1.0  # how often a campaign with no one pending but an add open looks again
AHEAD_SECONDS = 60.0  # a batch rendered ahead and not taken by then is dropped
CHAIN_SECONDS = 30.0  # how long one campaign_batch job runs an unpaced campaign's batches
WAKE_AT_ONCE = 10  # deliver_domain jobs enqueued concurrently (each its own Redis connection)
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
        self.secret = key.encode()
        self._lease = timedelta(seconds=settings.campaign_lease_seconds)
        # by campaign: the next batch, read and rendered while the last one committed
        self._ahead: dict[ObjectId, _Ahead] = {}
        self.ahead_taken = 0  # batches that took what was rendered ahead (what tests read)

    def close(self) -> None:
        """Drop what is rendered ahead (the process is stopping: the next holder renders it)."""
        for ahead in self._ahead.values():
            ahead.task.cancel()
        self._ahead.clear()

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
        campaign = await self.db.campaigns.find_one_and_update(
            {
                "_id": campaign_id,
                "status": {"$in": ["sending", "scheduled"]},
                "$or": [{"batch_lease_until": None}, {"batch_lease_until": {"$lte": now}}],
                "next_batch_at": {"$lte": now},
            },
            {
                "$set": {
                    "batch_lease_until": now + self._lease,
                    "lease": lease,
                }
            },
            return_document=True,
        )
        if campaign is None:
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
        adding = adds_open(campaign, now)
        taken = await self._take_ahead(campaign, size, adding)
        prebuilt: dict[ObjectId, _Built] = {}
        floor: int | None
        if taken is not None:
            pending, floor, prebuilt = taken
        else:
            pending, floor = await self._next_pending(campaign, size, adding)
        if not pending and adding:  # an add's rows are still landing: not complete yet
            return await self._wait(campaign, None, now + timedelta(seconds=ADD_WAIT_SECONDS))
        if not pending:
            await self.db.campaigns.update_one(
                {"_id": campaign["_id"], "status": "sending"},
                {"$set": {"status": "completed", "completed_at": now, "waiting": None}},
            )
            return {"ran": True, "completed": True}
        chain = chain and not plan.interval_seconds  # a paced batch's successor waits anyway
        if chain and floor is not None and floor < campaign["next_seq"]:
            # the next batch reads and renders while this one checks, builds and commits
            self._render_ahead(campaign, floor, plan.size)
        outcome = await self._send(campaign, pending, now, floor, prebuilt)
        if outcome["queued"]:
            await self._count_warmup(campaign["from_domain"], now, outcome["queued"])
        following = await self.db.campaigns.find_one_and_update(
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
            return_document=True,
        )
        if following and following["status"] == "sending":
            if chain:
                return {"ran": True, **outcome, "next_now": True}  # the caller runs it
            await wake(self.queue, following)
        return {"ran": True, **outcome}

    async def _wait(
        self, campaign: dict[str, Any], why: str | None, until: datetime
    ) -> dict[str, Any]:
        updated = await self.db.campaigns.find_one_and_update(
            {"_id": campaign["_id"]},
            {
                "$set": {"waiting": why, "next_batch_at": until, "batch_lease_until": None},
                "$inc": {"batches": 1},
            },
            return_document=True,
        )
        if updated and updated["status"] == "sending":
            await wake(self.queue, updated)
        return {"ran": True, "waiting": why}

    async def _next_pending(
        self, campaign: dict[str, Any], size: int, adding: bool
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The campaign's next ``size`` pending recipients in ``seq`` order, and the floor the
        batch may set once it commits (None: leave it).

        ``pending_floor``: no recipient below it is pending. The read walks windows of ``seq``
        from there, each a bounded range of the ``(campaign_id, state, seq)`` index, so a batch
        costs the same at the end of a 1,000,000-recipient list as at its start. (A query for
        "pending, sorted by seq, first 500" is a range on a real MongoDB too, but SecantusDB
        fetches and sorts every pending recipient for it: 1.1 s a batch with 20,000 left.)

        The floor may pass this batch's last recipient only when no add was open when the
        batch took its lease: an add reserves its seq numbers before its rows land, so rows
        below the batch's last one may still come. An add that starts after the lease reserves
        numbers above every number read. With an add open the batch reads the plain query,
        without moving the floor; an add whose insert failed stays open (slower, never wrong)
        until ``ADD_OPEN_SECONDS`` (app/domain/campaigns.py).
        """
        query = still_pending(campaign)
        if adding:
            rows = self.db.campaign_recipients.find(query)
            return await rows.sort("seq", 1).limit(size).to_list(), None
        low, end = int(campaign.get("pending_floor", 0)), int(campaign.get("next_seq", 0))
        pending: list[dict[str, Any]] = []
        while len(pending) < size and low < end:
            high = min(low + size, end)
            window = {**query, "seq": {"$gte": low, "$lt": high}}
            rows = self.db.campaign_recipients.find(window).sort("seq", 1)
            pending += await rows.limit(size - len(pending)).to_list()
            low = high
        return pending, (pending[-1]["seq"] + 1 if pending else None)

    async def _send(
        self,
        campaign: dict[str, Any],
        pending: list[dict[str, Any]],
        now: datetime,
        floor: int | None,
        prebuilt: dict[ObjectId, _Built],
    ) -> dict[str, int]:
        """Queue a batch (``prebuilt``: those of its messages rendered ahead)."""
        scope = user_scope(campaign["user_id"])
        # three reads at once: the suppressions in force now, the template version, and which
        # recipients are hosted here (of the whole batch: a suppressed one is simply unused)
        suppressed, version, local_users = await asyncio.gather(
            self.suppression.suppressed([r["key"] for r in pending], scope=scope),
            self.db.template_versions.find_one({"_id": campaign["version_id"]}),
            self.accounts.users_for_addresses([r["email"] for r in pending]),
        )
        to_send = [r for r in pending if r["key"] not in suppressed]
        skipped = [r for r in pending if r["key"] in suppressed]
        if version is None:
            raise ValidationError.on("template", "the campaign's template version is gone")
        missing = [r for r in to_send if r["_id"] not in prebuilt]
        prebuilt.update(await self._render(campaign, version, missing, now))
        built = [prebuilt[r["_id"]] for r in to_send]
        failed = [(r, b.error) for r, b in zip(to_send, built, strict=True) if b.message is None]
        ready = [(r, b.message, b.raw) for r, b in zip(to_send, built, strict=True) if b.message]
        # every queued recipient by the links it was tracked with (what its click redirects
        # may go to; () without tracking): stored with its state (``_mark_queued``)
        by_links: dict[tuple[str, ...], list[ObjectId]] = {}
        for r, b in zip(to_send, built, strict=True):
            if b.message:
                by_links.setdefault(b.links, []).append(r["_id"])
        viewer = Viewer(campaign["user_id"], campaign["from"]["email"])
        # messages: only those to hosted users, who get a mailbox copy (``local``, with its
        # raw MIME in a blob); ``raws``: their MIME bytes, in the same order
        messages, raws, recipients = [], [], []
        carried = _carried(campaign)
        for r, outgoing, raw in ready:
            to = Recipients(list(outgoing.to), [], [])
            if normalize_email(r["email"]) not in local_users:
                # remote: the delivery row carries its MIME (``raw``), no message document
                (row,) = recipient_docs(
                    {"_id": r["_id"], "sender_user_id": campaign["user_id"]},
                    to,
                    local_users,
                    set(),
                    now,
                    None,
                )
                row.update(_id=r["_id"], **carried, raw=raw, size=len(raw))
                recipients.append(row)
                continue
            # raw_blob_id: set when the blob is written, in the batch's transaction
            message = message_doc(viewer, outgoing, [], raw, ObjectId(), now, None)
            message.update(_id=r["_id"], campaign_id=campaign["_id"], bulk=True)
            rows = recipient_docs(message, to, local_users, set(), now, None)
            for row in rows:
                row.update(_id=r["_id"], campaign_id=campaign["_id"])
            messages.append(message)
            raws.append(raw)
            recipients.extend(rows)
        # the batch's events: a bucket document for each kind (events/buckets.py)
        events = in_buckets(
            [_event(campaign, r["_id"], r["address"], "queued", now) for r in recipients]
            + [_event(campaign, r["_id"], r["email"], "suppressed", now) for r in skipped]
        )

        async def work(session: Any) -> list[Any]:
            changes: list[Any] = []
            # first, in the transaction: the campaign is still sending and every recipient of
            # the batch still pending. A cancel (or pause) that landed while the batch was
            # rendering aborts the whole batch: nothing of it is stored or delivered, its
            # recipients stay pending and the cancel marks them canceled (issue 15: a batch
            # either completes or its recipients end canceled, never queued for nothing)
            mark: dict[str, Any] = {"$set": {"batch_committed_at": now}}
            if floor is not None:
                mark["$max"] = {"pending_floor": floor}
            still = await self.db.campaigns.update_one(
                {"_id": campaign["_id"], "status": "sending"}, mark, session=session
            )
            if not still.matched_count:
                raise _Stopped
            for state, ids in (
                ("suppressed", [r["_id"] for r in skipped]),
                ("failed", [r["_id"] for r, _ in failed]),
            ):
                if ids:
                    changed = await self.db.campaign_recipients.update_many(
                        {"_id": {"$in": ids}, "state": "pending"},
                        {"$set": {"state": state, "updated_at": now}},
                        session=session,
                    )
                    if changed.modified_count != len(ids):
                        raise _Stopped
            if recipients and await self._mark_queued(
                campaign["_id"], pending, floor, by_links, now, session
            ) != len(recipients):
                raise _Stopped
            for r, err in failed:
                await self.db.campaign_recipients.update_one(
                    {"_id": r["_id"]}, {"$set": {"error": err}}, session=session
                )
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
            await self._settle_stopped(campaign["_id"], [r["_id"] for r in pending], now)
            return {"queued": 0, "suppressed": 0, "failed": 0}
        except Exception as e:
            if is_duplicate_key(e):  # replayed: another run committed these already
                log.warning("campaign batch replayed", campaign=str(campaign["_id"]))
                return {"queued": 0, "suppressed": 0, "failed": 0}
            raise
        await self._wake_lanes(recipients)
        return {"queued": len(recipients), "suppressed": len(skipped), "failed": len(failed)}

    async def _wake_lanes(self, recipients: list[dict[str, Any]]) -> None:
        """One ``deliver_domain`` job per destination domain of the batch's remote mail,
        ``WAKE_AT_ONCE`` enqueued at a time."""
        first: dict[str, dict[str, Any]] = {}
        for x in recipients:
            if not x.get("local_user_id"):
                first.setdefault(x["domain"], x)
        lanes = sorted((domain, str(row["message_id"])) for domain, row in first.items())
        await in_waves(
            (
                partial(
                    self.queue.enqueue,
                    "deliver_domain",
                    mid,
                    domain,
                    job_id=f"deliver:{mid}:{domain}",
                )
                for domain, mid in lanes
            ),
            WAKE_AT_ONCE,
        )

    async def _render(
        self,
        campaign: dict[str, Any],
        version: dict[str, Any],
        rows: list[dict[str, Any]],
        now: datetime,
    ) -> dict[ObjectId, _Built]:
        """Each recipient's message, by recipient id: rendered (in the render threads) and
        built, ``BUILD_CHUNK`` at a time with the event loop free in between, so that a batch
        rendered ahead does not hold up the replies of the transaction it overlaps."""
        shared = campaign.get("variables", {})
        rendered = await self.renderer.render_versions(
            [(version, {**shared, **r.get("variables", {})}) for r in rows]
        )
        built: dict[ObjectId, _Built] = {}
        for n, (r, answer) in enumerate(zip(rows, rendered, strict=True), 1):
            built[r["_id"]] = self._build(campaign, r, answer, now)
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

        async def prepare() -> tuple[list[dict[str, Any]], dict[ObjectId, _Built]]:
            pending, _ = await self._next_pending(following, size, False)
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
        self, campaign: dict[str, Any], size: int, adding: bool
    ) -> tuple[list[dict[str, Any]], int, dict[ObjectId, _Built]] | None:
        """(pending, floor, built) rendered ahead for this batch, or None: nothing was, or
        something moved under it (the last batch did not commit, an add opened, another
        process ran a batch, the version changed) or this batch may take more than it read
        (the warm-up's allowance held the last one back)."""
        ahead = self._ahead.pop(campaign["_id"], None)
        if ahead is None:
            return None
        if (
            adding
            or ahead.floor != campaign.get("pending_floor")
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
        return pending, pending[-1]["seq"] + 1, {r["_id"]: built[r["_id"]] for r in pending}

    async def _mark_queued(
        self,
        campaign_id: ObjectId,
        pending: list[dict[str, Any]],
        floor: int | None,
        by_links: dict[tuple[str, ...], list[ObjectId]],
        now: datetime,
        session: Any,
    ) -> int:
        """Mark the batch's queued recipients (``by_links``: by their tracked links) ``queued``;
        returns how many are (fewer: one left ``pending`` meanwhile).

        With no add open and no tracked links, nothing is written: the batch's transaction
        moves the campaign's ``pending_floor`` past its last recipient, and a recipient below
        the floor still stored ``pending`` is one its batch queued (``stats.recipient_states``;
        the suppressed and failed ones are marked already). That write was a third of the
        database's work a recipient at queue time (docs/benchmarks.md). Each batch reads
        from the floor, and the campaign's status, checked first in the transaction, stops a
        cancel from marking anyone while a batch commits.

        With tracked links, each recipient's (what its click redirects may go to) are
        stored with its ``queued`` state: with no add open and one list for all, one update
        by the batch's ``seq`` range (an ``$in`` of 500 ids costs SecantusDB 500
        comparisons a document); otherwise one bulk write, an update for each list. With an
        add open the floor stays, so the state is written.
        """
        if floor is not None and list(by_links) == [()]:
            return sum(len(ids) for ids in by_links.values())

        def queued(links: tuple[str, ...]) -> dict[str, Any]:
            return {
                "$set": {
                    "state": "queued",
                    "updated_at": now,
                    **({"links": list(links)} if links else {}),
                }
            }

        if floor is not None and len(by_links) == 1:
            which = {
                "campaign_id": campaign_id,
                "state": "pending",
                "seq": {"$gte": pending[0]["seq"], "$lte": pending[-1]["seq"]},
            }
            changed = await self.db.campaign_recipients.update_many(
                which, queued(next(iter(by_links))), session=session
            )
            return int(changed.modified_count)
        requests = [
            UpdateMany({"_id": {"$in": ids}, "state": "pending"}, queued(links))
            for links, ids in by_links.items()
        ]
        written = await self.db.campaign_recipients.bulk_write(
            requests, ordered=False, session=session
        )
        return int(written.modified_count)

    async def _settle_stopped(
        self, campaign_id: ObjectId, ids: list[ObjectId], now: datetime
    ) -> None:
        """A batch aborted by a cancel (or pause): its recipients are still pending. A cancel
        whose own update ran while the batch's transaction was open may have missed them, so
        they are marked canceled here too; a paused campaign keeps them pending for resume."""
        log.info("campaign batch stopped by a status change", campaign=str(campaign_id))
        doc = await self.db.campaigns.find_one({"_id": campaign_id}, {"status": 1})
        if doc and doc["status"] == "canceled":
            await self.db.campaign_recipients.update_many(
                {"_id": {"$in": ids}, "state": "pending"},
                {"$set": {"state": "canceled", "updated_at": now}},
            )

    def _build(
        self,
        campaign: dict[str, Any],
        r: dict[str, Any],
        rendered: Rendered | ValidationError,
        now: datetime,
    ) -> _Built:
        """The recipient's message and MIME bytes with its tracked links, or why it cannot be
        rendered (``error``)."""
        if isinstance(rendered, ValidationError):
            return _Built(None, b"", (), rendered.message)
        base = self.settings.base_url.rstrip("/")
        rid: ObjectId = r["_id"]
        html = rendered.html
        links: tuple[str, ...] = ()
        if html and campaign.get("track_clicks"):
            tracked = rewrite_links(
                html, lambda i: f"{base}/t/c/{click_token(self.secret, rid, i)}"
            )
            html = tracked.html
            links = tuple(tracked.links)
        if html and campaign.get("track_opens"):
            html = add_pixel(html, f"{base}/t/o/{open_token(self.secret, rid)}")
        unsubscribe = (
            f"<{base}/u/{unsubscribe_token(self.secret, rid)}>, "
            f"<mailto:{unsubscribe_address(self.secret, rid, campaign['from_domain'])}>"
        )
        outgoing = OutgoingMessage(
            from_=Address(campaign["from"]["email"], campaign["from"].get("name")),
            to=(Address(r["email"], None),),
            subject=rendered.subject,
            text=rendered.text_part(),
            html=sanitize_html(html) if html else None,  # once, for MIME and the stored body
            message_id=campaign_message_id(rid, campaign["_id"], self.settings.hostname),
            date=now,
            extra_headers=(
                ("List-Unsubscribe", unsubscribe),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ("Precedence", "bulk"),
            ),
        )
        try:
            return _Built(outgoing, build_mime(outgoing), links, None)
        except ValidationError as e:
            return _Built(None, b"", (), e.message)

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
                "$or": [{"batch_lease_until": None}, {"batch_lease_until": {"$lte": now}}],
            }
        ):
            await self.queue.enqueue(
                "campaign_batch", str(c["_id"]), job_id=f"campaign-sweep:{c['_id']}:{c['batches']}"
            )
            woke += 1
        return woke


class _Built(NamedTuple):
    message: OutgoingMessage | None
    raw: bytes
    links: tuple[str, ...]  # the original URLs of the tracked links, by index
    error: str | None


class _Ahead(NamedTuple):
    """A batch being read and rendered ahead, and the state it was read in."""

    floor: int  # the pending_floor it reads from
    size: int  # how many it reads (a batch may take fewer: its first ones)
    next_seq: int  # the campaign's next_seq then (an add since moves it)
    version_id: Any
    started: float  # time.monotonic()
    task: asyncio.Task[tuple[list[dict[str, Any]], dict[ObjectId, _Built]]]

    def stale(self) -> bool:
        return self.started < time.monotonic() - AHEAD_SECONDS


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
