"""A campaign survives a SIGKILLed worker and a flushed Redis: nobody twice, nobody lost.

The state is in MongoDB (the list's parts in campaign_lists and the campaign's pending_floor,
which together give each recipient's state, and the campaign's batch lease); a message's id is
its campaign recipient's id, so a batch replayed after the crash cannot store a second message
for anyone; the sweep wakes the campaign once Redis lost its jobs.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from bson import ObjectId

from app.domain.viewer import Viewer
from app.services.campaigns.stats import recipient_states
from app.services.templates.store import TemplateDraft
from tests.support.campaigns import create_campaign
from tests.support.outbound import SENDER_DOMAIN, outbound_world
from tests.support.worker_process import kill_worker_when, start_worker_process, wait_until

LEASE_SECONDS = 3
HOST = "mx.mailhub.test"
VERIFIED_DNS = {
    SENDER_DOMAIN: [f"v=spf1 a:{HOST} -all"],
    f"_dmarc.{SENDER_DOMAIN}": ["v=DMARC1; p=none"],
}
RECIPIENTS = 90
# the worker process's own settings: short leases and stall time, no warm-up ramp
WORKER_SETTINGS = {
    "delivery_lease_seconds": str(LEASE_SECONDS),
    "campaign_lease_seconds": str(LEASE_SECONDS),
    "campaign_stall_seconds": "1",
    "campaign_warmup_ramp": "",
}


@pytest.mark.timeout(300)
async def test_a_killed_worker_and_a_flushed_redis_mid_campaign(private_database):
    slow = {"data_delay": 0.05}
    async with outbound_world(
        private_database,
        worker=False,
        extra_domains=3,
        sink_options={"d0": slow, "d1": slow, "d2": slow},
        extra_txt=VERIFIED_DNS,
        delivery_lease_seconds=LEASE_SECONDS,
        campaign_lease_seconds=LEASE_SECONDS,
        campaign_stall_seconds=1.0,
        campaign_warmup_ramp=[],
    ) as w:
        system = w.system
        viewer: Viewer = w.sender
        await system.templates.save(
            viewer, TemplateDraft(key="news", subject="Hi {{ n }}", text="Number {{ n }}.")
        )
        await system.templates.publish(viewer, "news", 1)
        assert (await system.domain_verifier.verify(SENDER_DOMAIN))["verification"]["verified"]
        campaign = await create_campaign(
            system,
            viewer,
            "crash",
            "news",
            rate_per_minute=900,  # 15 a batch, a batch a second
        )
        cid = str(campaign["_id"])
        expected = [f"u{n}@d{n % 3}.test" for n in range(RECIPIENTS)]
        await system.campaigns.add_recipients(viewer, cid, [(a, {"n": a}) for a in expected])
        await system.campaigns.transition(viewer, cid, "start")

        async def queued(n: int) -> bool:
            states, _ = await recipient_states(system.mongo, ObjectId(cid))
            return states.get("queued", 0) >= n

        await kill_worker_when(
            w.settings, lambda: queued(30), 60, "the first batches", **WORKER_SETTINGS
        )
        recorded = await w.sent_addresses()
        window = set(w.accepted_by_sinks()) - recorded  # delivered but not recorded: may come twice
        assert not await queued(RECIPIENTS), "the kill came too late to test anything"
        await system.redis.client.flushall()  # every job (and the next batch's) is gone

        await w.outlive_leases()
        second = start_worker_process(w.settings, **WORKER_SETTINGS)
        try:

            async def all_sent() -> bool:
                doc = await w.db.campaigns.find_one({"_id": ObjectId(cid)})
                sent = await w.db.recipients.count_documents(
                    {"campaign_id": ObjectId(cid), "delivery_status": "sent"}
                )
                return doc["status"] == "completed" and sent == RECIPIENTS

            # a transaction the killed worker left open is aborted by the server after 60 s
            await wait_until(all_sent, 150, "the campaign to complete")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)

        # one delivery row per recipient in the database: no batch ran twice for anyone
        per_recipient = Counter(
            d["address"]
            for d in await w.db.recipients.find(
                {"campaign_id": ObjectId(cid)}, {"address": 1}
            ).to_list()
        )
        assert set(per_recipient) == set(expected) and set(per_recipient.values()) == {1}
        accepted = w.accepted_by_sinks()
        assert set(accepted) == set(expected)  # nobody lost
        duplicates = {a for a, n in accepted.items() if n > 1}
        assert duplicates <= window  # SMTP's own at-least-once window only
        assert all(n <= 2 for n in accepted.values())
