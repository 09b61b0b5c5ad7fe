"""Parcels (app/services/delivery/parcels.py): a campaign batch's mail to one domain is one
queued document; the lanes read it as its members, and each member leaves it, as an ordinary
row, with its first outcome — only while the parcel still holds it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.bootstrap import System, build_system
from app.domain.bounces import SmtpOutcome
from app.services.delivery.outbox import DomainLease, PreparedMessage, Work
from app.services.delivery.outcome_writer import Attempt, OutcomeBatch, Release
from app.services.delivery.parcels import members, parcels_of
from app.services.delivery.pulls import PullRounds
from tests.support.cleanup import drop_database
from tests.support.commands import CommandLog
from tests.support.events import events_of

DOMAIN = "parcel.test"
NOW = datetime.now(UTC)
SENDER, CAMPAIGN = ObjectId(), ObjectId()  # one campaign's mail


@pytest.fixture
async def system(settings: Any, commands: CommandLog) -> AsyncIterator[System]:
    system = await build_system(settings)
    try:
        yield system
    finally:
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


def campaign_row(n: int, domain: str = DOMAIN, at: datetime = NOW) -> dict[str, Any]:
    """A queued campaign row to a remote address, as the batch sender builds it."""
    rid = ObjectId()
    address = f"r{n}@{domain}"
    return {
        "_id": rid,
        "message_id": rid,
        "address": address,
        "address_key": address,
        "domain": domain,
        "type": "to",
        "local_user_id": None,
        "delivery_status": "queued",
        "attempts": 0,
        "next_attempt_at": at,
        "lease_until": None,
        "last_reply": None,
        "bounce_class": None,
        "created_at": at,
        "updated_at": at,
        "sender_user_id": SENDER,
        "campaign_id": CAMPAIGN,
        "from": {"email": "news@sender.test", "name": None},
        "bulk": True,
        "raw": f"Subject: {n}\r\n\r\nhello {n}\r\n".encode(),
        "size": 20,
    }


def works(docs: list[dict[str, Any]]) -> list[Work]:
    lease = DomainLease(DOMAIN, datetime.now(UTC) + timedelta(seconds=60))
    return [
        Work(
            d,
            PreparedMessage(
                d["message_id"],
                {k: d[k] for k in ("campaign_id", "sender_user_id", "from", "bulk")},
                b"",
                b"",
                "s.test",
            ),
            lease,
        )
        for d in docs
    ]


def delivered(ws: list[Work]) -> OutcomeBatch:
    return OutcomeBatch(attempts=[Attempt(w, SmtpOutcome(250, "2.0.0", "OK"), "mx") for w in ws])


async def queued_parcel(system: System, n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A parcel of ``n`` campaign rows to DOMAIN, queued; and its rows."""
    rows = [campaign_row(i) for i in range(n)]
    [parcel] = parcels_of(rows)
    await system.mongo.db.recipients.insert_one(parcel)
    return parcel, rows


class Held:
    """The leases pull rounds consult (``held``): DOMAIN's, for a minute."""

    def __init__(self) -> None:
        self.held = {DOMAIN: DomainLease(DOMAIN, datetime.now(UTC) + timedelta(seconds=60))}


def rounds_on(system: System) -> PullRounds:
    none: Any = None
    leases: Any = Held()
    return PullRounds(
        db=system.mongo.db, leases=leases, preparer=none, hand_to=none, lane_busy=lambda d: True
    )


async def read(system: System) -> list[dict[str, Any]]:
    """The domain's queued mail as a pull round reads it."""
    rounds = rounds_on(system)
    docs, _ = await rounds._queued(DOMAIN, 100, datetime.now(UTC))
    return docs


def test_one_parcel_per_domain_named_after_its_first_member() -> None:
    rows = [campaign_row(0), campaign_row(1, "other.test"), campaign_row(2)]
    parcels = parcels_of(rows)
    assert [p["domain"] for p in parcels] == [DOMAIN, "other.test"]
    assert parcels[0]["_id"] == f"parcel:{rows[0]['_id']}"
    assert parcels[0]["message_id"] == rows[0]["_id"]
    assert [m["_id"] for m in parcels[0]["parcel"]] == [rows[0]["_id"], rows[2]["_id"]]
    assert parcels[0]["delivery_status"] == "queued" and "campaign_id" not in parcels[0]
    # read back: the members, due when the parcel is; a plain row stays itself
    plain = campaign_row(3)
    later = NOW + timedelta(seconds=5)
    out = members([{**parcels[0], "next_attempt_at": later}, plain])
    assert [m["_id"] for m in out] == [rows[0]["_id"], rows[2]["_id"], plain["_id"]]
    assert out[0]["next_attempt_at"] == later and out[0]["parcel_id"] == parcels[0]["_id"]
    assert "parcel_id" not in out[2]


async def test_a_round_reads_a_parcel_as_its_members_beside_plain_rows(system: System) -> None:
    rows = [campaign_row(n) for n in range(3)]
    plain = campaign_row(9, at=NOW - timedelta(seconds=1))
    await system.mongo.db.recipients.insert_many([*parcels_of(rows), plain])
    docs = await read(system)
    assert [d["_id"] for d in docs] == [plain["_id"], *(r["_id"] for r in rows)]
    assert all(d["address"] == r["address"] for d, r in zip(docs[1:], rows, strict=True))


async def test_members_leave_their_parcel_as_rows_with_their_outcome(
    system: System, commands: CommandLog
) -> None:
    db = system.mongo.db
    writer = system.delivery.recorder.writer
    parcel, rows = await queued_parcel(system, 4)
    ws = works(await read(system))

    # two delivered: pulled out of the parcel, inserted as final rows without their MIME
    await writer.write(delivered(ws[:2]))
    left = await db.recipients.find_one({"_id": parcel["_id"]})
    assert [m["_id"] for m in left["parcel"]] == [rows[2]["_id"], rows[3]["_id"]]
    for r in rows[:2]:
        row = await db.recipients.find_one({"_id": r["_id"]})
        assert row["delivery_status"] == "sent" and row["attempts"] == 1
        assert "raw" not in row and "parcel_id" not in row
        assert row["campaign_id"] == r["campaign_id"] and row["address"] == r["address"]
    # a later round reads only what the parcel still holds
    assert [d["_id"] for d in await read(system)] == [rows[2]["_id"], rows[3]["_id"]]

    # one given back unattempted (due later), one delivered: the parcel is emptied and gone
    due = NOW + timedelta(minutes=5)
    batch = delivered(ws[3:])
    batch.releases.append(Release(ws[2], due))
    await writer.write(batch)
    assert await db.recipients.find_one({"_id": parcel["_id"]}) is None
    released = await db.recipients.find_one({"_id": rows[2]["_id"]})
    assert released["delivery_status"] == "queued" and released["raw"] == rows[2]["raw"]
    assert released["next_attempt_at"] == due.replace(microsecond=due.microsecond // 1000 * 1000)
    ids = [r["_id"] for r in rows]
    events = await events_of(db, {"recipient_id": {"$in": ids}})
    assert sorted(e["event_type"] for e in events) == ["sent"] * 3
    # every write to a parcel named it by _id alone: SecantusDB scans the whole collection
    # for an update whose filter also names the parcel's members
    parcel_writes = [
        q for q in commands.write_filters("recipients") if q.get("_id") == parcel["_id"]
    ]
    assert len(parcel_writes) == 2 and all(set(q) == {"_id"} for q in parcel_writes)


async def test_a_whole_parcel_delivered_at_once_is_deleted_and_its_members_are_rows(
    system: System,
) -> None:
    db = system.mongo.db
    parcel, rows = await queued_parcel(system, 3)
    await system.delivery.recorder.writer.write(delivered(works(await read(system))))
    assert await db.recipients.find_one({"_id": parcel["_id"]}) is None
    ids = [r["_id"] for r in rows]
    found = await db.recipients.find({"_id": {"$in": ids}}).to_list()
    assert sorted(d["delivery_status"] for d in found) == ["sent"] * 3
    # the batch's three sent events are one bucket (two if a second turned while it was made)
    stored = await db.delivery_events.find({"message_id": {"$in": ids}}).to_list()
    assert len(stored) < 3 and sum(d.get("count", 1) for d in stored) == 3
    assert sorted(e["recipient"] for e in await events_of(db, {"recipient_id": {"$in": ids}})) == (
        sorted(r["address"] for r in rows)
    )


async def test_an_outcome_is_dropped_for_a_member_someone_else_moved_out(system: System) -> None:
    """A worker whose domain lease ran out writes only the members its parcel still holds:
    the new holder's outcome stands, and nobody is recorded twice."""
    db = system.mongo.db
    writer = system.delivery.recorder.writer
    parcel, rows = await queued_parcel(system, 3)
    mine = works(await read(system))
    # meanwhile the domain's new holder read the parcel too and deferred the first member
    theirs = works(await read(system))
    deferred = OutcomeBatch(attempts=[Attempt(theirs[0], SmtpOutcome(451, "4.3.0", "later"), "mx")])
    await writer.write(deferred)

    await writer.write(delivered(mine))  # all three: the first is no longer ours
    first = await db.recipients.find_one({"_id": rows[0]["_id"]})
    assert first["delivery_status"] == "deferred" and first["raw"] == rows[0]["raw"]
    for r in rows[1:]:
        assert (await db.recipients.find_one({"_id": r["_id"]}))["delivery_status"] == "sent"
    assert await db.recipients.find_one({"_id": parcel["_id"]}) is None
    events = await events_of(db, {"recipient_id": rows[0]["_id"]})
    assert [e["event_type"] for e in events] == ["deferred"]


async def backlog(system: System) -> list[dict[str, Any]]:
    """30 queued parcels of 10 members, a second apart, an hour old."""
    start = NOW.replace(microsecond=0) - timedelta(hours=1)
    parcels = []
    for p in range(30):
        at = start + timedelta(seconds=p)
        parcels += parcels_of([campaign_row(10 * p + k, at=at) for k in range(10)])
    await system.mongo.db.recipients.insert_many(parcels)
    return parcels


def queued_reads(commands: CommandLog) -> list[dict[str, Any]]:
    """The filters of the reads of queued mail since the last call."""
    queued = [q for q in commands.finds("recipients") if q["delivery_status"] == "queued"]
    commands.clear()
    return queued


async def test_a_backlog_of_parcels_is_read_by_members_and_not_again_in_flight(
    system: System, commands: CommandLog
) -> None:
    """A domain's rounds read a backlog of parcels a recipient at a time: the first read asks
    for the times and member ids of the oldest and then reads only the parcels that hold the
    members it wants (not that many parcels); the next round reads from the parcel partly
    handed out on, not again the ones whose members are all in flight (pulls.py)."""
    parcels = await backlog(system)
    in_order = [m["_id"] for p in parcels for m in p["parcel"]]
    rounds = rounds_on(system)

    commands.clear()
    due, _ = await rounds._due({DOMAIN: 25}, NOW)
    rounds._mark_in_flight(due)
    assert [d["_id"] for d in due] == in_order[:25]
    probe, first = queued_reads(commands)
    assert "next_attempt_at" not in probe  # the oldest: their times and member ids
    assert first["next_attempt_at"] == {"$lte": parcels[2]["next_attempt_at"]}  # 3 parcels

    due, _ = await rounds._due({DOMAIN: 25}, NOW)
    rounds._mark_in_flight(due)
    assert [d["_id"] for d in due] == in_order[25:50]
    [window] = queued_reads(commands)
    assert window["next_attempt_at"]["$gte"] == parcels[2]["next_attempt_at"]


async def test_members_whose_outcome_commits_while_a_round_reads_are_not_kept_ahead(
    system: System,
) -> None:
    """A round's read can return members whose outcome commits while it reads (they were in
    flight when it began, and are not when it ends): the round hands none of them out again
    (``_settled_in_round``), and keeps none of them for the next rounds either. Kept, the next
    round would send them a second time (seen as whole parcels sent twice at 100,000)."""
    parcels = await backlog(system)
    in_order = [m["_id"] for p in parcels for m in p["parcel"]]
    rounds = rounds_on(system)
    due, _ = await rounds._due({DOMAIN: 25}, NOW)
    rounds._mark_in_flight(due)
    assert [d["_id"] for d in due] == in_order[:25]

    # the next round reads from the oldest (as every OLDEST_READ_EVERY), and while it reads,
    # the outcomes of the first 20 commit: the database still answers with their parcels
    rounds._ahead.clear()
    rounds._cursors.pop(DOMAIN)
    rounds._settled_in_round = set()
    rounds._settle_ids(in_order[:20])
    due, _ = await rounds._due({DOMAIN: 5}, NOW)
    handed = [d["_id"] for d in due if d["_id"] not in rounds._settled_in_round]
    rounds._settled_in_round = None
    assert handed == []  # the five it took are among the settled: _round drops them
    ahead = [d["_id"] for d in rounds._ahead[DOMAIN][1]]
    assert not set(ahead) & set(in_order[:25]), "settled or in flight, kept to be sent again"
    assert ahead == in_order[25 : 25 + len(ahead)]


async def test_members_read_and_not_handed_out_serve_the_next_rounds(
    system: System, commands: CommandLog
) -> None:
    """Parcel members a round read and did not hand out are kept for the next rounds (pulls.py
    ``_keep_ahead``): a round they suffice for reads nothing, and the next read starts at the
    newest of them, not again at the oldest."""
    parcels = await backlog(system)
    in_order = [m["_id"] for p in parcels for m in p["parcel"]]
    rounds = rounds_on(system)

    commands.clear()
    due, _ = await rounds._due({DOMAIN: 25}, NOW)  # read 3 parcels, handed out 25
    rounds._mark_in_flight(due)
    queued_reads(commands)
    assert [d["_id"] for d in rounds._ahead[DOMAIN][1]] == in_order[25:30]

    due, _ = await rounds._due({DOMAIN: 5}, NOW)
    rounds._mark_in_flight(due)
    assert [d["_id"] for d in due] == in_order[25:30]
    assert queued_reads(commands) == []  # served from what the first round read

    due, _ = await rounds._due({DOMAIN: 25}, NOW)
    rounds._mark_in_flight(due)
    assert [d["_id"] for d in due] == in_order[30:55]
    [window] = queued_reads(commands)
    assert window["next_attempt_at"]["$gte"] == parcels[2]["next_attempt_at"]
    ahead = [d["_id"] for d in rounds._ahead[DOMAIN][1]]
    assert ahead and ahead == in_order[55 : 55 + len(ahead)]

    # the lease given back and taken again: another worker may have sent what was read
    # ahead meanwhile, so it is not served; the next read starts from the oldest again
    rounds.leases.held[DOMAIN] = DomainLease(DOMAIN, datetime.now(UTC) + timedelta(seconds=60))
    due, _ = await rounds._due({DOMAIN: len(ahead)}, NOW)
    assert [d["_id"] for d in due] == ahead  # read again (the rest is in flight here)
    reads = queued_reads(commands)
    assert reads and all("$gte" not in q.get("next_attempt_at", {}) for q in reads), reads

    # kept under a lease that has ended since: not served either
    rounds._keep_ahead(DOMAIN, due, NOW)
    assert DOMAIN in rounds._ahead
    assert rounds._ahead_of(DOMAIN, rounds.leases.held[DOMAIN].until) == []
    assert DOMAIN not in rounds._cursors

    # a lease given back and not taken again: what was read ahead goes, and the cursor
    rounds._keep_ahead(DOMAIN, due, NOW)
    assert DOMAIN in rounds._ahead
    rounds.leases.held.clear()
    rounds._forget_windows_not_held()
    assert DOMAIN not in rounds._ahead and DOMAIN not in rounds._cursors
