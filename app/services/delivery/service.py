"""Outbound delivery (seed §8, DESIGN.md §5 "Deliver"): the deliver_domain use case and the sweep.

``deliver_domain(message_id, domain)`` is what the arq job calls: MongoDB is the queue, and the
job only says "mail for this domain is due now". The domain's lane (delivery_lanes.py) pulls its
due recipients, this service re-checks the suppression list and prepares each message once (raw
MIME from the blob store, DKIM-signed), the lane sends, and the recorder (delivery_records.py)
writes outcomes, events, notices and live status.

Leases are per destination domain (outbox.py): a worker process takes a domain's lease (one
small ``domain_leases`` document) before it pulls that domain's mail, renews it while it works
and gives it back when the domain's lane is idle and every outcome is recorded. Recipients need
no lease write of their own, so a delivered recipient costs one write (its outcome) instead of
two. The pulls of every lane in one process are served together: requests that arrive while a
round is being read wait and go in the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from app.adapters.blob_batches import read_blobs
from app.adapters.blobs import BlobStore
from app.adapters.delivery_jobs import missing_jobs
from app.adapters.dkim_signer import DkimKey, DkimSigner
from app.adapters.dns_resolver import DnsResolver
from app.adapters.live_status import publish_many
from app.adapters.mongo import Mongo
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.adapters.smtp_transport import SmtpTransport, no_reply
from app.adapters.throttle import DomainThrottle
from app.background import stop_task
from app.batching import Batcher, Waiter
from app.config import Settings
from app.domain.addresses import domain_of
from app.domain.ids import parse_object_id
from app.domain.outcomes import RetryPolicy, policy_from
from app.domain.viewer import Viewer
from app.services.after_commit import Notifier
from app.services.delivery.lanes import Lanes
from app.services.delivery.outbox import (
    DomainLease,
    PreparedMessage,
    Work,
    chunked,
    is_due,
    job_id,
    status_event,
)
from app.services.delivery.outcomes import OutcomeRecorder
from app.services.feedback.suppression import SuppressionService

log = structlog.get_logger(__name__)

LEASE_BATCH = 500  # lane pulls folded into one round
LEASE_MAX = 5000  # recipients handed out per round (each domain at least LEASE_MAX // domains)
PREPARE_CHUNK = 50  # recipients prepared (read, signed) and handed to lanes at a time
IDLE_HOLD = 2.0  # seconds an idle domain's lease is kept for more of its mail
HELD_RETRY = 5.0  # at most this long before asking again for a domain another worker holds
MAX_IN_FLIGHT = 6000  # recipients handed out and not yet recorded, per process
PREPARED_CACHE = 512  # signed messages kept for their other domains and retries
KEY_TTL = 60.0  # seconds a domain's DKIM key is cached
CLOSE_GRACE = 30.0  # seconds shutdown waits for in-flight transactions
SWEEP_LIMIT = 2000
SWEEP_GRACE = 60.0  # seconds a recipient is overdue before a periodic sweep wakes its domain
_GONE = PreparedMessage(ObjectId(b"\0" * 12), {}, b"", b"", "")  # a deleted message's placeholder
_MESSAGE_FIELDS = {"text_body": 0, "html_body": 0, "bcc": 0, "attachments": 0, "headers": 0}


@dataclass(frozen=True)
class _Pull:
    """A lane asks for up to ``limit`` more due recipients of ``domain``."""

    domain: str
    limit: int


class DeliveryService:
    def __init__(
        self,
        *,
        mongo: Mongo,
        redis: RedisStore,
        queue: JobQueue,
        blobs: BlobStore,
        suppression: SuppressionService,
        notifier: Notifier,
        settings: Settings,
        transport: SmtpTransport,
        resolver: DnsResolver,
        signer: DkimSigner,
        throttle: DomainThrottle,
        scheduling: Any = None,
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.redis = redis
        self.queue = queue
        self.blobs = blobs
        self.suppression = suppression
        self.settings = settings
        self.signer = signer
        self.scheduling = scheduling  # SchedulingService: releases due scheduled sends
        self.lease = timedelta(seconds=settings.delivery_lease_seconds)
        self._policies = {
            False: policy_from(
                settings.queue_lifetime_seconds,
                settings.retry_schedule,
                settings.delay_notice_seconds,
            ),
            True: policy_from(
                settings.transactional_lifetime_seconds,
                settings.retry_schedule,
                settings.delay_notice_seconds,
            ),
        }
        self.recorder = OutcomeRecorder(
            mongo=mongo,
            redis=redis,
            queue=queue,
            blobs=blobs,
            suppression=suppression,
            notifier=notifier,
            hostname=settings.hostname,
            policy_for=self.policy_for,
        )
        self.recorder.on_settled(self._settled)
        secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""
        # A transaction is at most connect + MAIL + RCPT + DATA: never start one without that
        # much lease left (and never let the margin eat more than half a short test lease).
        margin = min(4 * settings.delivery_timeout_seconds, settings.delivery_lease_seconds / 2)
        self.lanes = Lanes(
            transport=transport,
            resolver=resolver,
            throttle=throttle,
            recorder=self.recorder,
            secret=secret,
            relay_host=settings.relay_host,
            lease_margin=timedelta(seconds=margin),
            pull=self._pull,
            on_idle=self._lane_idle,
        )
        # Lane pulls asked while a leasing round runs are folded into the next round.
        self._leasing: Batcher[_Pull, bool] = Batcher(self._lease_round, max_items=LEASE_BATCH)
        self._releasing: set[asyncio.Task[None]] = set()  # leases being given back (close waits)
        # Domain leases: this process's token, the leases it holds, one lock for taking,
        # renewing and giving them back, and timers (retry a domain held elsewhere, give back
        # an idle one).
        self._token = ObjectId()
        self._held: dict[str, DomainLease] = {}
        self._lease_lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Recipients handed to lanes whose outcome is not committed yet: a pull sees them as
        # still due, so they are left out; so are those settled while a round was reading.
        self._in_flight: dict[ObjectId, str] = {}
        self._domain_in_flight: Counter[str] = Counter()
        self._settled_in_round: set[ObjectId] | None = None
        self._round_domains: set[str] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._prepared: OrderedDict[ObjectId, PreparedMessage] = OrderedDict()
        self._keys: dict[str, tuple[float, DkimKey | None]] = {}
        self._closed = False
        self._swept = False  # the first sweep of a process looks at everything due

    def policy_for(self, message: dict[str, Any]) -> RetryPolicy:
        """Mail marked transactional gives up sooner (a stale password reset helps nobody)."""
        return self._policies[bool(message.get("transactional"))]

    # --- use cases -------------------------------------------------------------------------

    async def deliver_domain(self, message_id: str, domain: str) -> dict[str, Any]:
        """Deliver what is due for ``domain`` (the job says a message there became due).

        The domain's lane leases its due recipients in MongoDB — this message's and any other
        waiting for the same domain — and sends them over one connection. Returns at once;
        outcomes are recorded as the lane gets through them. Idempotent: a job for mail that
        is already on its way finds nothing more to do.
        """
        if self._closed:
            raise RuntimeError("delivery is shutting down")
        try:
            ObjectId(message_id)
        except (InvalidId, TypeError):
            return {"domain": None}
        domain = domain.strip().lower()
        self.lanes.note_waiting(domain)
        return {"domain": domain}

    async def sweep(
        self, now: datetime | None = None, limit: int = SWEEP_LIMIT, grace: float | None = None
    ) -> dict[str, int]:
        """Wake every domain with due recipients whose job is gone (Redis flushed, worker
        killed), and release scheduled sends whose time has come.

        A lost lease (``sending`` past ``lease_until``) gets a job keyed by that lease; other
        recipients the id their last deferral used, so a job still waiting in Redis is not
        duplicated. One job per domain: it wakes the lane, which pulls all that is due.

        The first sweep of a process looks at everything due; later ones only at recipients
        due for more than ``grace`` seconds (SWEEP_GRACE): a healthy worker takes a recipient
        long before that, so a backlog being worked through is not read again every 15 s. Each
        status is one range of the (delivery_status, next_attempt_at) index.
        """
        now = now or datetime.now(UTC)
        if grace is None:
            grace = SWEEP_GRACE if self._swept else 0.0
        self._swept = True
        released = 0
        if self.scheduling is not None:
            scheduled = (
                await self.db.recipients.find(
                    {"delivery_status": "scheduled", "next_attempt_at": {"$lte": now}},
                    {"message_id": 1},
                )
                .limit(limit)
                .to_list()
            )
            released = len(
                await self.scheduling.release_due(list({d["message_id"] for d in scheduled}))
            )
        fields = {
            "message_id": 1,
            "domain": 1,
            "job_id": 1,
            "lease_until": 1,
            "local_user_id": 1,
            "delivery_status": 1,
            "next_attempt_at": 1,
        }
        # Lost leases first (few, and the reason the sweep exists), then the waiting ones.
        overdue = now - timedelta(seconds=grace)
        docs = []
        for query in (
            {"delivery_status": "sending"},
            {"delivery_status": "queued", "next_attempt_at": {"$lte": overdue}},
            {"delivery_status": "deferred", "next_attempt_at": {"$lte": overdue}},
        ):
            found = await self.db.recipients.find(query, fields).limit(limit).to_list()
            docs += [d for d in found if is_due(d, now)]
        # One job per domain is enough: it wakes the domain's lane, which pulls everything due.
        wanted: dict[str, tuple[ObjectId, str]] = {}
        seen: set[str] = set()
        for d in docs:
            if d["domain"] in seen:
                continue
            seen.add(d["domain"])
            if d["delivery_status"] == "sending" and d.get("lease_until"):
                jid = job_id(d["message_id"], d["domain"], d["lease_until"])
            else:
                jid = d.get("job_id") or job_id(d["message_id"], d["domain"])
            wanted[jid] = (d["message_id"], d["domain"])
        enqueued = 0
        for jid in await missing_jobs(self.queue, list(wanted)):
            message_id, domain = wanted[jid]
            if await self.queue.enqueue("deliver_domain", str(message_id), domain, job_id=jid):
                enqueued += 1
        return {"due": len(docs), "enqueued": enqueued, "released": released}

    async def events_for(self, viewer: Viewer, message_id: str) -> list[dict[str, Any]]:
        """The delivery history of a message the viewer sent, oldest first (else empty)."""
        mid = parse_object_id(message_id)
        message = (
            None
            if mid is None
            else await self.db.messages.find_one(
                {"_id": mid, "sender_user_id": viewer.user_id}, {"_id": 1}
            )
        )
        if message is None:  # someone else's message reads exactly like a missing one
            return []
        return (
            await self.db.delivery_events.find({"message_id": mid})
            .sort(  # type: ignore[no-any-return]
                [("occurred_at", 1), ("_id", 1)]
            )
            .to_list()
        )

    async def close(self) -> None:
        """Graceful stop: finish transactions in flight, give everything else back to the
        outbox, write every outcome, then give the domain leases back."""
        self._closed = True
        await self._leasing.close()  # a round in progress stops; queued pulls are cancelled
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=CLOSE_GRACE)
        await self.lanes.close(CLOSE_GRACE)
        await self.recorder.drain(CLOSE_GRACE)
        await self.recorder.close()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await stop_task(self._renewer)
        if not self.recorder.backlog:  # every outcome written: another worker may go on
            await self._release(list(self._held))

    # --- leasing ---------------------------------------------------------------------------

    async def _lease_round(self, pulls: list[Waiter[_Pull, bool]]) -> None:
        try:
            await self._room.wait()
            await self._lease_requests(pulls)
        except Exception as e:
            log.exception("pulling due recipients failed", n=len(pulls))
            for pull in pulls:
                pull.fail(e)
        finally:  # stopped (close) mid-round: nobody waits for an answer forever
            for pull in pulls:
                pull.answer(False)

    async def _lease_requests(self, batch: list[Waiter[_Pull, bool]]) -> None:
        """One round for every lane that asked for more since the last one: take the leases
        of domains not held yet, read their due recipients, hand them to the lanes."""
        now = datetime.now(UTC)
        pulls: dict[str, int] = {}
        for r in batch:
            pulls[r.item.domain] = max(pulls.get(r.item.domain, 0), r.item.limit)
        self._round_domains = set(pulls)  # not idle (their leases stay) until handed over
        try:
            await self._round(batch, pulls, now)
        finally:
            self._round_domains = set()

    async def _round(
        self, batch: list[Waiter[_Pull, bool]], pulls: dict[str, int], now: datetime
    ) -> None:
        held = await self._hold(list(pulls), now)
        mine = {domain: limit for domain, limit in pulls.items() if domain in held}
        leases = {domain: self._held[domain] for domain in mine}  # a lost one: until = now
        due: list[dict[str, Any]] = []
        truncated = False
        if mine:
            self._settled_in_round = set()
            try:
                due, truncated = await self._due(mine, now)
                # Outcomes committed while the round was reading may have been read as due.
                due = [d for d in due if d["_id"] not in self._settled_in_round]
            finally:
                self._settled_in_round = None
            for d in due:  # from here until their outcome is committed, nobody pulls them
                self._in_flight[d["_id"]] = d["domain"]
                self._domain_in_flight[d["domain"]] += 1
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self._room.clear()
        found = Counter(d["domain"] for d in due)
        for r in batch:
            # "more": this round could not see everything; the lane should ask again. The
            # lanes have their answer before the hand-over, so sending starts with the first
            # prepared chunk.
            domain = r.item.domain
            r.answer(domain in mine and (truncated or found[domain] >= pulls[domain]))
        if due:
            await self._hand_over(due, leases)

    async def _pull(self, domain: str, limit: int) -> bool:
        """A lane asks for more of its domain's due recipients (they arrive through ``put``);
        True when there may be more still."""
        if self._closed or limit <= 0:
            return False
        try:
            return await self._leasing.submit(_Pull(domain, limit))
        except Exception:
            log.exception("pulling due recipients failed", domain=domain)
            return False

    async def _due(self, pulls: dict[str, int], now: datetime) -> tuple[list[dict[str, Any]], bool]:
        """Due recipients of the asking (held) domains, at most each one's limit and LEASE_MAX
        in all: new ones first (each domain its fair share, queried side by side), then
        retries and lost per-recipient leases (one query each for all domains). Every query
        is an equality prefix of the lane index (domain, status, next_attempt_at). Recipients
        already on their way are skipped. Also says whether the round was cut short (then
        every domain may have more)."""
        share = max(25, LEASE_MAX // len(pulls))
        wanted = {domain: min(limit, share) for domain, limit in pulls.items()}
        # One query after the other: side by side they cost SecantusDB (one thread per
        # connection) more CPU than they save in latency, and a round is rare.
        queued = [
            await self.db.recipients.find({"domain": domain, "delivery_status": "queued"})
            .limit(n + self._domain_in_flight[domain])
            .to_list()
            for domain, n in wanted.items()
        ]
        taken: Counter[str] = Counter()
        out: list[dict[str, Any]] = []
        truncated = any(
            len(docs) >= wanted[d] + self._domain_in_flight[d]
            for d, docs in zip(wanted, queued, strict=True)
        )
        for d in (d for docs in queued for d in docs):
            if d["_id"] not in self._in_flight and taken[d["domain"]] < wanted[d["domain"]]:
                if is_due(d, now):
                    taken[d["domain"]] += 1
                    out.append(d)
        domains = list(pulls)
        busy = sum(self._domain_in_flight[d] for d in domains)
        for status, extra in (
            ("deferred", {"next_attempt_at": {"$lte": now}}),
            ("sending", {"lease_until": {"$lt": now}}),
        ):
            room = LEASE_MAX - len(out)
            if room <= 0:
                truncated = True
                break
            docs = (
                await self.db.recipients.find(
                    {"delivery_status": status, "domain": {"$in": domains}, **extra}
                )
                .limit(room * 2 + busy)
                .to_list()
            )
            truncated = truncated or len(docs) >= room * 2 + busy
            for d in docs:
                if (
                    len(out) < LEASE_MAX
                    and d["_id"] not in self._in_flight
                    and taken[d["domain"]] < pulls[d["domain"]]
                    and is_due(d, now)
                ):
                    taken[d["domain"]] += 1
                    out.append(d)
        return out, truncated or len(out) >= LEASE_MAX

    async def _hand_over(self, docs: list[dict[str, Any]], leases: dict[str, DomainLease]) -> None:
        """Prepare and hand to the lanes a chunk at a time, so sending starts early."""
        for index, part in enumerate(chunked(docs, PREPARE_CHUNK)):
            try:
                works = await self._prepare(part, leases)
            except Exception:
                # Back to the outbox as they are (still due): the next pull or sweep retries.
                log.exception("preparing messages failed", n=len(docs))
                self._settle_ids([d["_id"] for d in docs[index * PREPARE_CHUNK :]])
                return
            for work in works:
                self.lanes.put(work)

    async def _hold(self, domains: list[str], now: datetime) -> set[str]:
        """The domains among ``domains`` whose lease this process holds (taking the free
        ones); a domain held by another worker is asked about again when its lease may end."""
        async with self._lease_lock:
            need = [d for d in domains if d not in self._held or self._held[d].until <= now]
            until = now + self.lease
            results = await asyncio.gather(
                *(self._take_lease(d, now, until) for d in need), return_exceptions=True
            )
            for domain, result in zip(need, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, DuplicateKeyError):
                        log.warning("taking a domain lease failed", domain=domain, error=result)
                    self._held.pop(domain, None)
                    self._later("retry", domain, HELD_RETRY, self._retry_domain)
                    continue
                lease = self._held.get(domain)
                if lease is None:
                    self._held[domain] = DomainLease(domain, until)
                else:
                    lease.until = until
            if self._held and (self._renewer is None or self._renewer.done()):
                self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
            return {d for d in domains if d in self._held}

    async def _take_lease(self, domain: str, now: datetime, until: datetime) -> None:
        """Ours, or free (never taken, expired): take it. Held by another worker: the upsert's
        insert collides on ``_id`` (DuplicateKeyError)."""
        await self.db.domain_leases.update_one(
            {"_id": domain, "$or": [{"token": self._token}, {"until": {"$lt": now}}]},
            {"$set": {"token": self._token, "until": until, "taken_at": now}},
            upsert=True,
        )

    async def _renew_loop(self) -> None:
        every = max(0.2, self.lease.total_seconds() / 4)
        while self._held and not self._closed:
            await asyncio.sleep(every)
            try:
                await self._renew()
            except Exception:
                log.exception("renewing domain leases failed")

    async def _renew(self) -> None:
        async with self._lease_lock:
            domains = list(self._held)
            if not domains:
                return
            now = datetime.now(UTC)
            until = now + self.lease
            kept: set[str] = set()
            for part in chunked(domains):
                result = await self.db.domain_leases.update_many(
                    {"_id": {"$in": part}, "token": self._token}, {"$set": {"until": until}}
                )
                if result.matched_count == len(part):
                    kept.update(part)
                else:
                    kept.update(
                        d["_id"]
                        for d in await self.db.domain_leases.find(
                            {"_id": {"$in": part}, "token": self._token}, {"_id": 1}
                        ).to_list()
                    )
            for domain in domains:
                lease = self._held[domain]
                if domain in kept:
                    lease.until = until
                else:  # taken over (we were too slow): lanes stop starting transactions
                    log.warning("domain lease lost", domain=domain)
                    lease.until = now
                    self._held.pop(domain)

    def _lane_idle(self, domain: str) -> None:
        self._later("release", domain, IDLE_HOLD, self._release_if_idle)

    def _later(self, kind: str, domain: str, delay: float, callback: Any) -> None:
        if self._closed or (kind, domain) in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop((kind, domain), None)
            callback(domain)

        self._timers[(kind, domain)] = loop.call_later(delay, fire)

    def _retry_domain(self, domain: str) -> None:
        if not self._closed:
            self.lanes.note_waiting(domain)

    def _release_if_idle(self, domain: str) -> None:
        if domain in self._held and self._idle(domain):
            task = asyncio.get_running_loop().create_task(self._release([domain]))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    def _idle(self, domain: str) -> bool:
        return (
            domain not in self.lanes.lanes
            and not self._domain_in_flight[domain]
            and domain not in self._round_domains
        )

    async def _release(self, domains: list[str]) -> None:
        """Give idle domains' leases back, so another worker can take them at once."""
        async with self._lease_lock:
            gone = [d for d in domains if d in self._held and (self._closed or self._idle(d))]
            for domain in gone:
                self._held.pop(domain)
            try:
                for part in chunked(gone):
                    await self.db.domain_leases.delete_many(
                        {"_id": {"$in": part}, "token": self._token}
                    )
            except Exception:
                log.exception("giving domain leases back failed", n=len(gone))  # they expire

    def _settled(self, works: list[Work]) -> None:
        self._settle_ids([w.id for w in works])

    def _settle_ids(self, ids: list[ObjectId]) -> None:
        domains = set()
        for i in ids:
            domain = self._in_flight.pop(i, None)
            if domain is not None:
                self._domain_in_flight[domain] -= 1
                if not self._domain_in_flight[domain]:
                    del self._domain_in_flight[domain]
                    domains.add(domain)
            if self._settled_in_round is not None:
                self._settled_in_round.add(i)
        if len(self._in_flight) < MAX_IN_FLIGHT:
            self._room.set()
        for domain in domains:
            if domain not in self.lanes.lanes:
                self._lane_idle(domain)

    # --- preparing -------------------------------------------------------------------------

    async def _prepare(
        self, docs: list[dict[str, Any]], leases: dict[str, DomainLease]
    ) -> list[Work]:
        prepared = await self._prepared_messages({d["message_id"] for d in docs})
        # Suppression is read from MongoDB right before the attempt (DESIGN.md §6): an address
        # suppressed after the send was accepted is not mailed.
        suppressed: set[str] = set()
        for part in chunked([d["address"] for d in docs]):
            suppressed |= await self.suppression.suppressed(part)
        ready: list[Work] = []
        gone: list[Work] = []
        for doc in docs:
            lease = leases[doc["domain"]]
            message = prepared.get(doc["message_id"])
            if message is None:
                message = await self._placeholder(doc["message_id"])
                if message is None:  # the message itself was deleted: nothing to deliver
                    gone.append(Work(doc, _GONE, lease))
                    continue
                self.recorder.attempted(
                    Work(doc, message, lease), no_reply("message content is unavailable"), None
                )
                continue
            work = Work(doc, message, lease)
            if doc["address_key"] in suppressed:
                self.recorder.suppressed(work)
            else:
                ready.append(work)
        if gone:
            now = datetime.now(UTC)
            await self.db.recipients.bulk_write(
                [
                    UpdateOne(
                        w.owned,
                        {
                            "$set": {
                                "delivery_status": "canceled",
                                "lease_until": None,
                                "lease_token": None,
                                "updated_at": now,
                            }
                        },
                    )
                    for w in gone
                ],
                ordered=False,
            )
            self._settled(gone)
        # Live status: on its way (MongoDB keeps it queued; the domain lease says who has it).
        now = datetime.now(UTC)
        await publish_many(
            self.redis,
            [
                status_event(
                    w.message.id, {**w.recipient, "delivery_status": "sending", "updated_at": now}
                )
                for w in ready
            ],
        )
        return ready

    async def _prepared_messages(self, ids: set[ObjectId]) -> dict[ObjectId, PreparedMessage]:
        out = {i: self._prepared[i] for i in ids if i in self._prepared}
        missing = [i for i in ids if i not in out]
        if not missing:
            return out
        docs = [
            d
            for part in chunked(missing)
            for d in await self.db.messages.find({"_id": {"$in": part}}, _MESSAGE_FIELDS).to_list()
        ]
        raws: dict[ObjectId, bytes] = {}
        sizes = {d["raw_blob_id"]: d.get("size") for d in docs if d.get("raw_blob_id")}
        for part in chunked(list(sizes)):
            raws.update(await read_blobs(self.db, part, lengths=sizes))
        keys = await self._dkim_keys({domain_of(d["from"]["email"]) for d in docs})
        todo = [
            (doc, raw, keys.get(domain_of(doc["from"]["email"])))
            for doc in docs
            if (raw := raws.get(doc.get("raw_blob_id"))) is not None  # type: ignore[arg-type]
        ]
        signed = await self.signer.sign_many([(raw, key) for _, raw, key in todo])
        for (doc, raw, _), data in zip(todo, signed, strict=True):
            sender_domain = domain_of(doc["from"]["email"])
            headers = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
            message = PreparedMessage(doc["_id"], doc, data, headers, sender_domain)
            out[doc["_id"]] = message
            self._prepared[doc["_id"]] = message
            while len(self._prepared) > PREPARED_CACHE:
                self._prepared.popitem(last=False)
        return out

    async def _placeholder(self, message_id: ObjectId) -> PreparedMessage | None:
        doc = await self.db.messages.find_one({"_id": message_id}, _MESSAGE_FIELDS)
        if doc is None:
            return None
        return PreparedMessage(doc["_id"], doc, b"", b"", domain_of(doc["from"]["email"]))

    async def _dkim_keys(self, domains: set[str]) -> dict[str, DkimKey | None]:
        now = time.monotonic()
        out = {d: self._keys[d][1] for d in domains if d in self._keys and self._keys[d][0] > now}
        missing = [d for d in domains if d not in out]
        if missing:
            found = {
                d["_id"]: d
                for d in await self.db.domains.find(
                    {"_id": {"$in": missing}}, {"dkim": 1}
                ).to_list()
            }
            for domain in missing:
                dkim = (found.get(domain) or {}).get("dkim")
                key = DkimKey(domain, dkim["selector"], dkim["private_key"]) if dkim else None
                self._keys[domain] = (now + KEY_TTL, key)
                out[domain] = key
        return out
