"""Folder pages are exact whatever the arrival pattern: bursts, gaps of years, timestamp ties."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from app.config import Settings
from app.domain.viewer import Viewer
from app.services.mailbox.queries import MailboxService
from tests.support.commands import CommandLog


def inbox_item(user: ObjectId, received_at: datetime) -> dict:
    """A received Inbox view, as filing writes it (the fields the listing reads)."""
    return {
        "_id": ObjectId(),
        "user_id": user,
        "message_id": ObjectId(),
        "role": "received",
        "folder": "INBOX",
        "labels": [],
        "read": False,
        "received_at": received_at,
        "thread_id": ObjectId(),
    }


@pytest.mark.parametrize("first_at_known", [True, False])
async def test_paging_returns_every_item_once_in_order(mongo, first_at_known):
    rng = random.Random(7)
    user = ObjectId()
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = (
        [now - timedelta(milliseconds=rng.randrange(1000)) for _ in range(80)]  # a burst
        + [now - timedelta(days=rng.randrange(1, 3000)) for _ in range(60)]  # years of gaps
        + [now - timedelta(hours=5)] * 45  # one timestamp, many items (ties)
        + [now + timedelta(days=2)]
    )  # clock skew: dated in the future
    docs = [inbox_item(user, at) for at in stamps]
    await mongo.db.mailbox_items.insert_many(docs)
    counter = {
        "user_id": user,
        "kind": "folder",
        "name": "INBOX",
        "total": len(docs),
        "unread": len(docs),
    }
    if first_at_known:
        counter["first_at"] = min(stamps)
    await mongo.db.mailbox_counters.insert_one(counter)
    service = MailboxService(mongo, Settings(secret_key="k" * 32, _env_file=None))
    viewer = Viewer(user, "me@example.test")
    expected = [
        d["_id"] for d in sorted(docs, key=lambda d: (d["received_at"], d["_id"]), reverse=True)
    ]
    for size in (1, 7, 50, 100):
        seen, after = [], None
        while True:
            page = await service.list_items(viewer, folder="INBOX", first=size, after=after)
            seen += [d["_id"] for d in page.nodes]
            if not page.has_next:
                break
            after = page.end_cursor
        assert seen == expected, size


async def test_an_empty_folder_answers_without_scanning(mongo):
    service = MailboxService(mongo, Settings(secret_key="k" * 32, _env_file=None))
    page = await service.list_items(Viewer(ObjectId(), "x@example.test"), folder="INBOX")
    assert page.nodes == [] and not page.has_next


async def test_thread_pages_are_exact_too(mongo):
    rng = random.Random(11)
    user = ObjectId()
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = [now - timedelta(seconds=rng.randrange(10**8)) for _ in range(120)] + [now] * 30
    docs = [
        {
            "_id": ObjectId(),
            "user_id": user,
            "folders": ["INBOX"],
            "labels": [],
            "latest_at": at,
            "subject": "t",
            "message_count": 1,
            "unread_count": 0,
        }
        for at in stamps
    ]
    await mongo.db.threads.insert_many(docs)
    await mongo.db.mailbox_counters.insert_one(
        {
            "user_id": user,
            "kind": "folder",
            "name": "INBOX",
            "total": len(docs),
            "unread": 0,
            "first_at": min(stamps),
        }
    )
    service = MailboxService(mongo, Settings(secret_key="k" * 32, _env_file=None))
    viewer = Viewer(user, "me@example.test")
    expected = [
        d["_id"] for d in sorted(docs, key=lambda d: (d["latest_at"], d["_id"]), reverse=True)
    ]
    for size in (3, 50):
        seen, after = [], None
        while True:
            page = await service.list_threads(viewer, folder="INBOX", first=size, after=after)
            seen += [d["_id"] for d in page.nodes]
            if not page.has_next:
                break
            after = page.end_cursor
        assert seen == expected, size


async def test_a_first_page_of_old_mail_needs_one_query_once_learned(settings, mongo):
    """The learned window is measured from now: a mailbox whose newest mail is a month old
    does not widen its window on every first page."""
    from app.adapters.mongo import Mongo

    finds = CommandLog()
    watched = Mongo.open(settings.mongodb_uri, settings.mongodb_database, event_listeners=[finds])
    try:
        user = ObjectId()
        newest = datetime.now(UTC) - timedelta(days=30)
        docs = [inbox_item(user, newest - timedelta(seconds=i)) for i in range(300)]
        await mongo.db.mailbox_items.insert_many(docs)
        await mongo.db.mailbox_counters.insert_one(
            {
                "user_id": user,
                "kind": "folder",
                "name": "INBOX",
                "total": 300,
                "unread": 300,
                "first_at": newest - timedelta(seconds=299),
                "page_span": 50.0,  # what a first page's own span would teach
            }
        )
        service = MailboxService(watched, Settings(secret_key="k" * 32, _env_file=None))
        viewer = Viewer(user, "me@example.test")
        first = await service.list_items(viewer, folder="INBOX", first=50)
        assert [d["_id"] for d in first.nodes] == [d["_id"] for d in docs[:50]]
        # the 100 s window missed a month-old page and widened
        assert len(finds.finds("mailbox_items")) > 1
        finds.clear()
        again = await service.list_items(viewer, folder="INBOX", first=50)
        assert [d["_id"] for d in again.nodes] == [d["_id"] for d in docs[:50]]
        assert len(finds.finds("mailbox_items")) == 1
    finally:
        await watched.close()
