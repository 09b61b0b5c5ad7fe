"""A campaign survives a SIGKILLed worker and a flushed Redis: nobody twice, nobody lost.

The state is in MongoDB (campaign_recipients per-recipient states, the campaign's batch lease);
a message's id is its campaign recipient's id, so a batch replayed after the crash cannot store
a second message for anyone; the sweep wakes the campaign once Redis lost its jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from app.domain.viewer import Viewer
from app.embedded import EmbeddedStack
from app.services.templates.store import TemplateDraft
from tests.support.outbound import SENDER_DOMAIN, Outbound, outbound_world

LEASE_SECONDS = 3
HOST = "mx.mailhub.test"
VERIFIED_DNS = {
    SENDER_DOMAIN: [f"v=spf1 a:{HOST} -all"],
    f"_dmarc.{SENDER_DOMAIN}": ["v=DMARC1; p=none"],
}
RECIPIENTS = 90


def _worker(w: Outbound) -> subprocess.Popen[bytes]:
    s = w.settings
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": s.mongodb_uri,
        "MAILHUB_MONGODB_DATABASE": s.mongodb_database,
        "MAILHUB_REDIS_URL": s.redis_url,
        "MAILHUB_REDIS_PREFIX": s.redis_prefix,
        "MAILHUB_DNS_SERVERS": ",".join(s.dns_servers),
        "MAILHUB_DELIVERY_PORT": str(s.delivery_port),
        "MAILHUB_SECRET_KEY": s.secret_key.get_secret_value(),
        "MAILHUB_HOSTNAME": s.hostname,
        "MAILHUB_DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
        "MAILHUB_CAMPAIGN_LEASE_SECONDS": str(LEASE_SECONDS),
        "MAILHUB_CAMPAIGN_STALL_SECONDS": "1",
        "MAILHUB_CAMPAIGN_WARMUP_RAMP": "",
        "MAILHUB_ENVIRONMENT": "test",
        "MAILHUB_DELIVERY_TIMEOUT_SECONDS": "2",
        "MAILHUB_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main(['worker'])"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _accepted(w: Outbound) -> Counter[str]:
    return Counter(a for sink in w.sinks.values() for r in sink.received for a in r.rcpt_tos)


async def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def private_database(settings, tmp_path):  # type: ignore[no-untyped-def]
    """A SecantusDB of this test's own: the killed worker may leave a transaction open."""
    stack = EmbeddedStack(tmp_path / "servers")
    stack.start(mongo=True, redis=False, typesense=False)
    try:
        yield settings.model_copy(update={"mongodb_uri": stack.url("mongodb")})
    finally:
        stack.stop()


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
        campaign = await system.campaigns.create(
            viewer,
            name="crash",
            template_key="news",
            template_version=None,
            variables={},
            from_=None,
            rate_per_minute=900,  # 15 a batch, a batch a second
            send_at=None,
            track_opens=False,
            track_clicks=False,
        )
        cid = str(campaign["_id"])
        expected = [f"u{n}@d{n % 3}.test" for n in range(RECIPIENTS)]
        await system.campaigns.add_recipients(viewer, cid, [(a, {"n": a}) for a in expected])
        await system.campaigns.transition(viewer, cid, "start")

        async def queued(n: int) -> bool:
            return (
                await w.db.campaign_recipients.count_documents(
                    {"campaign_id": ObjectId(cid), "state": "queued"}
                )
                >= n
            )

        first = _worker(w)
        try:
            await _wait(lambda: queued(30), 60, "the first batches")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        recorded = {
            d["address"]
            for d in await w.db.recipients.find(
                {"delivery_status": "sent"}, {"address": 1}
            ).to_list()
        }
        window = set(_accepted(w)) - recorded  # delivered but not recorded: may come twice
        assert not await queued(RECIPIENTS), "the kill came too late to test anything"
        await system.redis.client.flushall()  # every job (and the next batch's) is gone

        leases = [
            d["lease_until"]
            for d in await w.db.recipients.find(
                {"delivery_status": "sending"}, {"lease_until": 1}
            ).to_list()
        ]
        if leases:
            await asyncio.sleep(max(0.0, (max(leases) - datetime.now(UTC)).total_seconds()) + 0.2)
        second = _worker(w)
        try:

            async def all_sent() -> bool:
                doc = await w.db.campaigns.find_one({"_id": ObjectId(cid)})
                sent = await w.db.recipients.count_documents(
                    {"campaign_id": ObjectId(cid), "delivery_status": "sent"}
                )
                return doc["status"] == "completed" and sent == RECIPIENTS

            # a transaction the killed worker left open is aborted by the server after 60 s
            await _wait(all_sent, 150, "the campaign to complete")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)

        # one message per recipient in the database: no batch ran twice for anyone
        per_recipient = Counter(
            d["to"][0]["email"]
            for d in await w.db.messages.find({"campaign_id": ObjectId(cid)}, {"to": 1}).to_list()
        )
        assert set(per_recipient) == set(expected) and set(per_recipient.values()) == {1}
        accepted = _accepted(w)
        assert set(accepted) == set(expected)  # nobody lost
        duplicates = {a for a, n in accepted.items() if n > 1}
        assert duplicates <= window  # SMTP's own at-least-once window only
        assert all(n <= 2 for n in accepted.values())
