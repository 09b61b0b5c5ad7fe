"""The periodic sweep: wake domains whose delivery job is gone, release due scheduled sends.

MongoDB is the queue; a Redis job only says "mail for this domain is due now". When that job
is lost (Redis flushed, worker killed mid-lease) the sweep puts it back, one per domain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters import metrics
from app.adapters.delivery_jobs import missing_jobs
from app.adapters.mongo import UpdateOne
from app.adapters.queue import JobQueue
from app.services.delivery.outbox import is_due, job_id, unleased_status
from app.services.sending.scheduling import SchedulingService

SWEEP_LIMIT = 2000
QUEUE_STATUSES = ("queued", "deferred", "sending", "scheduled")  # waiting to be delivered
SWEEP_GRACE = 60.0  # seconds a recipient is overdue before a periodic sweep wakes its domain
# The periodic sweep's search for lost jobs (and the queue-depth counts) spends at most this
# share of the time: after a search that took T seconds, the next periodic one waits until T /
# SWEEP_SHARE has passed. On SecantusDB these reads decode every waiting recipient (it has no
# limit pushdown): 2.7 s + 2.4 s with 50,000 queued, which every 15 s took a third of the
# database from the deliveries working through that backlog.
SWEEP_SHARE = 0.1


class Sweeper:
    def __init__(
        self,
        *,
        db: Any,
        queue: JobQueue,
        scheduling: SchedulingService,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.queue = queue
        self.scheduling = scheduling
        self._swept = False  # the first sweep of a process looks at everything due
        self._clock = clock
        self._rest_until = 0.0  # (clock) a paced sweep before this only releases scheduled sends

    async def sweep(
        self,
        now: datetime | None = None,
        limit: int = SWEEP_LIMIT,
        grace: float | None = None,
        *,
        paced: bool = False,
    ) -> dict[str, int]:
        """Wake every domain with due recipients whose job is gone (Redis flushed, worker
        killed), and release scheduled sends whose time has come.

        A lost lease (``sending`` past ``lease_until``: a per-recipient lease of an older
        release; this one leases domains, leases.py) is given back first, to ``queued`` or
        ``deferred`` where the lanes' pulls find it, and gets a job keyed by that lease; other
        recipients the id their last deferral used, so a job still waiting in Redis is not
        duplicated. One job per domain: it wakes the lane, which pulls all that is due.

        The first sweep of a process looks at everything due; later ones only at recipients
        due for more than ``grace`` seconds (SWEEP_GRACE): a healthy worker takes a recipient
        long before that, so a backlog being worked through is not read again every 15 s. Each
        status is one range of the (delivery_status, next_attempt_at) index.

        ``paced`` (the periodic job): scheduled sends are released every time, but the search
        for lost jobs rests after a long one (``SWEEP_SHARE``): with a large backlog a lost
        job is found later (ten times as long as the backlog takes to read), never not at
        all. ``resting`` says it rested.
        """
        now = now or datetime.now(UTC)
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
        started = self._clock()
        if paced and self._swept and started < self._rest_until:
            return {"due": 0, "enqueued": 0, "released": released, "resting": 1}
        if grace is None:
            grace = SWEEP_GRACE if self._swept else 0.0
        self._swept = True
        fields = {
            "message_id": 1,
            "domain": 1,
            "job_id": 1,
            "attempts": 1,
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
        await self._give_back_lapsed([d for d in docs if d["delivery_status"] == "sending"], now)
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
        await self._count_queue()
        self._rest_until = started + (self._clock() - started) / SWEEP_SHARE
        return {"due": len(docs), "enqueued": enqueued, "released": released, "resting": 0}

    async def _count_queue(self) -> None:
        """The send queue's depth by status, for the metrics (each count is one range of the
        (delivery_status, next_attempt_at) index)."""
        metrics.queue_depth(
            {
                status: await self.db.recipients.count_documents({"delivery_status": status})
                for status in QUEUE_STATUSES
            }
        )

    async def _give_back_lapsed(self, docs: list[dict[str, Any]], now: datetime) -> None:
        """Recipients an older release left ``sending`` under a lease of their own that has
        lapsed: back to the status a release without an attempt gives (the pull rounds ask
        only for ``queued`` and ``deferred``), each only if its lease is still the one read."""
        if docs:
            await self.db.recipients.bulk_write(
                [
                    UpdateOne(
                        {
                            "_id": d["_id"],
                            "delivery_status": "sending",
                            "lease_until": d["lease_until"],
                        },
                        {
                            "$set": {
                                "delivery_status": unleased_status(d),
                                "lease_until": None,
                                "lease_token": None,
                                "updated_at": now,
                            }
                        },
                    )
                    for d in docs
                ],
                ordered=False,
            )
