"""Outbound delivery (seed §8, DESIGN.md §5 "Deliver"): the deliver_domain use case.

``deliver_domain(message_id, domain)`` is what the arq job calls: MongoDB is the queue, and the
job only says "mail for this domain is due now". This service puts the parts together:

- lanes.py: one lane per destination domain sends its recipients over one connection;
- pulls.py: a lane asks for more of its domain's due recipients; the pulls of every lane in
  one process are served together in rounds;
- leases.py: a round first takes the domain's lease, so one worker process delivers a domain;
- prepare.py: each message is read from the blob store and DKIM-signed once, and suppression
  is re-checked right before the attempt;
- outcomes.py: the recorder writes outcomes, events, notices and live status;
- sweep.py: the periodic sweep wakes domains whose job was lost.

Lanes and pull rounds feed each other (a lane asks for more; the round hands work back to the
lanes), so this service connects the two through ``_hand_to`` and ``_lane_busy``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from app.adapters.blobs import BlobStore
from app.adapters.dkim_signer import DkimSigner
from app.adapters.dns_resolver import DnsResolver
from app.adapters.mongo import Mongo
from app.adapters.queue import JobQueue
from app.adapters.redis_store import RedisStore
from app.adapters.smtp_transport import SmtpTransport
from app.adapters.throttle import DomainThrottle
from app.config import Settings
from app.domain.ids import parse_object_id
from app.domain.outcomes import RetryPolicy, policy_from
from app.domain.viewer import Viewer
from app.services.after_commit import Notifier
from app.services.delivery.lanes import Lanes
from app.services.delivery.leases import DomainLeases
from app.services.delivery.outbox import Work
from app.services.delivery.outcome_writer import OutcomeWriter
from app.services.delivery.outcomes import OutcomeRecorder
from app.services.delivery.prepare import MessagePreparer
from app.services.delivery.pulls import PullRounds
from app.services.delivery.sweep import SWEEP_LIMIT, Sweeper
from app.services.events.buckets import message_docs, message_events
from app.services.feedback.suppression import SuppressionService
from app.services.sending.scheduling import SchedulingService

CLOSE_GRACE = 30.0  # seconds shutdown waits for in-flight transactions


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
        scheduling: SchedulingService,
    ) -> None:
        self.db = mongo.db
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
            OutcomeWriter(
                mongo=mongo,
                redis=redis,
                queue=queue,
                blobs=blobs,
                suppression=suppression,
                notifier=notifier,
                hostname=settings.hostname,
                policy_for=self.policy_for,
            )
        )
        # A transaction is at most connect + MAIL + RCPT + DATA: never start one without that
        # much lease left (and never let the margin eat more than half a short test lease).
        margin = min(4 * settings.delivery_timeout_seconds, settings.delivery_lease_seconds / 2)
        self.leases = DomainLeases(
            self.db,
            timedelta(seconds=settings.delivery_lease_seconds),
            is_idle=self._idle,
            wake=self._wake,
            min_left=timedelta(seconds=margin),
        )
        self.pulls = PullRounds(
            db=self.db,
            leases=self.leases,
            preparer=MessagePreparer(
                db=self.db,
                redis=redis,
                suppression=suppression,
                signer=signer,
                recorder=self.recorder,
            ),
            hand_to=self._hand_to,
            lane_busy=self._lane_busy,
        )
        self.recorder.on_settled(self.pulls.settled)
        secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else b""
        self.lanes = Lanes(
            transport=transport,
            resolver=resolver,
            throttle=throttle,
            recorder=self.recorder,
            secret=secret,
            relay_host=settings.relay_host,
            lease_margin=timedelta(seconds=margin),
            pull=self.pulls.pull,
            on_idle=self.leases.release_when_idle,
        )
        self.sweeper = Sweeper(db=self.db, queue=queue, scheduling=scheduling)
        self._closed = False

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
        self,
        now: datetime | None = None,
        limit: int = SWEEP_LIMIT,
        grace: float | None = None,
        *,
        paced: bool = False,
    ) -> dict[str, int]:
        """Wake every domain whose delivery job is gone and release due scheduled sends
        (sweep.py; ``paced``: the periodic job's, which rests after a long search)."""
        return await self.sweeper.sweep(now, limit, grace, paced=paced)

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
        # a bucket (a batch's events, events/buckets.py) holds the events of many messages
        events = (
            message_events(await message_docs(self.db.delivery_events, mid), mid) if mid else []
        )
        if message is None and not any(e.get("sender_user_id") == viewer.user_id for e in events):
            # campaign mail to a remote address has no message document: its events (from its
            # ``queued`` one on, also while it waits in a parcel, delivery/parcels.py) name the
            # sender; someone else's message reads exactly like a missing one
            return []
        return sorted(events, key=lambda e: (e["occurred_at"], e["_id"]))

    async def close(self) -> None:
        """Graceful stop: finish transactions in flight, give everything else back to the
        outbox, write every outcome, then give the domain leases back."""
        self._closed = True
        self.leases.closing()
        await self.pulls.stop()
        await self.leases.wait_releasing(CLOSE_GRACE)
        await self.lanes.close(CLOSE_GRACE)
        await self.recorder.drain(CLOSE_GRACE)
        await self.recorder.close()
        # Every outcome written: another worker may go on at once; else the leases expire.
        await self.leases.close(give_back=not self.recorder.backlog)

    # --- between the lanes and the pull rounds -----------------------------------------------

    def _hand_to(self, work: Work) -> None:
        self.lanes.put(work)

    def _lane_busy(self, domain: str) -> bool:
        return domain in self.lanes.lanes

    def _idle(self, domain: str) -> bool:
        return not self._lane_busy(domain) and self.pulls.idle(domain)

    def _wake(self, domain: str) -> None:
        if not self._closed:
            self.lanes.note_waiting(domain)
