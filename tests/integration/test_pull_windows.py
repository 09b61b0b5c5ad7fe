"""A round reads a domain's queued recipients up to the end of a window, not all of them
(app/services/delivery/pulls.py ``PullRounds._queued``): every queued recipient is still read
in time — the oldest first, one released with an old time, one beyond a window that held too
few — and with a backlog the window query is the only one. A busy domain's rounds read from
the newest recipient handed out, not again the ones in flight (``_Cursor``); a parcel counts
as its members."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.services.delivery.leases import DomainLeases
from app.services.delivery.pulls import LATE_COMMIT, OLDEST_READ_EVERY, PullRounds
from tests.support.commands import CommandLog


def rounds_on(db: Any) -> PullRounds:
    none: Any = None  # _due and _queued read recipients only
    return PullRounds(
        db=db, leases=none, preparer=none, hand_to=none, lane_busy=lambda domain: True
    )


def row(domain: str, at: datetime, n: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "domain": domain,
        "delivery_status": "queued",
        "next_attempt_at": at,
        "address": f"r{n}@{domain}",
    }


async def consume(db: Any, docs: list[dict[str, Any]]) -> None:
    await db.recipients.update_many(
        {"_id": {"$in": [d["_id"] for d in docs]}}, {"$set": {"delivery_status": "sent"}}
    )


async def test_every_queued_recipient_is_read_oldest_first_through_windows(mongo, settings) -> None:
    db = mongo.db
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # 600 recipients a second apart in d1, and a neighbour domain that must never show up
    backlog = [row("d1.test", start + timedelta(seconds=i), i) for i in range(600)]
    await db.recipients.insert_many(backlog + [row("d2.test", start, 0)])
    rounds = rounds_on(db)

    first, more = await rounds._queued("d1.test", 50, datetime.now(UTC))
    assert more and len(first) == 50
    assert {d["address"] for d in first} == {f"r{i}@d1.test" for i in range(50)}
    await consume(db, first)

    seen = {d["_id"] for d in first}
    commands = CommandLog()  # the rounds from here on read through a client that logs
    watched = Mongo.open(
        settings.mongodb_uri, settings.mongodb_database, event_listeners=[commands]
    )
    rounds.db = watched.db
    try:
        released = None
        for n in range(30):
            docs, more = await rounds._queued("d1.test", 50, datetime.now(UTC))
            assert all(d["domain"] == "d1.test" for d in docs)
            if n == 3:
                # a recipient handed out earlier and released without an attempt comes
                # back with its old time, behind the window's mark
                released = first[0]["_id"]
                await db.recipients.update_one(
                    {"_id": released}, {"$set": {"delivery_status": "queued"}}
                )
            if n == 4:
                assert released in {d["_id"] for d in docs}
            seen |= {d["_id"] for d in docs}
            await consume(db, docs)
            if not more:
                break
        assert seen == {d["_id"] for d in backlog}
    finally:
        await watched.close()
    # while the backlog lasted, the windowed query was enough in most rounds
    queries = commands.finds("recipients")
    windowed = [q for q in queries if "next_attempt_at" in q]
    unbounded = [q for q in queries if "next_attempt_at" not in q]
    assert len(windowed) >= 10
    assert len(unbounded) <= 4, len(unbounded)


async def test_a_window_that_holds_too_few_reads_beyond_it(mongo) -> None:
    db = mongo.db
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await db.recipients.insert_many([row("d1.test", start, i) for i in range(10)])
    rounds = rounds_on(db)
    docs, more = await rounds._queued("d1.test", 10, datetime.now(UTC))
    assert len(docs) == 10 and more
    await consume(db, docs)
    later = row("d1.test", start + timedelta(days=3), 99)  # far beyond any window
    await db.recipients.insert_one(later)
    docs, more = await rounds._queued("d1.test", 10, datetime.now(UTC))
    assert [d["_id"] for d in docs] == [later["_id"]] and not more


async def test_a_window_that_reaches_the_round_is_the_only_query(mongo, settings) -> None:
    """A short queue (every window holds fewer than asked for): once a domain's window reaches
    the round's time, the window query alone serves the round; a recipient scheduled beyond
    the window is read as soon as a round's time passes the window's end."""
    db = mongo.db
    now = datetime.now(UTC)
    await db.recipients.insert_many(
        [row("d1.test", now - timedelta(seconds=5), i) for i in range(3)]
    )
    rounds = rounds_on(db)
    docs, more = await rounds._queued("d1.test", 50, now)  # no window yet: the full read
    assert len(docs) == 3 and not more
    await consume(db, docs)

    commands = CommandLog()
    watched = Mongo.open(
        settings.mongodb_uri, settings.mongodb_database, event_listeners=[commands]
    )
    rounds.db = watched.db
    try:
        for n in range(5):  # new mail trickles in, a round a second
            at = now + timedelta(seconds=n + 1)
            fresh = [row("d1.test", at, 10 * n + k) for k in range(2)]
            await db.recipients.insert_many(fresh)
            docs, more = await rounds._queued("d1.test", 50, at)
            assert {d["_id"] for d in docs} == {d["_id"] for d in fresh} and not more
            await consume(db, docs)
        queries = commands.finds("recipients")
        assert len(queries) == 5 and all("next_attempt_at" in q for q in queries), queries

        # a retry scheduled three days on is beyond any window (at most a day past the
        # newest time read): not read while it is not due, read once a round passes the end
        later = row("d1.test", now + timedelta(days=3), 99)
        await db.recipients.insert_one(later)
        docs, _ = await rounds._queued("d1.test", 50, now + timedelta(seconds=10))
        assert docs == []
        docs, more = await rounds._queued("d1.test", 50, later["next_attempt_at"])
        assert [d["_id"] for d in docs] == [later["_id"]] and not more
    finally:
        await watched.close()


async def test_windows_go_with_the_leases(mongo) -> None:
    db = mongo.db
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await db.recipients.insert_many(
        [row(domain, start, i) for domain in ("d1.test", "d2.test") for i in range(5)]
    )
    leases = DomainLeases(
        db, timedelta(seconds=30), is_idle=lambda domain: True, wake=lambda domain: None
    )
    none: Any = None
    rounds = PullRounds(db=db, leases=leases, preparer=none, hand_to=none, lane_busy=none)
    now = datetime.now(UTC)
    assert await leases.hold(["d1.test", "d2.test"], now) == {"d1.test", "d2.test"}
    for domain in ("d1.test", "d2.test"):
        await rounds._queued(domain, 3, now)
    rounds._forget_windows_not_held()
    assert set(rounds._windows) == {"d1.test", "d2.test"}  # both still held

    await leases.release(["d2.test"])  # idle: given back
    assert set(leases.held) == {"d1.test"}
    rounds._forget_windows_not_held()
    assert set(rounds._windows) == {"d1.test"}
    await leases.close(give_back=True)


def counting_reads(rounds: PullRounds) -> list[int]:
    """How many recipients in flight each of ``rounds``' reads of queued mail returned."""
    reads: list[int] = []
    read = rounds._queued

    async def counted(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
        docs, more = await read(*args, **kwargs)
        reads.append(sum(d["_id"] in rounds._in_flight for d in docs))
        return docs, more

    rounds._queued = counted  # type: ignore[method-assign]
    return reads


async def test_a_round_reads_from_the_newest_handed_out_not_the_ones_in_flight(mongo) -> None:
    """The rounds of a backlogged domain read from the newest recipient handed out (pulls.py
    ``_Cursor``): the ones in flight before it are not read again each round."""
    db = mongo.db
    now = datetime.now(UTC)
    start = now - timedelta(hours=1)
    backlog = [row("d1.test", start + timedelta(seconds=i), i) for i in range(300)]
    await db.recipients.insert_many(backlog)
    rounds = rounds_on(db)
    reads = counting_reads(rounds)

    handed: list[ObjectId] = []
    for _ in range(4):  # nothing settles: every recipient handed out stays in flight
        due, _ = await rounds._due({"d1.test": 50}, now)
        rounds._mark_in_flight(due)
        handed += [d["_id"] for d in due]
    assert handed == [d["_id"] for d in backlog[:200]]  # oldest first, none twice
    # each later round read of those in flight only the newest handed out (the backlog is
    # an hour old: whatever commits behind the cursor now is stamped within LATE_COMMIT of
    # now), where reading from the oldest would return every one in flight (50, 100, 150),
    # and reading from LATE_COMMIT behind the cursor 3 (a second apart)
    assert reads == [0, 1, 1, 1], reads

    assert rounds._in_flight_from("d1.test", None) == 200
    rounds._settle_ids(handed)  # their outcomes committed
    assert rounds._in_flight_from("d1.test", None) == 0 and not rounds._times_in_flight


async def test_mail_behind_the_newest_handed_out_is_read_late_or_at_the_next_oldest_read(
    mongo,
) -> None:
    """Mail that lands behind a domain's cursor: stamped within LATE_COMMIT of the last read
    (a transaction that committed after newer mail was handed out) the next round reads it;
    further behind (given back with an old time), the round OLDEST_READ_EVERY after the last
    read from the oldest does, and none before it."""
    db = mongo.db
    now = datetime.now(UTC)
    start = now - timedelta(seconds=1)  # 100 recipients queued over the last second
    await db.recipients.insert_many(
        [row("d1.test", start + timedelta(milliseconds=10 * i), i) for i in range(100)]
    )
    rounds = rounds_on(db)
    due, _ = await rounds._due({"d1.test": 20}, now)
    rounds._mark_in_flight(due)
    newest = due[-1]["next_attempt_at"]

    late = row("d1.test", now - LATE_COMMIT + timedelta(milliseconds=100), 1000)
    assert late["next_attempt_at"] < newest
    behind = row("d1.test", start - timedelta(minutes=5), 1001)
    await db.recipients.insert_many([late, behind])
    due, _ = await rounds._due({"d1.test": 20}, now + timedelta(seconds=1))
    rounds._mark_in_flight(due)
    ids = [d["_id"] for d in due]
    assert late["_id"] in ids and behind["_id"] not in ids

    due, _ = await rounds._due({"d1.test": 20}, now + OLDEST_READ_EVERY - timedelta(seconds=1))
    rounds._mark_in_flight(due)
    assert behind["_id"] not in [d["_id"] for d in due]
    due, _ = await rounds._due({"d1.test": 20}, now + OLDEST_READ_EVERY)
    assert due[0]["_id"] == behind["_id"]  # the oldest first, the ones in flight left out
    assert not {d["_id"] for d in due} & set(rounds._in_flight)
