"""sendEmail's group commit: concurrent sends, from different users, share one transaction.

Real SecantusDB and Redis. A first send holds its transaction open (its extra work waits on
an event, as sendDraft's draft removal runs there) until the other sends have queued behind
it, so the test knows which sends share the next transaction instead of hoping for it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import monitoring

from app.bootstrap import System, build_system
from app.domain.changes import Change
from app.domain.errors import NotFound, ServiceUnavailable
from app.domain.filing_plan import thread_ref_id
from app.domain.viewer import Viewer
from app.embedded import free_port
from app.services.feedback.suppression import user_scope
from app.services.sending.compose import Composition
from tests.support.cleanup import drop_database
from tests.support.commands import CommandLog
from tests.support.own_mongo import own_mongo_settings, start_mongo

DOMAIN = "example.test"


@pytest.fixture
async def commits_and_system(settings: Any) -> AsyncIterator[tuple[CommandLog, System]]:
    commits = CommandLog()
    monitoring.register(commits)  # before the system's client exists, so it reports here
    system = await build_system(settings)
    await system.accounts.add_domain(DOMAIN)
    try:
        yield commits, system
    finally:
        commits.active = False
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


async def _users(system: System, n: int) -> list[Viewer]:
    viewers = []
    for i in range(n):
        email = f"u{i}@{DOMAIN}"
        user = await system.accounts.create_user(email, "correct horse battery")
        viewers.append(Viewer(user["_id"], email))
    return viewers


class Held:
    """A first send whose transaction stays open until ``release``: the sends started
    meanwhile queue behind it and share the next transaction."""

    def __init__(self, system: System, viewer: Viewer) -> None:
        self.system = system
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

        async def hold(session: Any) -> list[Change]:
            self.entered.set()
            await self.gate.wait()
            return []

        self.task = asyncio.create_task(
            system.sending.send_email(
                viewer,
                Composition(to=["held@remote.test"], subject="held", text="first"),
                also_in_transaction=hold,
            )
        )

    async def queue_behind(
        self, sends: list[Awaitable[Any]], before_release: Callable[[], None] | None = None
    ) -> list[Any]:
        """Start ``sends`` while the first transaction is open, wait until every one of them
        has queued for the next, release the first; the first send's result or error, then
        each of ``sends``'."""
        await self.entered.wait()
        tasks = [asyncio.ensure_future(s) for s in sends]
        committer = self.system.sending.committer
        while committer.queued < len(tasks) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        assert committer.queued == len(tasks), [t.result() for t in tasks if t.done()]
        if before_release is not None:
            before_release()
        self.gate.set()
        return list(await asyncio.gather(self.task, *tasks, return_exceptions=True))


async def test_concurrent_sends_of_different_users_share_one_transaction(commits_and_system):
    commits, system = commits_and_system
    db = system.mongo.db
    viewers = await _users(system, 9)
    first, senders = viewers[0], viewers[1:]
    # u1 stopped mail to z@remote.test for itself only: the shared suppression read must keep
    # each sender's scope
    await system.suppression.add(
        "z@remote.test", reason="manual", scope=user_scope(senders[0].user_id)
    )
    held = Held(system, first)
    commits.clear()
    held_item, *items = await held.queue_behind(
        [
            system.sending.send_email(
                v,
                Composition(
                    to=[f"r{n}@remote.test", "z@remote.test"],
                    cc=[senders[(n + 1) % len(senders)].email],  # a local recipient
                    subject=f"from {n}",
                    text=f"body {n}",
                ),
            )
            for n, v in enumerate(senders)
        ]
    )
    # the held send's transaction, then one for all the others
    assert commits.names.count("commitTransaction") == 2
    assert held_item["subject"] == "held"

    for n, (viewer, item) in enumerate(zip(senders, items, strict=True)):
        assert isinstance(item, dict), item
        assert item["user_id"] == viewer.user_id and item["subject"] == f"from {n}"
        assert item["folder"] == "SENT"
        # the Sent view returned is the stored one, times to the millisecond included
        assert item == await db.mailbox_items.find_one({"_id": item["_id"]})
        message = await db.messages.find_one({"_id": item["message_id"]})
        assert message["sender_user_id"] == viewer.user_id
        raw = await system.blobs.get(message["raw_blob_id"])
        assert f"body {n}".encode() in raw
        recipients = {
            r["address"]: r
            for r in await db.recipients.find({"message_id": message["_id"]}).to_list()
        }
        local = senders[(n + 1) % len(senders)].email
        assert {a: r["delivery_status"] for a, r in recipients.items()} == {
            f"r{n}@remote.test": "queued",
            "z@remote.test": "suppressed" if n == 0 else "queued",
            local: "sent",
        }
        events = Counter(
            (e["recipient"], e["event_type"])
            for e in await db.delivery_events.find({"message_id": message["_id"]}).to_list()
        )
        assert events == Counter(
            {
                (f"r{n}@remote.test", "queued"): 1,
                ("z@remote.test", "suppressed" if n == 0 else "queued"): 1,
                (local, "queued"): 1,
                (local, "delivered"): 1,
            }
        )
        inbox = await db.mailbox_items.find(
            {"user_id": senders[(n + 1) % len(senders)].user_id, "folder": "INBOX"}
        ).to_list()
        assert [i["subject"] for i in inbox] == [f"from {n}"]
    assert await db.messages.count_documents({}) == len(senders) + 1
    assert await db["blobs.files"].count_documents({}) == len(senders) + 1
    assert len({i["message_id"] for i in items}) == len(senders)


async def test_a_key_used_twice_in_one_batch_stores_one_message_and_spares_the_others(
    commits_and_system,
):
    _, system = commits_and_system
    db = system.mongo.db
    first, alice, bob, carol = await _users(system, 4)

    def send(viewer: Viewer, subject: str, key: str | None) -> Awaitable[Any]:
        return system.sending.send_email(
            viewer,
            Composition(to=["x@remote.test"], subject=subject, text="t", idempotency_key=key),
        )

    held = Held(system, first)
    _, twice, again, other, same_key_other_user = await held.queue_behind(
        [
            send(alice, "once", "k"),
            send(alice, "once", "k"),
            send(bob, "b", None),
            send(carol, "c", "k"),
        ]
    )
    assert isinstance(twice, dict) and isinstance(again, dict), (twice, again)
    # the same Sent item, whichever of the two callers' sends was the one stored (the other
    # gets it read back): equal to the millisecond
    assert twice == again
    assert isinstance(other, dict) and other["user_id"] == bob.user_id
    assert isinstance(same_key_other_user, dict) and same_key_other_user["user_id"] == carol.user_id
    subjects = Counter(m["subject"] for m in await db.messages.find({}).to_list())
    assert subjects == Counter({"held": 1, "once": 1, "b": 1, "c": 1})
    assert await db.recipients.count_documents({}) == 4
    assert await db.delivery_events.count_documents({}) == 4
    assert await db.idempotency_keys.count_documents({}) == 2
    # and later, alone: still the earlier result
    assert await send(alice, "once", "k") == again


async def test_send_draft_removes_its_draft_in_the_send_transaction_within_a_batch(
    commits_and_system,
):
    _, system = commits_and_system
    db = system.mongo.db
    first, alice, bob = await _users(system, 3)
    draft = await system.drafts.save_draft(
        alice, None, Composition(to=["x@remote.test"], subject="Plan", text="the plan")
    )
    held = Held(system, first)
    _, sent_once, sent_twice, other = await held.queue_behind(
        [
            system.drafts.send_draft(alice, str(draft["_id"])),
            system.drafts.send_draft(alice, str(draft["_id"])),  # a double click
            system.sending.send_email(
                bob, Composition(to=["y@remote.test"], subject="b", text="t")
            ),
        ]
    )
    # one of the two sends the draft, the other finds it gone; bob's send is not affected
    outcomes = sorted([sent_once, sent_twice], key=lambda o: isinstance(o, dict))
    assert isinstance(outcomes[0], NotFound) and isinstance(outcomes[1], dict), outcomes
    sent = outcomes[1]
    assert sent["folder"] == "SENT" and sent["subject"] == "Plan"
    assert isinstance(other, dict) and other["user_id"] == bob.user_id
    items = await db.mailbox_items.find({"user_id": alice.user_id}).to_list()
    assert [(i["folder"], i["subject"]) for i in items] == [("SENT", "Plan")]
    counters = {
        c["name"]: (c["total"], c["unread"])
        for c in await db.mailbox_counters.find({"user_id": alice.user_id}).to_list()
    }
    assert counters["DRAFTS"] == (0, 0) and counters["SENT"] == (1, 0)
    # the Sent view's thread exists: it was chosen after the draft's thread was removed
    assert await db.threads.find_one({"_id": sent["thread_id"], "user_id": alice.user_id})
    assert await db.recipients.count_documents({"address": "x@remote.test"}) == 1


async def test_a_database_gone_under_a_batch_answers_service_unavailable_to_each_send(
    services, tmp_path, unique_name
):
    port = free_port()
    mongo = start_mongo(port, tmp_path / "db")  # a server of its own, to kill
    settings = own_mongo_settings(port, services, unique_name)
    system = await build_system(settings)
    try:
        await system.accounts.add_domain(DOMAIN)
        first, alice, bob = await _users(system, 3)

        def kill() -> None:
            mongo.kill()
            mongo.wait()

        held = Held(system, first)
        outcomes = await held.queue_behind(
            [
                system.sending.send_email(
                    v, Composition(to=["x@remote.test"], subject="s", text="t")
                )
                for v in (alice, bob)
            ],
            before_release=kill,
        )
        # the open transaction and the batch queued behind it: each caller told to retry
        assert [type(o) for o in outcomes] == [ServiceUnavailable] * 3, outcomes
        assert all(o.retry_after_seconds for o in outcomes)
    finally:
        mongo.kill()
        mongo.wait()
        # back, and reached again before closing (as test_failures does): the client ends its
        # sessions on close, and closing while it still counts the server as gone can hang
        mongo = start_mongo(port, tmp_path / "db")
        for _ in range(50):
            if await system.mongo.ping():
                break
            await asyncio.sleep(0.2)
        await system.close()
        mongo.kill()
        mongo.wait()


async def test_concurrent_sends_share_their_senders_address_and_pause_reads(settings):
    """Sends that check their sender at the same time share one read of the senders'
    addresses and one of the active reputation pauses; each still gets its own answer (a
    paused sender is refused, the others are sent from their own addresses)."""
    from app.domain.errors import ValidationError
    from app.services.feedback.reputation import pause_key

    finds = CommandLog()
    monitoring.register(finds)
    system = await build_system(settings)
    try:
        await system.accounts.add_domain(DOMAIN)
        viewers = await _users(system, 4)
        await system.accounts.add_alias(viewers[0].email, f"alias@{DOMAIN}")
        await system.mongo.db.sending_pauses.insert_one(
            {
                "_id": pause_key("user", viewers[3].user_id),
                "active": True,
                "kind": "user",
                "reason": "complaints above the threshold",
            }
        )
        assert await system.accounts.addresses_of(viewers[0].user_id) == [
            viewers[0].email,
            f"alias@{DOMAIN}",
        ]
        finds.clear()
        results = await asyncio.gather(
            *(
                system.sending.send_email(
                    v, Composition(to=["reader@remote.test"], subject=f"from {i}", text="hi")
                )
                for i, v in enumerate(viewers)
            ),
            return_exceptions=True,
        )
        assert not any(isinstance(r, BaseException) for r in results[:3]), results
        assert isinstance(results[3], ValidationError) and "paused" in str(results[3])
        stored = {
            m["subject"]: m["from"]["email"]
            for m in await system.mongo.db.messages.find({}, {"subject": 1, "from": 1}).to_list()
        }
        assert stored == {f"from {i}": viewers[i].email for i in range(3)}
        by_user = [f for f in finds.finds("identities") if "user_id" in f]
        pauses = finds.finds("sending_pauses")
        assert len(by_user) == 1 and len(pauses) == 1, finds.commands
    finally:
        finds.active = False
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


async def test_a_send_does_not_look_up_its_own_new_message_id(commits_and_system):
    """The Message-ID of a send is made for it, so no thread can name it: the thread context
    of a new conversation asks thread_refs nothing. A reply still finds the conversation by
    the ref the first send wrote (its in-reply-to is looked up), and both sit in one thread."""
    commits, system = commits_and_system
    [viewer] = await _users(system, 1)
    commits.clear()
    first = await system.sending.send_email(
        viewer, Composition(to=["ann@remote.test"], subject="Plans", text="hi")
    )
    assert commits.finds("thread_refs") == []
    assert len(commits.finds("threads")) == 1  # the subject fallback is still asked
    reply = await system.sending.send_email(
        viewer,
        Composition(
            to=["ann@remote.test"],
            subject="Re: Plans",
            text="and another thing",
            in_reply_to=str(first["_id"]),
        ),
    )
    [refs_query] = commits.finds("thread_refs")
    first_message = await system.mongo.db.messages.find_one({"_id": first["message_id"]})
    assert refs_query["_id"] == {
        "$in": [thread_ref_id(viewer.user_id, first_message["rfc822_message_id"])]
    }
    assert reply["thread_id"] == first["thread_id"]
