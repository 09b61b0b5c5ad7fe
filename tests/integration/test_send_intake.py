"""The batched send path: checked and durable at intake, stored as messages by the materializer.

Real SecantusDB, Redis, DNS and SMTP sinks (``outbound_world``); the worker, where it runs, is
the real arq worker (embedded, or a subprocess that is SIGKILLed).
"""

from __future__ import annotations

import asyncio
import email
import signal
import time
from collections import Counter
from email import policy

import pytest

from app.domain.errors import ValidationError
from app.domain.viewer import Viewer
from app.services.events.buckets import expand_all, message_docs, message_events
from app.services.send_intake.accept import Accepted, SendRequest
from app.services.sending.compose import Composition
from app.services.templates.sending import TemplateRef
from app.services.templates.store import TemplateDraft
from tests.support.outbound import SENDER_DOMAIN, Outbound, outbound_world
from tests.support.worker_process import kill_worker_when, start_worker_process, wait_until

SCHEMA = {
    "type": "object",
    "required": ["order", "name"],
    "properties": {"order": {"type": "string", "pattern": "^[0-9]+$"}, "name": {"type": "string"}},
}


async def _receipt(w: Outbound) -> Viewer:
    viewer: Viewer = w.sender
    await w.system.templates.save(
        viewer,
        TemplateDraft(
            key="receipt",
            subject="Order {{ order }}",
            text="Thanks {{ name }}, order {{ order }}.",
            html="<p>Thanks {{ name }}</p>",
            variables=SCHEMA,
        ),
    )
    await w.system.templates.publish(viewer, "receipt", 1)
    return viewer


def _send(to: str, order: str, key: str | None = None, name: str = "Bob") -> SendRequest:
    return SendRequest(
        Composition(to=[to], idempotency_key=key, transactional=True),
        TemplateRef("receipt", {"order": order, "name": name}),
    )


async def test_accepted_sends_become_ordinary_messages_queued_for_delivery(settings):
    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        local = await w.system.accounts.create_user(f"carol@{SENDER_DOMAIN}", "correct horse 1")
        results = await w.system.send_intake.accept_many(
            viewer,
            [_send("bob@ok.test", "1"), _send("dan@ok.test", "2"), _send(local["email"], "3")]
            + [SendRequest(Composition(to=["eve@ok.test"], subject="Plain", text="plain body"))],
        )
        assert all(isinstance(r, Accepted) for r in results)
        assert await w.db.send_intake.count_documents({}) == 4
        assert await w.db.messages.count_documents({}) == 0  # accepted, not yet materialized

        assert await w.system.materializer.drain() == 4
        assert await w.system.materializer.drain() == 0  # nothing twice
        assert await w.db.send_intake.count_documents({}) == 0
        for r in results:
            assert isinstance(r, Accepted)
            item = await w.db.mailbox_items.find_one({"_id": r.item_id})
            assert item["folder"] == "SENT" and item["message_id"] == r.message_id
        first = results[0]
        assert isinstance(first, Accepted)
        message = await w.db.messages.find_one({"_id": first.message_id})
        assert message["subject"] == "Order 1" and message["transactional"]
        assert "Thanks Bob, order 1." in message["text_body"]
        statuses = Counter(d["delivery_status"] for d in await w.db.recipients.find().to_list())
        assert statuses == {"queued": 3, "sent": 1}  # the local recipient got an Inbox view
        inbox = await w.db.mailbox_items.find_one({"user_id": local["_id"], "folder": "INBOX"})
        assert inbox["subject"] == "Order 3"
        docs = await w.db.delivery_events.find().to_list()
        events = Counter(e["event_type"] for e in expand_all(docs))
        assert events == {"queued": 4, "delivered": 1}
        # the batch's queued events are one bucket, each still found by its message
        assert Counter(d["event_type"] for d in docs) == {"queued": 1, "delivered": 1}
        for r in results:
            assert isinstance(r, Accepted)
            mine = message_events(
                await message_docs(w.db.delivery_events, r.message_id), r.message_id
            )
            assert "queued" in {e["event_type"] for e in mine}
        counter = await w.db.mailbox_counters.find_one(
            {"user_id": viewer.user_id, "kind": "folder", "name": "SENT"}
        )
        assert counter["total"] == 4


async def test_the_worker_materializes_and_delivers_an_accepted_template_send(settings):
    async with outbound_world(settings) as w:
        viewer = await _receipt(w)
        accepted = await w.system.send_intake.accept(viewer, _send("bob@ok.test", "42"))
        sink = w.sinks["ok"]
        deadline = time.monotonic() + 60  # a busy shared machine: generous
        while not sink.messages_to("bob@ok.test"):
            assert time.monotonic() < deadline, "never delivered"
            await asyncio.sleep(0.05)
        got = email.message_from_bytes(
            sink.messages_to("bob@ok.test")[0].data, policy=policy.default
        )
        assert got["subject"] == "Order 42"
        message = await w.db.messages.find_one({"_id": accepted.message_id})
        assert got["message-id"] == message["rfc822_message_id"]
        # recorded as sent too; and the world is not torn down while the worker still writes
        # that outcome (a transaction cut by the stop stays open on the server for 60 s and
        # blocks the database's drop: the NetworkTimeout this test used to hit now and then)
        await w.wait_statuses(accepted.message_id, {"bob@ok.test": "sent"})


async def test_bad_variables_are_field_errors_and_nothing_is_stored(settings):
    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        with pytest.raises(ValidationError) as refused:
            await w.system.send_intake.accept(
                viewer,
                SendRequest(
                    Composition(to=["bob@ok.test"], idempotency_key="k1"),
                    TemplateRef("receipt", {"order": "A-1"}),
                ),
            )
        assert sorted(f.field for f in refused.value.fields) == [
            "variables.name",
            "variables.order",
        ]
        assert await w.db.send_intake.count_documents({}) == 0
        assert await w.db.idempotency_keys.count_documents({}) == 0
        assert await w.system.materializer.drain() == 0
        assert await w.db.messages.count_documents({}) == 0


async def test_a_batch_with_one_bad_send_stores_the_others(settings):
    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        results = await w.system.send_intake.accept_many(
            viewer,
            [
                _send("bob@ok.test", "1"),
                _send("dan@ok.test", "not a number"),
                SendRequest(Composition(to=["x@ok.test"], subject="evil\r\nBcc: a@b.test")),
                _send("eve@ok.test", "3"),
            ],
        )
        assert isinstance(results[0], Accepted) and isinstance(results[3], Accepted)
        assert isinstance(results[1], ValidationError)
        assert [f.field for f in results[1].fields] == ["variables.order"]
        assert isinstance(results[2], ValidationError)
        assert results[2].fields[0].field == "subject"  # no header injection
        assert await w.system.materializer.drain() == 2
        stored = sorted(m["to"][0]["email"] for m in await w.db.messages.find().to_list())
        assert stored == ["bob@ok.test", "eve@ok.test"]


async def test_an_idempotency_key_answers_the_same_ids_before_and_after_materializing(settings):
    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        first = await w.system.send_intake.accept(viewer, _send("bob@ok.test", "7", key="o-7"))
        again = await w.system.send_intake.accept(viewer, _send("bob@ok.test", "7", key="o-7"))
        assert again == first
        assert await w.db.send_intake.count_documents({}) == 1
        await w.system.materializer.drain()
        after = await w.system.send_intake.accept(viewer, _send("bob@ok.test", "7", key="o-7"))
        assert after == first
        # the per-send path (GraphQL sendEmail) knows the key too: the same Sent item
        item = await w.system.sending.send_email(
            viewer, Composition(to=["bob@ok.test"], subject="x", text="y", idempotency_key="o-7")
        )
        assert item["_id"] == first.item_id
        # one call that names a key twice: the second is refused, the first stored
        results = await w.system.send_intake.accept_many(
            viewer, [_send("dan@ok.test", "8", key="o-8"), _send("dan@ok.test", "8", key="o-8")]
        )
        assert isinstance(results[0], Accepted) and isinstance(results[1], ValidationError)
        await w.system.materializer.drain()
        assert await w.db.messages.count_documents({}) == 2
        assert await w.db.recipients.count_documents({}) == 2


async def test_a_stale_batch_after_a_commit_stores_nothing_twice(settings):
    """A materializer that read a batch another one has stored (or its own run, killed after
    the commit, replayed) aborts its transaction: every message exists once."""
    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        await w.system.send_intake.accept_many(
            viewer, [_send(f"u{n}@ok.test", str(n)) for n in range(5)]
        )
        docs = await w.db.send_intake.find().to_list()
        materializer = w.system.materializer
        assert await materializer._materialize(docs) == 5
        assert await materializer._materialize(docs) == 0  # the same batch again
        assert await materializer._materialize(docs[:2]) == 0
        assert await w.db.messages.count_documents({}) == 5
        assert await w.db.mailbox_items.count_documents({"user_id": viewer.user_id}) == 5
        assert await w.db.recipients.count_documents({}) == 5


@pytest.mark.timeout(300)
async def test_a_worker_killed_between_intake_and_materializing_loses_and_doubles_nothing(
    private_database,
):
    sends = 600
    limits = {"send_limit_per_hour": 10_000, "send_limit_per_day": 10_000}
    worker_limits = {name: str(value) for name, value in limits.items()}
    async with outbound_world(private_database, worker=False, **limits) as w:
        viewer = await _receipt(w)
        accepted: list[Accepted] = []
        for start in range(0, sends, 200):
            results = await w.system.send_intake.accept_many(
                viewer,
                [_send(f"u{n}@ok.test", str(n), key=f"k{n}") for n in range(start, start + 200)],
            )
            accepted += [r for r in results if isinstance(r, Accepted)]
        assert len(accepted) == sends

        async def some_stored() -> bool:
            return bool(await w.db.messages.count_documents({}))

        await kill_worker_when(
            w.settings, some_stored, 60, "the first materialized batch", **worker_limits
        )
        left = await w.db.send_intake.count_documents({})
        assert left, "the kill came too late to test anything"
        await w.system.redis.client.flushall()  # its materialize job is gone too

        async def all_stored() -> bool:
            return (
                await w.db.send_intake.count_documents({}) == 0
                and await w.db.messages.count_documents({}) == sends
            )

        second = start_worker_process(w.settings, **worker_limits)  # the sweep at start resumes
        try:
            # a transaction the killed worker left open is aborted by the server after 60 s
            await wait_until(all_stored, 200, "every accepted send to be stored")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        ids = {m["_id"] for m in await w.db.messages.find({}, {"_id": 1}).to_list()}
        assert ids == {a.message_id for a in accepted}
        items = await w.db.mailbox_items.find({"user_id": viewer.user_id}).to_list()
        assert {i["_id"] for i in items} == {a.item_id for a in accepted} and len(items) == sends
        per_message = Counter(r["message_id"] for r in await w.db.recipients.find().to_list())
        assert set(per_message.values()) == {1}


async def test_the_per_send_path_knows_a_key_the_intake_accepted(settings):
    """sendEmail with a key accepted by the batched intake but not yet stored: retry shortly;
    once stored, the same Sent item."""
    from app.domain.errors import ServiceUnavailable

    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        accepted = await w.system.send_intake.accept(viewer, _send("bob@ok.test", "9", key="o-9"))
        plain = Composition(to=["bob@ok.test"], subject="x", text="y", idempotency_key="o-9")
        with pytest.raises(ServiceUnavailable):
            await w.system.sending.send_email(viewer, plain)
        await w.system.materializer.drain()
        item = await w.system.sending.send_email(viewer, plain)
        assert item["_id"] == accepted.item_id
        assert await w.db.messages.count_documents({}) == 1


async def test_send_rules_apply_as_for_any_send_attachments_send_at_suppression(settings):
    from datetime import UTC, datetime, timedelta

    async with outbound_world(settings, worker=False) as w:
        viewer = await _receipt(w)
        pdf = b"%PDF-1.4 receipt"
        upload = await w.system.attachments.upload_bytes(viewer, "r.pdf", "application/pdf", pdf)
        later = datetime.now(UTC) + timedelta(hours=1)
        await w.system.suppression.add("gone@ok.test", reason="hard_bounce")
        results = await w.system.send_intake.accept_many(
            viewer,
            [
                SendRequest(
                    Composition(to=["bob@ok.test"], attachment_ids=[str(upload["_id"])]),
                    TemplateRef("receipt", {"order": "1", "name": "Bob"}),
                ),
                SendRequest(
                    Composition(to=["dan@ok.test"], send_at=later),
                    TemplateRef("receipt", {"order": "2", "name": "Dan"}),
                ),
                _send("gone@ok.test", "3"),
            ],
        )
        # suppression is read when the message is stored (send time), after the intake
        assert all(isinstance(r, Accepted) for r in results)
        assert await w.system.materializer.drain() == 3
        first, scheduled, suppressed = results
        assert isinstance(first, Accepted) and isinstance(scheduled, Accepted)
        assert isinstance(suppressed, Accepted)
        message = await w.db.messages.find_one({"_id": first.message_id})
        assert [a["filename"] for a in message["attachments"]] == ["r.pdf"]
        raw = await w.system.blobs.get(message["raw_blob_id"])
        assert b"r.pdf" in raw and b"Order 1" in raw
        stored = await w.db.attachments.find_one({"_id": upload["_id"]})
        assert stored["message_ids"] == [first.message_id] and "expires_at" not in stored
        later_recipient = await w.db.recipients.find_one({"message_id": scheduled.message_id})
        assert later_recipient["delivery_status"] == "scheduled"
        assert (await w.db.messages.find_one({"_id": scheduled.message_id}))[
            "status"
        ] == "scheduled"
        gone = await w.db.recipients.find_one({"message_id": suppressed.message_id})
        assert gone["delivery_status"] == "suppressed"
        # an attachment that is not the sender's is refused at intake
        other = await w.system.accounts.create_user(f"eve@{SENDER_DOMAIN}", "correct horse 2")
        eve = Viewer(other["_id"], other["email"], None)
        with pytest.raises(ValidationError) as refused:
            await w.system.send_intake.accept(
                eve,
                SendRequest(
                    Composition(to=["x@ok.test"], text="hi", attachment_ids=[str(upload["_id"])])
                ),
            )
        assert refused.value.fields[0].field == "attachmentIds[0]"
