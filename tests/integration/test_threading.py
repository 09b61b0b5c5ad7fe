"""Threading against the real database: header-first, subject fallback, parent after reply."""

from datetime import UTC, datetime, timedelta

from bson import ObjectId

from app.adapters.mongo import in_transaction
from app.services.mailbox.filing import ViewSpec, file_message, refresh_threads
from tests.support.threads import message

USER = ObjectId()


async def deliver(mongo, msg, at=None):
    await mongo.db.users.update_one(
        {"_id": USER}, {"$setOnInsert": {"email": "me@example.test", "state": 0}}, upsert=True
    )

    async def work(session):
        await mongo.db.messages.insert_one(msg, session=session)
        items, _ = await file_message(
            mongo.db,
            msg,
            [ViewSpec(USER, "received", "INBOX")],
            received_at=at or datetime.now(UTC),
            session=session,
        )
        return items[0]

    return await in_transaction(mongo, work)


async def test_reply_joins_its_parent_by_headers(mongo):
    parent = await deliver(mongo, message("<p@x>", "Budget"))
    reply = await deliver(
        mongo, message("<r@x>", "Re: Budget", in_reply_to="<p@x>", references=["<p@x>"])
    )
    assert reply["thread_id"] == parent["thread_id"]
    thread = await mongo.db.threads.find_one({"_id": parent["thread_id"]})
    assert thread["message_count"] == 2 and thread["unread_count"] == 2


async def test_reply_that_arrives_before_its_parent_is_joined_when_the_parent_arrives(mongo):
    reply = await deliver(
        mongo, message("<r2@x>", "Re: Trip", in_reply_to="<p2@x>", references=["<p2@x>"])
    )
    parent = await deliver(mongo, message("<p2@x>", "Trip"))
    assert parent["thread_id"] == reply["thread_id"]


async def test_a_reply_with_a_changed_subject_starts_a_new_conversation(mongo):
    parent = await deliver(mongo, message("<p3@x>", "Budget"))
    other = await deliver(
        mongo, message("<r3@x>", "Completely different topic", in_reply_to="<p3@x>")
    )
    assert other["thread_id"] != parent["thread_id"]


async def test_subject_only_grouping_needs_missing_headers_and_shared_participants(mongo):
    first = await deliver(mongo, message("<a@x>", "Weekly report"))
    same_people = await deliver(mongo, message("<b@x>", "RE: Weekly report"))
    strangers = await deliver(
        mongo, message("<c@x>", "Weekly report", sender="zed@else.test", to="other@else.test")
    )
    assert same_people["thread_id"] == first["thread_id"]
    assert strangers["thread_id"] != first["thread_id"]


async def test_subject_match_is_not_used_for_old_conversations(mongo):
    old = await deliver(
        mongo, message("<o@x>", "Hello"), at=datetime.now(UTC) - timedelta(days=400)
    )
    new = await deliver(mongo, message("<n@x>", "Hello"))
    assert new["thread_id"] != old["thread_id"]


async def test_a_reply_to_a_conversation_the_user_deleted_brings_the_thread_back(mongo):
    parent = await deliver(mongo, message("<d1@x>", "Deleted talk"))

    async def delete_conversation(session):
        await mongo.db.mailbox_items.delete_one({"_id": parent["_id"]}, session=session)
        await refresh_threads(mongo.db, {(USER, parent["thread_id"])}, session)

    await in_transaction(mongo, delete_conversation)
    assert await mongo.db.threads.find_one({"_id": parent["thread_id"]}) is None

    reply = await deliver(mongo, message("<d2@x>", "Re: Deleted talk", in_reply_to="<d1@x>"))
    thread = await mongo.db.threads.find_one({"_id": reply["thread_id"]})
    assert thread is not None and thread["user_id"] == USER
    assert thread["message_count"] == 1 and thread["normalized_subject"] == "deleted talk"
