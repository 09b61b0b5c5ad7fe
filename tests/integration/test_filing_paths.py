"""Filing one message at a time and filing a batch (the MX's group commit) write the same documents.

The same messages and views go through each path on a fresh database of its own, in two rounds
(so the second round meets threads the first one made); then every document filing writes —
mailbox_items, threads, thread_refs, mailbox_counters, mailbox_changes — is compared, with
generated ids replaced by labels given in a path-independent order and times by a marker.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from app.adapters.indexes import ensure_indexes
from app.adapters.mongo import Mongo, in_transaction
from app.domain.conversations import normalize_subject
from app.domain.filing_plan import thread_subject_key
from app.services.after_commit import Notifier
from app.services.inbound.group_commit import InboundStore, InboundView, PreparedInbound
from app.services.mailbox.filing import Filing, ViewSpec, file_message, load_thread_context
from tests.support.cleanup import drop_database

ANN = ObjectId()
BEN = ObjectId()
SPAM = {"score": 0.97, "verdict": "spam"}


def message(mid: str, subject: str, *, sender: str, in_reply_to: str | None = None) -> dict:
    return {
        "_id": ObjectId(),
        "rfc822_message_id": mid,
        "in_reply_to": in_reply_to,
        "references": [in_reply_to] if in_reply_to else [],
        "subject": subject,
        "normalized_subject": normalize_subject(subject),
        "from": {"name": None, "email": sender},
        "to": [{"name": None, "email": "ann@example.test"}],
        "cc": [{"name": "Ben", "email": "ben@example.test"}],
        "snippet": subject.lower(),
        "has_attachments": False,
        "size": 100,
        "content_sha256": hashlib.sha256(mid.encode()).hexdigest(),
    }


# (message, [(user, folder, spam)]): two rounds, the second replying into the first's threads.
FIRST_ROUND = [
    (
        message("<p1@x>", "Budget", sender="cat@remote.test"),
        [(ANN, "INBOX", None), (BEN, "INBOX", None)],
    ),
    (
        message("<r2@x>", "Re: Trip", sender="dan@remote.test", in_reply_to="<p2@x>"),
        [(ANN, "INBOX", None)],
    ),
    (message("<s1@x>", "Weekly report", sender="eve@remote.test"), [(ANN, "INBOX", None)]),
    (message("<s2@x>", "Weekly report", sender="eve@remote.test"), [(BEN, "SPAM", SPAM)]),
]
SECOND_ROUND = [
    (message("<r1@x>", "Re: Budget", sender="cat@remote.test", in_reply_to="<p1@x>"), [(ANN, "INBOX", None), (BEN, "INBOX", None)]),
    (message("<p2@x>", "Trip", sender="dan@remote.test"), [(ANN, "INBOX", None)]),
    (message("<s3@x>", "RE: Weekly report", sender="eve@remote.test"), [(ANN, "INBOX", None)]),
    (message("<s4@x>", "Weekly report", sender="stranger@remote.test"), [(ANN, "INBOX", None)]),
    (message("<r3@x>", "Something else entirely", sender="cat@remote.test", in_reply_to="<p1@x>"), [(ANN, "INBOX", None)]),
    (message("<n1@x>", "New topic", sender="fay@remote.test"), [(ANN, "INBOX", None), (BEN, "ARCHIVE", None)]),
]  # fmt: skip


def dedupe_key(msg: dict) -> str:
    return f"{msg['rfc822_message_id']}|{msg['content_sha256']}"


async def fresh_database(settings: Any, suffix: str) -> Mongo:
    mongo = Mongo.open(settings.mongodb_uri, f"{settings.mongodb_database}{suffix}")
    await ensure_indexes(mongo.db)
    await mongo.db.users.insert_many(
        [{"_id": ANN, "email": "ann@example.test", "state": 0},
         {"_id": BEN, "email": "ben@example.test", "state": 0}]
    )  # fmt: skip
    return mongo


async def file_one_at_a_time(mongo: Mongo, round_: list) -> None:
    for msg, views in round_:
        specs = [
            ViewSpec(user, "received", folder, dedupe_key=dedupe_key(msg), spam=spam)
            for user, folder, spam in views
        ]

        async def work(session: Any, msg: dict = msg, specs: list = specs) -> None:
            await mongo.db.messages.insert_one(dict(msg), session=session)
            await file_message(mongo.db, msg, specs, received_at=datetime.now(UTC), session=session)

        await in_transaction(mongo, work)


async def file_as_one_batch(mongo: Mongo, round_: list) -> None:
    store = InboundStore(mongo, Notifier(), max_batch=64)
    await asyncio.gather(
        *(
            store.store(
                PreparedInbound(
                    message=dict(msg),
                    views=[InboundView(user, folder, spam) for user, folder, spam in views],
                    dedupe_key=dedupe_key(msg),
                )
            )
            for msg, views in round_
        )
    )


async def documents(mongo: Mongo) -> dict[str, list[dict]]:
    """Every filing document, ids as labels (given in an order both paths share), times masked."""
    db = mongo.db
    labels: dict[ObjectId, str] = {ANN: "ann", BEN: "ben"}
    for index, (msg, _) in enumerate(FIRST_ROUND + SECOND_ROUND):
        labels[msg["_id"]] = f"message{index}"

    def label(value: Any) -> Any:
        if isinstance(value, ObjectId):
            return labels.setdefault(value, f"id{len(labels)}")
        if isinstance(value, datetime):
            return "<time>"
        if isinstance(value, dict):
            return {k: label(v) for k, v in value.items()}
        if isinstance(value, list):
            return [label(v) for v in value]
        return value

    items = await db.mailbox_items.find().to_list()
    items.sort(key=lambda i: (labels[i["user_id"]], labels[i["message_id"]], i["folder"]))
    for item in items:  # thread ids get their labels in the order of the views they hold
        label(item["_id"])
        label(item["thread_id"])
    threads = await db.threads.find().to_list()
    threads.sort(key=lambda t: int(label(t["_id"])[2:]))
    for thread in threads:  # the key names the user by id: right, then left out of the labels
        key = thread.pop("subject_key")
        assert key == thread_subject_key(thread["user_id"], thread["normalized_subject"])
    refs = await db.thread_refs.find({}, {"_id": 0}).to_list()
    refs.sort(key=lambda r: (labels[r["user_id"]], r["rfc822_id"]))
    counters = await db.mailbox_counters.find({}, {"_id": 0}).to_list()
    counters.sort(key=lambda c: (labels[c["user_id"]], c["kind"], c["name"]))
    changes = await db.mailbox_changes.find({}, {"_id": 0}).to_list()
    changes.sort(key=lambda c: (labels[c["user_id"]], c["seq"]))
    return {
        "mailbox_items": label(items),
        "threads": label(threads),
        "thread_refs": label(refs),
        "mailbox_counters": label(counters),
        "mailbox_changes": label(changes),
    }


async def test_filing_one_at_a_time_and_as_a_batch_write_the_same_documents(settings):
    single = await fresh_database(settings, "_single")
    batched = await fresh_database(settings, "_batched")
    try:
        for round_ in (FIRST_ROUND, SECOND_ROUND):
            await file_one_at_a_time(single, round_)
            await file_as_one_batch(batched, round_)
        expected, got = await documents(single), await documents(batched)
        assert got["mailbox_items"] == expected["mailbox_items"]
        assert got["threads"] == expected["threads"]
        assert got["thread_refs"] == expected["thread_refs"]
        assert got["mailbox_changes"] == expected["mailbox_changes"]
        assert got["mailbox_counters"] == expected["mailbox_counters"]
    finally:
        for mongo in (single, batched):
            await drop_database(mongo.client, mongo.db.name)
            await mongo.close()


@pytest.mark.parametrize("batch_users", [[ANN], [ANN, BEN]], ids=["one user", "two users"])
async def test_the_thread_context_holds_only_the_batch_s_users_threads(mongo, batch_users):
    other = ObjectId()  # has a thread with the same subject and the same Message-IDs
    await mongo.db.users.insert_many(
        [{"_id": u, "email": f"{u}@example.test", "state": 0} for u in (ANN, BEN, other)]
    )
    for user in (ANN, BEN, other):
        await in_transaction(
            mongo,
            lambda session, user=user: file_message(
                mongo.db,
                message("<p@x>", "Weekly report", sender="eve@remote.test"),
                [ViewSpec(user, "received", "INBOX")],
                received_at=datetime.now(UTC),
                session=session,
            ),
        )
    reply = message("<r@x>", "Re: Weekly report", sender="eve@remote.test", in_reply_to="<p@x>")
    plain = message("<s@x>", "Weekly report", sender="eve@remote.test")
    views = [ViewSpec(u, "received", "INBOX") for u in batch_users]
    filings = [Filing(reply, views, datetime.now(UTC)), Filing(plain, views, datetime.now(UTC))]
    context = await in_transaction(
        mongo, lambda session: load_thread_context(mongo.db, filings, session)
    )
    threads = {
        t["_id"]: t["user_id"] for t in await mongo.db.threads.find({}, {"user_id": 1}).to_list()
    }
    assert {user for user, _ in context.refs} == set(batch_users)
    assert {threads[t] for t in context.subjects} == set(batch_users)
    assert {user for user, _ in context.by_subject} == set(batch_users)
    assert all(threads[t] != other for t in context.refs.values())
    # The group commit reads the same context outside its transaction, queries in flight
    # together: the same answer.
    together = await load_thread_context(mongo.db, filings, None, parallel=8)
    assert together.refs == context.refs
    assert together.subjects == context.subjects
    assert together.by_subject == context.by_subject
    with pytest.raises(ValueError):
        await in_transaction(
            mongo, lambda session: load_thread_context(mongo.db, filings, session, parallel=8)
        )


async def test_a_thread_ref_claimed_between_the_batch_s_reads_and_its_write_is_kept(mongo):
    """The group commit inserts the thread refs its reads did not find. A ref another writer
    makes in between (here: the parent of a reply in the batch, filed by another process)
    fails that insert; the batch is re-run with new reads, every message is stored once, and
    the reply joins its parent's thread."""
    await mongo.db.users.insert_many(
        [{"_id": u, "email": f"{u}@example.test", "state": 0} for u in (ANN, BEN)]
    )
    parent = message("<p@x>", "Trip", sender="dan@remote.test")
    reply = message("<r@x>", "Re: Trip", sender="dan@remote.test", in_reply_to="<p@x>")
    other = message("<o@x>", "Budget", sender="cat@remote.test")
    reads = 0

    class RacedStore(InboundStore):
        async def _reads(self, batch):  # type: ignore[no-untyped-def]
            nonlocal reads
            reads += 1
            found = await super()._reads(batch)
            if reads == 1:  # another writer, after the first read and before the write

                async def file_parent(session: Any) -> None:
                    await mongo.db.messages.insert_one(dict(parent), session=session)
                    await file_message(
                        mongo.db,
                        parent,
                        [ViewSpec(ANN, "received", "INBOX", dedupe_key=dedupe_key(parent))],
                        received_at=datetime.now(UTC),
                        session=session,
                    )

                await in_transaction(mongo, file_parent)
            return found

    store = RacedStore(mongo, Notifier(), max_batch=64)
    results = await asyncio.gather(
        *(
            store.store(
                PreparedInbound(
                    message=dict(m), views=[InboundView(ANN, "INBOX")], dedupe_key=dedupe_key(m)
                )
            )
            for m in (reply, other)
        )
    )
    assert reads == 3  # the batch, then each message again on its own
    assert [r.message_id for r in results] == [reply["_id"], other["_id"]]
    items = {i["message_id"]: i for i in await mongo.db.mailbox_items.find().to_list()}
    assert set(items) == {parent["_id"], reply["_id"], other["_id"]}  # each once
    trip = items[parent["_id"]]["thread_id"]
    assert items[reply["_id"]]["thread_id"] == trip
    refs = {r["rfc822_id"]: r["thread_id"] for r in await mongo.db.thread_refs.find().to_list()}
    assert refs == {"<p@x>": trip, "<r@x>": trip, "<o@x>": items[other["_id"]]["thread_id"]}
    thread = await mongo.db.threads.find_one({"_id": trip})
    assert thread is not None and thread["message_count"] == 2
