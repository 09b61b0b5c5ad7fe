"""The reputation window and the event retention count events by when they were recorded (an
``_id`` range of the (sender, _id) and _id indexes), not by the ``occurred_at`` they report:
no index of their own on ``occurred_at``, which every event written used to pay for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId

from app.adapters.indexes import ensure_indexes
from app.services.events.buckets import bucket_docs
from app.services.events.log import EventLog
from app.services.feedback.reputation import ReputationService


def _event(user: ObjectId, kind: str, recorded: datetime, occurred: datetime) -> dict[str, object]:
    return {
        "_id": ObjectId.from_datetime(recorded),  # what an insert at ``recorded`` would make
        "sender_user_id": user,
        "sender_domain": "news.test",
        "event_type": kind,
        "occurred_at": occurred,
        "metadata": {"hard": True},
    }


async def test_the_window_counts_events_recorded_in_it_whatever_they_report(mongo, settings):
    await ensure_indexes(mongo.db)
    user, now = ObjectId(), datetime.now(UTC)
    window = timedelta(days=settings.reputation_window_days)
    await mongo.db.delivery_events.insert_many(
        [
            _event(user, "queued", now - timedelta(hours=1), now - timedelta(hours=1)),
            _event(user, "queued", now - window - timedelta(hours=1), now - window),  # before
            # a bounce reported today for a delivery long ago counts today
            _event(user, "bounced", now - timedelta(minutes=5), now - window - timedelta(days=3)),
        ]
    )
    reputation = ReputationService(mongo, settings)
    for counts in (
        await reputation.counts(user_id=user, now=now),
        await reputation.counts(domain="news.test", now=now),
    ):
        assert (counts.sent, counts.hard_bounces) == (1, 1), counts

    names = {i["name"] for i in await (await mongo.db.delivery_events.list_indexes()).to_list()}
    assert not {n for n in names if "occurred_at" in n} - {
        "message_id_1_event_type_1_occurred_at_1"  # deliveryEvents and tracking, by message
    }
    assert {"sender_user_id_1__id_1", "sender_domain_1__id_1"} <= names


async def test_retention_deletes_by_when_an_event_was_recorded(mongo):
    user, now = ObjectId(), datetime.now(UTC)
    await mongo.db.delivery_events.insert_many(
        [
            _event(user, "sent", now - timedelta(days=31), now - timedelta(days=31)),
            _event(user, "bounced", now - timedelta(days=1), now - timedelta(days=40)),
        ]
    )
    assert await EventLog(mongo, settle_seconds=0, retention_days=30).expire() == 1
    left = await mongo.db.delivery_events.find({}).to_list()
    assert [d["event_type"] for d in left] == ["bounced"]  # reported late, kept 30 days from then


async def test_a_bucket_of_queued_events_counts_as_the_events_it_holds(mongo, settings):
    """A campaign batch records its ``queued`` events in one document (events/buckets.py)."""
    await ensure_indexes(mongo.db)
    user, now = ObjectId(), datetime.now(UTC)
    queued = [_event(user, "queued", now, now) | {"message_id": ObjectId()} for _ in range(40)]
    bounced = _event(user, "bounced", now - timedelta(minutes=5), now)
    bucket = bucket_docs(queued, now - timedelta(hours=1))
    await mongo.db.delivery_events.insert_many([*bucket, bounced])
    assert await mongo.db.delivery_events.count_documents({}) == 2
    counts = await ReputationService(mongo, settings).counts(user_id=user, now=now)
    assert (counts.sent, counts.hard_bounces) == (40, 1), counts
