"""Events in buckets (app/services/events/buckets.py): runs of ids, and events in and out."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from bson import ObjectId

from app.services.events.buckets import (
    MAX_EVENTS,
    bucket_docs,
    expand_all,
    in_buckets,
    runs,
)

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def oid(second: int, process: bytes, counter: int) -> ObjectId:
    return ObjectId(second.to_bytes(4, "big") + process + counter.to_bytes(3, "big"))


def event(n: int) -> dict:
    m = ObjectId()
    return {
        "message_id": m,
        "recipient": f"r{n}@d.test",
        "recipient_id": m,
        "event_type": "queued",
        "occurred_at": NOW,
        "sender_user_id": "u",
        "sender_domain": "client.test",
        "campaign_id": "c",
        "metadata": {},
    }


def test_new_ids_make_one_run_and_events_come_back_as_they_went_in() -> None:
    events = [event(n) for n in range(500)]
    docs = bucket_docs(events)
    # ids made one after another by one process: one run, unless the second turned meanwhile
    assert len(docs) in (1, 2)
    back = expand_all(docs)
    assert [e["_id"] for e in back] == sorted(e["_id"] for e in back)
    assert [{k: v for k, v in e.items() if k != "_id"} for e in back] == events
    assert sum(d.get("count", 1) for d in docs) == 500
    bucket = docs[0]
    assert bucket["_id"] == back[0]["_id"] and bucket["last_id"] == back[bucket["count"] - 1]["_id"]
    assert bucket["message_id"] == [e["message_id"] for e in events[: bucket["count"]]]


def test_runs_end_where_the_second_the_process_or_the_count_changes() -> None:
    me, other = os.urandom(5), os.urandom(5)
    ids = [
        oid(100, me, 7),
        oid(100, me, 8),
        oid(100, me, 9),
        oid(100, me, 11),  # a counter skipped: another id of this process could lie between
        oid(100, me, 12),
        oid(101, me, 13),  # the next second
        oid(101, other, 14),  # another process
        oid(101, other, 0xFFFFFF),
        oid(101, other, 0),  # the counter wrapped
    ]
    assert runs(ids) == [ids[0:3], ids[3:5], [ids[5]], [ids[6]], [ids[7]], [ids[8]]]
    docs = bucket_docs([event(n) for n in range(len(ids))], ids)
    # a run of one is a plain event
    assert ["events" in d for d in docs] == [True, True, False, False, False, False]
    assert [e["_id"] for e in expand_all(docs)] == ids


def test_a_run_holds_at_most_max_events() -> None:
    me = os.urandom(5)
    ids = [oid(100, me, c) for c in range(MAX_EVENTS + 5)]
    assert [len(r) for r in runs(ids)] == [MAX_EVENTS, 5]


def test_events_are_bucketed_by_kind_and_by_what_they_share() -> None:
    queued = [event(n) for n in range(6)]
    other_campaign = [event(n) | {"campaign_id": "d"} for n in range(6, 9)]
    bounced = [event(n) | {"event_type": "bounced"} for n in range(9, 11)]
    docs = in_buckets(queued + other_campaign + bounced, kinds=["queued"])
    # two bounces alone, a bucket of each campaign's queued events (a second may turn inside one)
    assert [d["event_type"] for d in docs[:2]] == ["bounced", "bounced"]
    assert all("events" not in d for d in docs[:2])
    back = expand_all(docs[2:])
    assert [e["recipient"] for e in back] == [e["recipient"] for e in queued + other_campaign]
    assert {d["campaign_id"] for d in docs[2:]} == {"c", "d"}
    everything = in_buckets(bounced)  # every kind when none is named
    assert len(expand_all(everything)) == 2 and len(everything) in (1, 2)


def test_events_alike_but_for_a_field_are_not_bucketed_together() -> None:
    """Every field but an event's own (``OWN``) must match: one nobody thought of too, so a
    field added to events later is never lost in a bucket."""
    plain = [event(n) for n in range(3)]
    flagged = [event(n) | {"machine": True} for n in range(3, 6)]
    named = [event(6) | {"_id": ObjectId()}, event(7) | {"count": 2}]  # a bucket's own fields
    docs = in_buckets(plain + flagged + named)
    assert [d.get("machine") for d in expand_all(docs)].count(True) == 3
    singles = [d for d in docs if "events" not in d]
    assert named[0] in singles and named[1] in singles
    by_recipient = {e["recipient"]: e for e in expand_all(docs)}
    assert all(by_recipient[e["recipient"]].get("machine") for e in flagged)
    assert not any(by_recipient[e["recipient"]].get("machine") for e in plain)


def test_an_event_comes_back_without_the_fields_it_did_not_have() -> None:
    bare = [{k: v for k, v in event(n).items() if k != "metadata"} for n in range(3)]
    back = expand_all(bucket_docs(bare))
    assert [{k: v for k, v in e.items() if k != "_id"} for e in back] == bare
