"""The thread context of a batch, against the real database: two queries for any number of
users and subjects, the same candidates as one query per (user, subject), and the start-up
migration that gives data of the earlier layout the keys those two queries use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction
from app.domain.filing_plan import SUBJECT_CANDIDATES, Filing, ViewSpec
from app.services.mailbox.filing import file_messages, load_thread_context
from app.services.mailbox.migrations import migrate
from tests.support.commands import CommandLog
from tests.support.threads import message

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def filing(user: ObjectId, msg: dict, at: datetime = NOW) -> Filing:
    return Filing(msg, [ViewSpec(user, "received", "INBOX")], at)


async def file(mongo: Mongo, filings: list[Filing]):
    users = {view.user_id for f in filings for view in f.views}
    for user in users:
        await mongo.db.users.update_one(
            {"_id": user}, {"$setOnInsert": {"email": f"{user}@x.test", "state": 0}}, upsert=True
        )

    async def work(session):
        await mongo.db.messages.insert_many([dict(f.message) for f in filings], session=session)
        return await file_messages(mongo.db, filings, session)

    return await in_transaction(mongo, work)


@pytest.fixture
async def listened(mongo, settings):
    log = CommandLog()
    client = Mongo.open(settings.mongodb_uri, settings.mongodb_database, event_listeners=[log])
    yield client, log
    await client.close()


async def test_a_batch_of_many_users_reads_its_context_in_two_queries(mongo, listened):
    client, log = listened
    users = [ObjectId() for _ in range(6)]
    earlier = await file(
        mongo,
        [
            filing(u, message(f"<p{n}@x>", "Budget"), NOW - timedelta(hours=1))
            for n, u in enumerate(users)
        ],
    )
    threads = {item["user_id"]: item["thread_id"] for item in earlier.all_items}
    batch = []
    for n, user in enumerate(users):
        batch.append(
            filing(
                user,
                message(
                    f"<r{n}@x>", "Re: Budget", in_reply_to=f"<p{n}@x>", references=[f"<p{n}@x>"]
                ),
            )
        )
        batch.append(filing(user, message(f"<s{n}@x>", "Budget")))  # no refs: by subject
    log.clear()
    context = await load_thread_context(client.db, batch, None, parallel=2)
    assert sorted(c.collection for c in log.commands if c.name == "find") == [
        "thread_refs",
        "threads",
    ]
    for n, user in enumerate(users):
        assert context.refs[(user, f"<p{n}@x>")] == threads[user]
        [candidate] = context.by_subject[(user, "budget")]
        assert candidate.thread_id == threads[user]  # each user's own thread, nobody else's
        assert context.subjects[threads[user]] == "budget"
    plan = await file(mongo, batch)
    assert {item["thread_id"] for item in plan.all_items} == set(threads.values())


async def test_a_full_subject_query_asks_the_short_keys_on_their_own(mongo, listened):
    """Capped at 6 threads, newest first: the busy subject (eight threads: no two share a
    person) fills the answer, so the quiet one (an older thread) is asked by itself, and both
    get what one query each would give."""
    client, log = listened
    user = ObjectId()
    busy = [
        filing(
            user,
            message(f"<b{n}@x>", "Hello", sender=f"s{n}@x.test", to=f"t{n}@x.test"),
            NOW - timedelta(days=n),
        )
        for n in range(8)
    ]
    quiet = [filing(user, message("<q@x>", "Quiet", sender="q@x.test"), NOW - timedelta(days=20))]
    old = [
        filing(
            user,
            message("<o@x>", "Hello", sender="o@x.test", to="o@x.test"),
            NOW - timedelta(days=90),
        )
    ]
    await file(mongo, busy + quiet + old)
    asked = [filing(user, message("<n1@x>", "Hello")), filing(user, message("<n2@x>", "Quiet"))]
    log.clear()
    capped = await load_thread_context(client.db, asked, None, cap=6)
    subject_finds = log.finds("threads")
    assert len(subject_finds) == 2 and subject_finds[1] == {"subject_key": f"{user}:quiet"}
    roomy = await load_thread_context(client.db, asked, None)
    for key in ((user, "hello"), (user, "quiet")):
        assert [c.thread_id for c in capped.by_subject[key]][:SUBJECT_CANDIDATES] == [
            c.thread_id for c in roomy.by_subject[key]
        ][:SUBJECT_CANDIDATES]
    assert len(roomy.by_subject[(user, "hello")]) == 8  # the 90-day-old thread is not one
    assert len(capped.by_subject[(user, "quiet")]) == 1


async def test_start_up_gives_the_earlier_layout_its_keys_once(mongo):
    """Refs with an ObjectId _id and threads without subject_key (what the earlier version
    wrote) are rewritten by the migration; mail filed afterwards joins those threads by
    reference and by subject; a second start-up does not look again."""
    user = ObjectId()
    await file(mongo, [filing(user, message("<p@x>", "Budget"), NOW - timedelta(hours=2))])
    thread = await mongo.db.threads.find_one({"user_id": user})
    # back to the earlier layout
    [ref] = await mongo.db.thread_refs.find({"user_id": user}).to_list()
    await mongo.db.thread_refs.delete_one({"_id": ref["_id"]})
    await mongo.db.thread_refs.insert_one({**ref, "_id": ObjectId()})
    await mongo.db.threads.update_one({"_id": thread["_id"]}, {"$unset": {"subject_key": ""}})

    await migrate(mongo.db)

    [ref] = await mongo.db.thread_refs.find({"user_id": user}).to_list()
    assert ref["_id"] == f"{user}:<p@x>" and ref["thread_id"] == thread["_id"]
    thread = await mongo.db.threads.find_one({"_id": thread["_id"]})
    assert thread["subject_key"] == f"{user}:budget"
    assert await mongo.db.schema_migrations.find_one({"_id": "thread-keys"})
    plan = await file(
        mongo,
        [
            filing(user, message("<r@x>", "Re: Budget", in_reply_to="<p@x>", references=["<p@x>"])),
            filing(user, message("<s@x>", "Budget")),
        ],
    )
    assert {item["thread_id"] for item in plan.all_items} == {thread["_id"]}

    stray = {"_id": ObjectId(), "user_id": user, "rfc822_id": "<z@x>", "thread_id": ObjectId()}
    await mongo.db.thread_refs.insert_one(stray)
    await migrate(mongo.db)  # marked done: nothing is read again
    assert await mongo.db.thread_refs.find_one({"_id": stray["_id"]}) == stray
