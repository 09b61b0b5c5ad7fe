"""The event log over delivery_events (SecantusDB): complete, ordered, repeatable pages."""

from __future__ import annotations

import asyncio
import os
import random
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.viewer import Viewer
from app.services.events.buckets import OWN, bucket_docs, expand_all
from app.services.events.log import EventLog


def _id_at(at: datetime, n: int) -> ObjectId:
    return ObjectId(int(at.timestamp()).to_bytes(4, "big") + os.urandom(5) + n.to_bytes(3, "big"))


async def _seed(mongo: Mongo, user: ObjectId) -> list[ObjectId]:
    """Events spread like real traffic: sparse over 20 days, a dense burst, other users and
    non-log types mixed in."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    docs = []
    moments = [now - timedelta(days=20 * rng.random()) for _ in range(300)]
    moments += [now - timedelta(minutes=5)] * 700  # one second with 700 events
    for n, at in enumerate(moments):
        docs.append(
            {
                "_id": _id_at(at, n),
                "sender_user_id": user if n % 10 else ObjectId(),  # every 10th: someone else
                "event_type": "paused"
                if n % 97 == 0
                else rng.choice(["queued", "sent", "bounced"]),
                "occurred_at": at,
                "message_id": ObjectId(),
                "recipient": f"r{n}@x.test",
                "metadata": {},
            }
        )
    await mongo.db.delivery_events.insert_many(docs)
    return sorted(
        d["_id"]
        for d in docs
        if d["sender_user_id"] == user and d["event_type"] in ("queued", "sent", "bounced")
    )


async def _pages(log: EventLog, viewer: Viewer, first: int, types=None) -> list[ObjectId]:  # type: ignore[no-untyped-def]
    out: list[ObjectId] = []
    after = None
    while True:
        docs, more = await log.page(viewer, types, after, first)
        out += [d["_id"] for d in docs]
        if not more:
            return out
        after = str(docs[-1]["_id"])


async def test_paging_returns_every_event_of_the_user_once_in_id_order(mongo):
    user = ObjectId()
    expected = await _seed(mongo, user)
    log = EventLog(mongo, settle_seconds=0, retention_days=30)
    viewer = Viewer(user, "a@x.test")
    for first in (7, 500):
        assert await _pages(log, viewer, first) == expected
    bounced = await _pages(log, viewer, 50, ["bounced"])
    ids = {
        d["_id"] for d in await mongo.db.delivery_events.find({"event_type": "bounced"}).to_list()
    }
    assert bounced == [i for i in expected if i in ids]
    # a replay from any cursor is the tail, and the same every time
    middle = expected[len(expected) // 2]
    docs, _ = await log.page(viewer, None, str(middle), 500)
    assert [d["_id"] for d in docs] == expected[len(expected) // 2 + 1 :][:500]
    again, _ = await log.page(viewer, None, str(middle), 500)
    assert [d["_id"] for d in again] == [d["_id"] for d in docs]


async def test_events_younger_than_the_settle_window_are_not_shown_yet(mongo):
    user = ObjectId()
    await mongo.db.delivery_events.insert_one(
        {
            "_id": ObjectId(),
            "sender_user_id": user,
            "event_type": "sent",
            "occurred_at": datetime.now(UTC),
            "metadata": {},
        }
    )
    viewer = Viewer(user, "a@x.test")
    settling = EventLog(mongo, settle_seconds=60, retention_days=30)
    assert (await settling.page(viewer, None, None, 10))[0] == []
    settled = EventLog(mongo, settle_seconds=0, retention_days=30)
    # ObjectId time has whole seconds: an id of this second is readable from the next one
    for _ in range(100):
        docs, _ = await settled.page(viewer, None, None, 10)
        if docs:
            break
        await asyncio.sleep(0.05)
    assert [d["event_type"] for d in docs] == ["sent"]


async def test_events_older_than_the_retention_are_deleted(mongo):
    user = ObjectId()
    now = datetime.now(UTC)
    for days in (31, 29):
        at = now - timedelta(days=days)
        await mongo.db.delivery_events.insert_one(
            {
                "_id": _id_at(at, days),
                "sender_user_id": user,
                "event_type": "sent",
                "occurred_at": at,
                "metadata": {},
            }
        )
    log = EventLog(mongo, settle_seconds=0, retention_days=30)
    assert await log.expire() == 1
    left = await mongo.db.delivery_events.find({}).to_list()
    assert [(now - d["occurred_at"]).days for d in left] == [29]


async def test_buckets_read_as_their_events_and_a_cursor_may_point_into_one(mongo):
    """A campaign batch's events in one document each (events/buckets.py) page exactly like
    the same events one by one: in id order, each once, from any cursor, also one inside a
    bucket."""
    user = ObjectId()
    expected = await _seed(mongo, user)
    now = datetime.now(UTC)
    buckets = []
    for k, (minutes, n) in enumerate(((30, 400), (5, 300), (1, 2))):
        at = now - timedelta(minutes=minutes)
        events = [
            {
                "message_id": ObjectId(),
                "recipient": f"b{k}-{i}@x.test",
                "recipient_id": None,
                "event_type": "queued",
                "occurred_at": at,
                "sender_user_id": user,
                "sender_domain": "x.test",
                "campaign_id": ObjectId(),
                "metadata": {},
            }
            for i in range(n)
        ]
        made = bucket_docs(events, at)
        buckets += made
        expected += [e["_id"] for e in expand_all(made)]
    assert [d["count"] for d in buckets] == [400, 300, 2]
    await mongo.db.delivery_events.insert_many(buckets)
    expected.sort()
    log = EventLog(mongo, settle_seconds=0, retention_days=30)
    viewer = Viewer(user, "a@x.test")
    for first in (7, 150, 500):  # pages that end inside a bucket, and pages that hold several
        assert await _pages(log, viewer, first) == expected
    singles = await mongo.db.delivery_events.find(
        {"sender_user_id": user, "event_type": "queued", "events": None}
    ).to_list()
    everyone = [d["_id"] for d in singles] + [e["_id"] for e in expand_all(buckets)]
    assert await _pages(log, viewer, 64, ["queued"]) == sorted(everyone)
    # from a cursor inside a bucket: the rest of that bucket, then what follows it
    inside = buckets[0]["events"][123]["_id"]
    docs, _ = await log.page(viewer, None, str(inside), 500)
    tail = expected[expected.index(inside) + 1 :][:500]
    assert [d["_id"] for d in docs] == tail
    assert docs[0]["recipient"] == "b0-124@x.test" and docs[0]["event_type"] == "queued"


def _sent(user: ObjectId, at: datetime, n: int) -> list[dict]:
    return [
        {
            "message_id": ObjectId(),
            "recipient": f"r{i}@x.test",
            "event_type": "sent",
            "occurred_at": at,
            "sender_user_id": user,
            "metadata": {},
        }
        for i in range(n)
    ]


async def test_the_bucket_a_cursor_points_into_is_one_key_of_the_id_index(commands, mongo):
    """A page after a cursor first looks for the bucket holding it (``_rest_of_bucket``): its
    ``_id`` is the cursor with the last three bytes zeroed (events/buckets.py), an equality on
    the ``_id`` index, where SecantusDB answers a range of ``_id`` with a scan."""
    user, at = ObjectId(), datetime.now(UTC) - timedelta(minutes=1)
    [bucket] = bucket_docs(_sent(user, at, 5), at)
    ids = [e["_id"] for e in expand_all([bucket])]
    await mongo.db.delivery_events.insert_one(bucket)
    log = EventLog(mongo, settle_seconds=0, retention_days=30)
    commands.clear()
    docs, _ = await log.page(Viewer(user, "a@x.test"), None, str(ids[1]), 10)
    assert [d["_id"] for d in docs] == ids[2:]
    lookup = {"_id": bucket["_id"]}
    assert lookup in commands.finds("delivery_events")
    assert not [f for f in commands.finds("delivery_events") if "event_ids" in f]  # found
    plan = (await mongo.db.command("explain", {"find": "delivery_events", "filter": lookup}))[
        "queryPlanner"
    ]["winningPlan"]
    assert "COLLSCAN" not in str(plan), plan


async def test_a_bucket_written_before_its_ids_were_made_for_it_is_found_on_its_index(
    commands, mongo
):
    """A bucket of a run of the process's ObjectIds, with ``event_ids`` (written before
    2026-12-07): found on that field's sparse index. The query names that field alone and no
    hint: SecantusDB scans with a hint or another field beside it (≈ 190 ms at 20,000 events)."""
    user, at = ObjectId(), datetime.now(UTC) - timedelta(minutes=1)
    process = os.urandom(5)
    ids = [
        ObjectId(int(at.timestamp()).to_bytes(4, "big") + process + c.to_bytes(3, "big"))
        for c in range(7, 12)
    ]
    events = _sent(user, at, 5)
    old = {
        "_id": ids[0],
        "last_id": ids[-1],
        "event_type": "sent",
        "occurred_at": at,
        "sender_user_id": user,
        "count": 5,
        "message_id": [e["message_id"] for e in events],
        "event_ids": ids,
        "events": [
            {"_id": i, **{k: e[k] for k in OWN if k in e}} for i, e in zip(ids, events, strict=True)
        ],
    }
    await mongo.db.delivery_events.insert_one(old)
    log = EventLog(mongo, settle_seconds=0, retention_days=30)
    commands.clear()
    docs, _ = await log.page(Viewer(user, "a@x.test"), None, str(ids[1]), 10)
    assert [d["_id"] for d in docs] == ids[2:]
    [lookup] = [f for f in commands.finds("delivery_events") if "event_ids" in f]
    assert lookup == {"event_ids": ids[1]}
    plan = (await mongo.db.command("explain", {"find": "delivery_events", "filter": lookup}))[
        "queryPlanner"
    ]["winningPlan"]
    assert plan["inputStage"]["stage"] == "IXSCAN", plan
    assert plan["inputStage"]["keyPattern"] == {"event_ids": 1}
