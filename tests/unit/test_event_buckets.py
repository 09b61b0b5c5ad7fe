"""Events in buckets (app/services/events/buckets.py): their ids, and events in and out."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from app.services.events.buckets import (
    MAX_EVENTS,
    bucket_docs,
    bucket_of,
    expand_all,
    in_buckets,
    message_events,
    message_key,
)

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


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


def test_a_bucket_s_ids_are_made_for_it_and_events_come_back_as_they_went_in() -> None:
    events = [event(n) for n in range(500)]
    [bucket] = bucket_docs(events, NOW)
    back = expand_all([bucket])
    ids = [e["_id"] for e in back]
    # the bucket's _id: the time, five random bytes, three zero bytes; event i's id: that + i
    assert bucket["_id"].binary[9:] == bytes(3) and bucket["_id"].generation_time == NOW
    assert [
        int.from_bytes(i.binary, "big") - int.from_bytes(ids[0].binary, "big") for i in ids
    ] == list(range(500))
    assert ids[0] == bucket["_id"] and bucket["last_id"] == ids[-1] and bucket["count"] == 500
    assert {bucket_of(i) for i in ids} == {bucket["_id"]}
    assert [{k: v for k, v in e.items() if k != "_id"} for e in back] == events


def test_no_other_id_sorts_between_a_bucket_s_first_and_last() -> None:
    """So a bucket's _id orders it among the log's documents as its events would be ordered
    (events/log.py reads in id windows), however many are made in the same second."""
    buckets = [bucket_docs([event(n) for n in range(50)], NOW)[0] for _ in range(20)]
    others = [ObjectId.from_datetime(NOW), ObjectId(), *(ObjectId() for _ in range(50))]
    spans = [(b["_id"], b["last_id"]) for b in buckets]
    for first, last in spans:
        assert not [o for o in others if first <= o <= last]
        assert [s for s in spans if first <= s[0] <= last] == [(first, last)]


def test_queued_buckets_list_message_keys_and_sent_ones_their_message_ids() -> None:
    queued = [event(n) for n in range(300)]
    [bucket] = bucket_docs(queued)
    # the messages of a batch (ids made by one process within a second): a key or two
    assert bucket["message_keys"] == list(
        dict.fromkeys(message_key(e["message_id"]) for e in queued)
    )
    assert 1 <= len(bucket["message_keys"]) <= 2 and "message_id" not in bucket
    assert all(len(k) == 9 for k in bucket["message_keys"])
    sent = [event(n) | {"event_type": "sent"} for n in range(3)]
    [bucket] = bucket_docs(sent)
    assert bucket["message_id"] == [e["message_id"] for e in sent] and "message_keys" not in bucket
    wanted = queued[123]["message_id"]
    assert [e["recipient"] for e in message_events(bucket_docs(queued), wanted)] == ["r123@d.test"]
    assert message_key("not-an-object-id") == "not-an-object-id"


def test_a_bucket_holds_at_most_max_events_and_a_lone_event_is_itself() -> None:
    docs = bucket_docs([event(n) for n in range(MAX_EVENTS + 5)])
    assert [d["count"] for d in docs] == [MAX_EVENTS, 5]
    assert len({d["_id"] for d in docs}) == 2
    [alone] = bucket_docs([event(0)], NOW)
    assert "events" not in alone and alone["recipient"] == "r0@d.test"
    assert alone["_id"].generation_time == NOW
    # lone events made at the same time are documents with ids of their own
    [again] = bucket_docs([event(1)], NOW)
    assert again["_id"] != alone["_id"] and again["_id"].generation_time == NOW


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


def test_values_equal_across_types_do_not_share_a_bucket() -> None:
    """1, 1.0 and True are equal in Python and different in BSON: each comes back as it went."""
    events = [event(n) | {"attempt": v} for n, v in enumerate([1, 1, True, True, 1.0, 1.0])]
    events += [event(n) | {"attempt": [1]} for n in range(6, 8)]  # not hashable: by repr
    back = {e["recipient"]: e["attempt"] for e in expand_all(in_buckets(events))}
    assert [type(back[e["recipient"]]) for e in events] == [
        int,
        int,
        bool,
        bool,
        float,
        float,
        list,
        list,
    ]


def test_an_id_block_gives_back_its_block_and_place() -> None:
    from app.domain.ids import block_id, block_of, in_block

    block = block_id(NOW)
    assert block.binary[9:] == bytes(3) and block.generation_time == NOW
    assert [block_of(in_block(block, i)) for i in (0, 1, 499, 999)] == [
        (block, i) for i in (0, 1, 499, 999)
    ]
