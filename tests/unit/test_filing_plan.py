"""The filing planner on plain data: which views, threads, refs, counters and changes it plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.domain.filing_plan import (
    CounterMove,
    Filing,
    ThreadCandidate,
    ThreadContext,
    ThreadRef,
    ViewSpec,
    plan_filing,
    thread_lookups,
)
from tests.support.threads import message as stored_message

ANN = ObjectId()
BEN = ObjectId()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def message(
    mid: str | None,
    subject: str,
    *,
    sender: str = "cat@remote.test",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
) -> dict[str, Any]:
    return stored_message(
        mid,
        subject,
        sender=sender,
        to="ann@example.test",
        in_reply_to=in_reply_to,
        references=references,
    )


def inbox(user: ObjectId = ANN, **kw: Any) -> ViewSpec:
    return ViewSpec(user, "received", "INBOX", **kw)


def filing(msg: dict[str, Any], *views: ViewSpec, at: datetime = NOW) -> Filing:
    return Filing(msg, list(views) or [inbox()], at)


def test_a_reply_joins_the_thread_its_parent_is_in():
    thread = ObjectId()
    context = ThreadContext(refs={(ANN, "<p@x>"): thread}, subjects={thread: "budget"})
    plan = plan_filing(
        [filing(message("<r@x>", "Re: Budget", in_reply_to="<p@x>", references=("<p@x>",)))],
        context,
    )
    [[item]] = plan.items
    assert item["thread_id"] == thread
    assert plan.new_threads == []
    assert plan.refreshed_threads == {(ANN, thread)}  # recounted from all its views
    assert plan.thread_refs == [ThreadRef(ANN, "<r@x>", thread)]  # <p@x> is known already


def test_a_parent_arriving_after_its_reply_joins_the_reply_s_thread_and_recounts_it():
    thread = ObjectId()
    context = ThreadContext(refs={(ANN, "<p@x>"): thread}, subjects={thread: "trip"})
    plan = plan_filing([filing(message("<p@x>", "Trip"))], context)
    assert plan.items[0][0]["thread_id"] == thread
    assert plan.refreshed_threads == {(ANN, thread)}


def test_a_reply_with_another_subject_starts_a_new_conversation():
    thread = ObjectId()
    context = ThreadContext(refs={(ANN, "<p@x>"): thread}, subjects={thread: "budget"})
    plan = plan_filing([filing(message("<r@x>", "Something else", in_reply_to="<p@x>"))], context)
    [new] = plan.new_threads
    assert plan.items[0][0]["thread_id"] == new["_id"] != thread
    assert new["normalized_subject"] == "something else"


def test_another_user_s_refs_are_not_followed():
    thread = ObjectId()
    context = ThreadContext(refs={(BEN, "<p@x>"): thread}, subjects={thread: "budget"})
    plan = plan_filing([filing(message("<r@x>", "Re: Budget", in_reply_to="<p@x>"))], context)
    assert plan.items[0][0]["thread_id"] != thread
    assert [t["user_id"] for t in plan.new_threads] == [ANN]


def test_subject_fallback_needs_no_reference_headers_a_shared_participant_and_a_recent_thread():
    recent, old = ObjectId(), ObjectId()
    context = ThreadContext(
        by_subject={
            (ANN, "weekly report"): [
                ThreadCandidate(recent, NOW - timedelta(days=2), ["eve@remote.test"]),
                ThreadCandidate(old, NOW - timedelta(days=90), ["cat@remote.test"]),
            ]
        },
        subjects={recent: "weekly report", old: "weekly report"},
    )
    same_people = message("<a@x>", "RE: Weekly report", sender="eve@remote.test")
    stranger = message("<b@x>", "Weekly report", sender="zed@remote.test")
    too_old = message("<c@x>", "Weekly report", sender="cat@remote.test")
    with_refs = message("<d@x>", "Weekly report", sender="eve@remote.test", in_reply_to="<q@x>")
    for msg, joins in ((same_people, recent), (stranger, None), (too_old, None), (with_refs, None)):
        plan = plan_filing([filing(msg)], context)  # each on its own, against the same context
        thread_id = plan.items[0][0]["thread_id"]
        if joins is None:
            assert [t["_id"] for t in plan.new_threads] == [thread_id], msg["rfc822_message_id"]
        else:
            assert thread_id == joins and plan.new_threads == []


def test_later_messages_of_a_batch_see_the_threads_earlier_ones_made():
    parent = message("<p@x>", "Plans")
    reply = message("<r@x>", "Re: Plans", in_reply_to="<p@x>", references=("<p@x>",))
    later = message("<s@x>", "Plans", sender="cat@remote.test")  # subject only, same people
    plan = plan_filing(
        [
            filing(parent, at=NOW),
            filing(reply, at=NOW + timedelta(minutes=1)),
            filing(later, at=NOW + timedelta(minutes=2)),
        ],
        ThreadContext(),
    )
    [thread] = plan.new_threads
    assert {items[0]["thread_id"] for items in plan.items} == {thread["_id"]}
    assert thread["message_count"] == 3 and thread["unread_count"] == 3
    assert thread["latest_at"] == NOW + timedelta(minutes=2)
    assert thread["participant_keys"] == ["cat@remote.test", "ann@example.test"]
    assert plan.refreshed_threads == set()  # nothing existed before the batch
    assert [r.rfc822_id for r in plan.thread_refs] == ["<p@x>", "<r@x>", "<s@x>"]


def test_a_thread_a_batch_revived_is_recent_enough_for_subject_fallback_later_in_the_batch():
    stale = ObjectId()
    context = ThreadContext(
        refs={(ANN, "<p@x>"): stale},
        subjects={stale: "offsite"},
        by_subject={
            (ANN, "offsite"): [
                ThreadCandidate(stale, NOW - timedelta(days=100), ["cat@remote.test"])
            ]
        },
    )
    reply = message("<r@x>", "Re: Offsite", in_reply_to="<p@x>", sender="dan@remote.test")
    subject_only = message("<s@x>", "Offsite", sender="dan@remote.test")
    plan = plan_filing([filing(reply), filing(subject_only)], context)
    assert [items[0]["thread_id"] for items in plan.items] == [stale, stale]


def test_counters_move_per_folder_and_label_and_keep_the_oldest_arrival():
    first = message("<a@x>", "One")
    second = message("<b@x>", "Two")
    plan = plan_filing(
        [
            filing(first, inbox(labels=("Work",)), at=NOW),
            filing(second, inbox(read=True), at=NOW - timedelta(hours=1)),
        ],
        ThreadContext(),
    )
    assert plan.counters == {
        (ANN, "folder", "INBOX"): CounterMove(2, 1, NOW - timedelta(hours=1)),
        (ANN, "label", "Work"): CounterMove(1, 1, NOW),
    }


def test_every_view_gets_a_created_change_and_the_view_fields():
    msg = message("<a@x>", "Hello")
    spam = {"verdict": "spam"}
    plan = plan_filing(
        [filing(msg, inbox(), ViewSpec(BEN, "received", "SPAM", dedupe_key="k", spam=spam))],
        ThreadContext(),
    )
    ann_item, ben_item = plan.items[0]
    assert [(c.user_id, c.kind, c.folders, c.item_id) for c in plan.changes] == [
        (ANN, "created", ("INBOX",), ann_item["_id"]),
        (BEN, "created", ("SPAM",), ben_item["_id"]),
    ]
    assert ben_item["spam"] == spam and ben_item["dedupe_key"] == "k"
    assert "spam" not in ann_item and "dedupe_key" not in ann_item
    assert ann_item["thread_id"] != ben_item["thread_id"]  # threads are per user
    assert ann_item["subject"] == "Hello" and ann_item["message_id"] == msg["_id"]


def test_the_lookups_name_only_the_batch_s_users_ids_and_subject_only_messages():
    reply = message("<r@x>", "Re: A", in_reply_to="<p@x>")
    plain = message("<s@x>", "B")
    no_id = message(None, "")
    lookups = thread_lookups([filing(reply), filing(plain, inbox(BEN)), filing(no_id)])
    assert lookups.user_ids == {ANN, BEN}
    assert lookups.rfc822_ids == {(ANN, "<r@x>"), (ANN, "<p@x>"), (BEN, "<s@x>")}
    assert lookups.subjects == {(BEN, "b")}


def test_a_fresh_message_id_is_not_looked_up_but_its_refs_and_subject_are():
    """A send's own Message-ID was just made (no thread can name it): only what it refers
    to, or its subject, is looked up; the plan still records its own ref for later replies."""
    sent = ViewSpec(ANN, "sent", "SENT", read=True)
    new = Filing(message("<new@x>", "Plans"), [sent], NOW, fresh_message_id=True)
    reply = Filing(
        message("<new2@x>", "Re: A", in_reply_to="<p@x>"), [sent], NOW, fresh_message_id=True
    )
    lookups = thread_lookups([new, reply])
    assert lookups.rfc822_ids == {(ANN, "<p@x>")}
    assert lookups.subjects == {(ANN, "plans")}
    # the same messages not marked fresh: their own ids are looked up as before
    assert thread_lookups([filing(message("<new@x>", "Plans"), sent)]).rfc822_ids == {
        (ANN, "<new@x>")
    }
    plan = plan_filing([new], ThreadContext())
    assert [(r.user_id, r.rfc822_id) for r in plan.thread_refs] == [(ANN, "<new@x>")]


def test_a_message_naming_a_deleted_conversation_brings_its_thread_back_under_the_same_id():
    gone = ObjectId()  # its refs remain, the thread document does not (no subject known)
    context = ThreadContext(refs={(ANN, "<p@x>"): gone})
    plan = plan_filing([filing(message("<r@x>", "Re: Budget", in_reply_to="<p@x>"))], context)
    [thread] = plan.new_threads
    assert thread["_id"] == gone == plan.items[0][0]["thread_id"]
    assert thread["message_count"] == 1 and thread["normalized_subject"] == "budget"
    assert plan.refreshed_threads == set()
