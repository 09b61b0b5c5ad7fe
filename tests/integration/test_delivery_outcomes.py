"""Delivery end to end on loopback: dnsmasq MX records, aiosmtpd sinks, the real worker."""

from __future__ import annotations

import asyncio
import email
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.domain.bounces import SmtpOutcome
from app.domain.verp import parse_verp_address
from app.services.delivery.outbox import DomainLease, PreparedMessage, Work
from tests.support.events import events_of
from tests.support.outbound import SENDER_DOMAIN, outbound_world


async def test_message_arrives_signed_with_a_verp_return_path_and_no_bcc(settings):
    async with outbound_world(settings) as w:
        item = await w.send(["bob@ok.test"], bcc=["carol@implicit.test"], subject="Signed")
        docs = await w.wait_statuses(
            item["message_id"], {"bob@ok.test": "sent", "carol@implicit.test": "sent"}
        )
        [got] = w.sinks["ok"].received
        assert got.rcpt_tos == ["bob@ok.test"]
        assert w.verify_dkim(got.data)
        parsed = email.message_from_bytes(got.data)
        assert parsed["Subject"] == "Signed" and parsed["Bcc"] is None
        assert b"carol@implicit.test" not in got.data  # Bcc is envelope-only
        assert f"d={SENDER_DOMAIN}" in parsed["DKIM-Signature"].replace(" ", "")
        secret = settings.secret_key.get_secret_value().encode()
        assert got.mail_from.endswith(f"@{SENDER_DOMAIN}")
        assert parse_verp_address(got.mail_from, secret=secret) == (
            str(item["message_id"]),
            str(docs["bob@ok.test"]["_id"]),
        )
        # the Bcc recipient got the same bytes over its own (implicit MX) transaction
        [bcc] = w.sinks["implicit"].received
        assert bcc.rcpt_tos == ["carol@implicit.test"] and w.verify_dkim(bcc.data)
        assert bcc.mail_from != got.mail_from  # one VERP address per recipient
        assert docs["bob@ok.test"]["last_reply"]["code"] == 250
        assert docs["bob@ok.test"]["attempts"] == 1


async def test_4xx_and_2xx_are_recorded_separately_and_5xx_suppresses_only_its_address(
    settings,
):
    options = {
        "mixed": {
            "rcpt": {
                "later@mixed.test": "451 4.3.0 please try again later",
                "gone@mixed.test": "550 5.1.1 <gone@mixed.test>: user unknown",
            }
        }
    }
    async with outbound_world(settings, sink_options=options, retry_schedule=[3600]) as w:
        item = await w.send(["ok@mixed.test", "later@mixed.test", "gone@mixed.test"], subject="Mix")
        docs = await w.wait_statuses(
            item["message_id"],
            {"ok@mixed.test": "sent", "later@mixed.test": "deferred", "gone@mixed.test": "bounced"},
        )
        later, gone = docs["later@mixed.test"], docs["gone@mixed.test"]
        assert later["attempts"] == 1 and later["last_reply"]["enhanced"] == "4.3.0"
        assert later["next_attempt_at"] > later["updated_at"]
        assert gone["bounce_class"] == "invalid_mailbox" and gone["last_reply"]["code"] == 550
        suppressed = await w.db.suppressions.find({}).to_list()
        assert [s["address"] for s in suppressed] == ["gone@mixed.test"]
        assert suppressed[0]["reason"] == "hard_bounce"
        # one connection carried every transaction of the domain
        assert w.sinks["mixed"].connections == 1
        events = await events_of(w.db, {"message_id": item["message_id"]})
        by = {(e["recipient"], e["event_type"]) for e in events}
        assert {
            ("ok@mixed.test", "sent"),
            ("later@mixed.test", "deferred"),
            ("gone@mixed.test", "bounced"),
        } <= by
        assert all(
            e["sender_user_id"] == w.sender.user_id and e["sender_domain"] == SENDER_DOMAIN
            for e in events
        )


async def test_a_bounce_files_a_threaded_dsn_in_the_senders_inbox(settings):
    options = {"ok": {"rcpt": {"gone@ok.test": "550 5.1.1 user unknown"}}}
    async with outbound_world(settings, sink_options=options) as w:
        item = await w.send(["gone@ok.test"], subject="Quarterly report")
        await w.wait_statuses(item["message_id"], {"gone@ok.test": "bounced"})
        for _ in range(600):  # up to 30 s: the DSN is filed after the outcome is recorded
            inbox = await w.db.mailbox_items.find(
                {"user_id": w.sender.user_id, "folder": "INBOX"}
            ).to_list()
            if inbox:
                break
            await asyncio.sleep(0.05)
        [notice] = inbox
        assert notice["thread_id"] == item["thread_id"]
        message = await w.db.messages.find_one({"_id": notice["message_id"]})
        raw = await w.system.blobs.get(message["raw_blob_id"])
        parsed = email.message_from_bytes(raw)
        assert parsed.get_content_type() == "multipart/report"
        assert parsed.get_param("report-type") == "delivery-status"
        original = await w.db.messages.find_one({"_id": item["message_id"]})
        assert parsed["In-Reply-To"] == original["rfc822_message_id"]
        status = next(p for p in parsed.walk() if p.get_content_type() == "message/delivery-status")
        text = status.as_string()
        assert "Final-Recipient: rfc822; gone@ok.test" in text and "Status: 5.1.1" in text
        assert "Action: failed" in text


async def test_a_reputation_block_bounces_but_never_suppresses_the_address(settings):
    options = {
        "ok": {
            "rcpt": {
                "bob@ok.test": "554 5.7.1 Service unavailable; Client host "
                "[127.0.0.1] blocked using zen.spamhaus.org"
            }
        }
    }
    async with outbound_world(settings, sink_options=options) as w:
        item = await w.send(["bob@ok.test"])
        docs = await w.wait_statuses(item["message_id"], {"bob@ok.test": "bounced"})
        assert docs["bob@ok.test"]["bounce_class"] == "reputation_block"
        assert await w.db.suppressions.count_documents({}) == 0


async def test_null_mx_and_nonexistent_domains_fail_permanently_at_once(settings):
    async with outbound_world(settings) as w:
        item = await w.send(["a@null.test", "b@nowhere.test"])
        docs = await w.wait_statuses(
            item["message_id"], {"a@null.test": "bounced", "b@nowhere.test": "bounced"}
        )
        assert docs["a@null.test"]["last_reply"]["enhanced"] == "5.1.10"
        assert docs["b@nowhere.test"]["bounce_class"] == "invalid_domain"
        assert docs["b@nowhere.test"]["attempts"] == 1


async def test_the_next_mx_is_tried_when_the_preferred_one_is_down(settings):
    async with outbound_world(settings) as w:
        item = await w.send(["x@backup.test"])
        docs = await w.wait_statuses(item["message_id"], {"x@backup.test": "sent"})
        assert docs["x@backup.test"]["last_reply"]["mx"] == "mx2.backup.test"
        assert len(w.sinks["backup"].received) == 1


async def test_a_deferred_recipient_is_retried_on_schedule_and_then_delivered(settings):
    options = {"ok": {"rcpt": {"bob@ok.test": "452 4.2.2 mailbox full, come back"}}}
    async with outbound_world(settings, sink_options=options, retry_schedule=[1]) as w:
        item = await w.send(["bob@ok.test"])
        await w.wait_statuses(item["message_id"], {"bob@ok.test": "deferred"})
        w.sinks["ok"].rcpt.pop("bob@ok.test")
        docs = await w.wait_statuses(item["message_id"], {"bob@ok.test": "sent"})
        assert docs["bob@ok.test"]["attempts"] == 2
        assert len(w.sinks["ok"].received) == 1
        events = await events_of(w.db, {"message_id": item["message_id"]})
        types = [e["event_type"] for e in sorted(events, key=lambda e: e["occurred_at"])]
        assert types == ["queued", "deferred", "sent"]


async def test_a_server_that_goes_silent_mid_data_defers_the_recipient(settings):
    async with outbound_world(settings, retry_schedule=[3600]) as w:
        item = await w.send(["x@silent.test"])
        docs = await w.wait_statuses(item["message_id"], {"x@silent.test": "deferred"})
        reply = docs["x@silent.test"]["last_reply"]
        assert reply["code"] == 0 and "timed out during DATA" in reply["text"]
        assert docs["x@silent.test"]["bounce_class"] == "network"


async def test_temporary_failures_expire_after_the_queue_lifetime_with_a_failure_notice(settings):
    options = {"ok": {"rcpt": {"bob@ok.test": "451 4.4.1 no answer from host"}}}
    async with outbound_world(
        settings, sink_options=options, retry_schedule=[1], queue_lifetime_seconds=2
    ) as w:
        item = await w.send(["bob@ok.test"])
        docs = await w.wait_statuses(item["message_id"], {"bob@ok.test": "expired"})
        assert docs["bob@ok.test"]["attempts"] >= 2
        notices = await w.db.messages.find(
            {"dsn.original_message_id": item["message_id"]}
        ).to_list()
        assert [n["dsn"]["kind"] for n in notices] == ["failure"]


async def test_transactional_mail_expires_after_its_shorter_lifetime(settings):
    options = {
        "ok": {"rcpt": {"t@ok.test": "451 4.4.1 try later", "b@ok.test": "451 4.4.1 try later"}}
    }
    async with outbound_world(
        settings,
        sink_options=options,
        retry_schedule=[1],
        queue_lifetime_seconds=3600,
        transactional_lifetime_seconds=2,
    ) as w:
        urgent = await w.send(["t@ok.test"], transactional=True)
        bulk = await w.send(["b@ok.test"])
        docs = await w.wait_statuses(urgent["message_id"], {"t@ok.test": "expired"})
        assert docs["t@ok.test"]["attempts"] >= 2
        message = await w.db.messages.find_one({"_id": urgent["message_id"]})
        assert message["transactional"] is True
        other = (await w.recipients(bulk["message_id"]))["b@ok.test"]
        assert other["delivery_status"] == "deferred"  # the 1 h lifetime still holds it


async def test_a_delay_notice_is_sent_once_after_the_delay_threshold(settings):
    options = {"ok": {"rcpt": {"bob@ok.test": "451 4.7.0 greylisted"}}}
    async with outbound_world(
        settings, sink_options=options, retry_schedule=[1], delay_notice_seconds=1
    ) as w:
        item = await w.send(["bob@ok.test"])
        for _ in range(600):
            doc = (await w.recipients(item["message_id"]))["bob@ok.test"]
            if doc["attempts"] >= 3:
                break
            await asyncio.sleep(0.05)
        notices = await w.db.messages.find(
            {"dsn.original_message_id": item["message_id"]}
        ).to_list()
        assert [n["dsn"]["kind"] for n in notices] == ["delay"]
        assert doc["delivery_status"] == "deferred" and doc["delay_notice_sent"]


async def test_an_address_suppressed_after_sending_is_not_mailed(settings):
    async with outbound_world(settings, worker=False) as w:
        item = await w.send(["bob@ok.test", "ann@ok.test"])
        await w.system.suppression.add("bob@ok.test", reason="complaint")
        await w.start_worker()
        docs = await w.wait_statuses(
            item["message_id"], {"bob@ok.test": "suppressed", "ann@ok.test": "sent"}
        )
        assert docs["bob@ok.test"]["attempts"] == 0
        assert [r.rcpt_tos for r in w.sinks["ok"].received] == [["ann@ok.test"]]


async def test_a_full_domain_concurrency_holds_delivery_back_without_failing_it(settings):
    async with outbound_world(settings, domain_concurrency=1) as w:
        throttle = w.system.delivery.lanes.throttle
        slot = await throttle.acquire("ok.test")  # another process holds the only slot
        assert slot is not None
        item = await w.send(["bob@ok.test"])
        await asyncio.sleep(1.0)
        doc = (await w.recipients(item["message_id"]))["bob@ok.test"]
        assert doc["delivery_status"] == "queued" and doc["attempts"] == 0
        assert w.sinks["ok"].received == []
        await throttle.release(slot)
        await w.wait_statuses(item["message_id"], {"bob@ok.test": "sent"}, within=20)


async def test_each_status_change_is_published_to_the_senders_channel(settings):
    async with outbound_world(settings) as w:
        pubsub = w.system.redis.client.pubsub()
        await pubsub.subscribe(w.system.redis.key("ev", f"user:{w.sender.user_id}"))
        item = await w.send(["bob@ok.test"])
        await w.wait_statuses(item["message_id"], {"bob@ok.test": "sent"})
        seen = []
        for _ in range(300):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                event = json.loads(message["data"])
                if event.get("type") == "delivery":
                    seen.append(event)
            if seen and seen[-1]["recipient"]["status"] == "sent":
                break
        await pubsub.aclose()
        assert [e["recipient"]["status"] for e in seen] == ["sending", "sent"]
        assert seen[-1]["messageId"] == str(item["message_id"])
        assert seen[-1]["recipient"]["lastReply"].startswith("250")


async def test_a_domain_leased_by_another_worker_waits_for_its_lease(settings):
    async with outbound_world(settings, delivery_lease_seconds=30) as w:
        # Another worker process holds ok.test: this one must not deliver there meanwhile.
        now = datetime.now(UTC)
        await w.db.domain_leases.insert_one(
            {"_id": "ok.test", "token": ObjectId(), "until": now + timedelta(seconds=30)}
        )
        item = await w.send(["bob@ok.test", "carol@implicit.test"])
        await w.wait_statuses(item["message_id"], {"carol@implicit.test": "sent"})
        await asyncio.sleep(1.0)
        doc = (await w.recipients(item["message_id"]))["bob@ok.test"]
        assert doc["delivery_status"] == "queued" and doc["attempts"] == 0
        assert w.sinks["ok"].received == []
        # Its lease runs out (the other worker died): this worker takes the domain over.
        await w.db.domain_leases.update_one(
            {"_id": "ok.test"}, {"$set": {"until": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        await w.wait_statuses(item["message_id"], {"bob@ok.test": "sent"}, within=20)
        assert [r.rcpt_tos for r in w.sinks["ok"].received] == [["bob@ok.test"]]


async def test_a_domain_lease_is_held_while_delivering_and_given_back_when_idle(settings):
    async with outbound_world(settings) as w:
        item = await w.send(["bob@ok.test", "ann@ok.test"])
        await w.wait_statuses(item["message_id"], {"bob@ok.test": "sent", "ann@ok.test": "sent"})
        token = w.system.delivery.leases.token
        lease = await w.db.domain_leases.find_one({"_id": "ok.test"})
        assert lease is None or lease["token"] == token  # ours, or already given back
        for _ in range(100):  # given back once the lane is idle (another worker may take it)
            lease = await w.db.domain_leases.find_one({"_id": "ok.test"})
            if lease["until"] <= datetime.now(UTC):  # ended; the document stays (the sweep)
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the idle domain's lease was not given back")
        # One write per delivered recipient: the outcome (no lease write on the recipient).
        events = await events_of(w.db, {"message_id": item["message_id"]})
        assert sorted(e["event_type"] for e in events) == ["queued", "queued", "sent", "sent"]


async def test_an_outcome_is_dropped_when_someone_else_attempted_the_recipient(settings):
    """A worker whose domain lease ran out must not write over the new holder's outcome."""
    async with outbound_world(settings, worker=False) as w:
        item = await w.send(["bob@ok.test"])
        doc = (await w.recipients(item["message_id"]))["bob@ok.test"]
        recorder = w.system.delivery.recorder
        message = PreparedMessage(item["message_id"], {}, b"", b"", SENDER_DOMAIN)
        lease = DomainLease("ok.test", datetime.now(UTC) + timedelta(seconds=60))
        # Meanwhile another worker attempted it and recorded a deferral.
        await w.db.recipients.update_one(
            {"_id": doc["_id"]}, {"$set": {"delivery_status": "deferred", "attempts": 1}}
        )
        settled: list[Any] = []
        recorder.on_settled(settled.extend)
        recorder.attempted(Work(doc, message, lease), SmtpOutcome(250, "2.0.0", "OK"), "mx")
        for _ in range(100):
            if settled:
                break
            await asyncio.sleep(0.05)
        after = (await w.recipients(item["message_id"]))["bob@ok.test"]
        assert after["delivery_status"] == "deferred" and after["attempts"] == 1
        events = await events_of(w.db, {"recipient_id": doc["_id"]})
        assert [e["event_type"] for e in events] == ["queued"]
