"""What a ``delivery_events`` document costs the database to write, with the indexes this
version keeps against those it retired, and what a reputation count costs to read.

    .venv/bin/python bench/event_writes.py [--events 5000] [--reps 4] [--reads 50000]

1. writes: ``--events`` events (a campaign's ``delivered`` events: message, recipient, sender,
   domain, campaign, metadata), 500 in a transaction as the outcome writer writes them, into a
   collection with the secondary indexes of ``app.adapters.indexes`` for ``delivery_events``
   ("now"), and into one with the set before the fifteenth session ("before": the three
   ``occurred_at`` indexes instead of ``(sender_domain, _id)``); SecantusDB's CPU per event
   (``bench.campaign_writes.Meter``), ``--reps`` times each, alternating.
2. reads: ``--reads`` events of ten senders, then one sender's reputation count
   (``ReputationService.counts``' pipeline) by ``_id`` range on the indexes now, and by
   ``occurred_at`` range on the indexes before.

Runs its own embedded SecantusDB. Not part of the test suite; results in docs/benchmarks.md
("Fifteenth session").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.adapters.indexes import INDEXES  # noqa: E402
from app.embedded import EmbeddedStack  # noqa: E402
from bench.campaign_writes import Meter  # noqa: E402

BATCH = 500
NOW = [(i.keys, i.options) for i in INDEXES if i.collection == "delivery_events"]
BEFORE = [
    (keys, options)
    for keys, options in NOW
    if keys != [("sender_domain", ASCENDING), ("_id", ASCENDING)]
] + [
    ([("sender_user_id", ASCENDING), ("occurred_at", ASCENDING)], {}),
    ([("occurred_at", ASCENDING)], {}),
    ([("sender_domain", ASCENDING), ("occurred_at", ASCENDING)], {}),
]
SENT = ["queued", "scheduled", "sent", "delivered", "bounced", "complained"]


def event(campaign: ObjectId, user: ObjectId, domain: str) -> dict[str, Any]:
    return {
        "message_id": ObjectId(),
        "recipient": "reader@d1.test",
        "recipient_id": ObjectId(),
        "event_type": "delivered",
        "occurred_at": datetime.now(UTC),
        "sender_user_id": user,
        "sender_domain": domain,
        "campaign_id": campaign,
        "metadata": {"attempt": 1, "code": 250, "text": "2.0.0 Ok: queued", "mx": "mx.d1.test"},
    }


async def collection(db: Any, name: str, indexes: list[Any]) -> Any:
    coll = db[name]
    await db.create_collection(name)
    for keys, options in indexes:
        await coll.create_index(keys, **options)
    return coll


async def run(url: str, pid: int, events: int, reps: int, reads: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client.bench
    meter = Meter(pid)
    writes: dict[str, list[float]] = {"now": [], "before": []}
    for rep in range(reps):
        for name, indexes in (("now", NOW), ("before", BEFORE)):
            coll = await collection(db, f"events_{name}_{rep}", indexes)
            campaign, user = ObjectId(), ObjectId()

            async def insert(
                coll: Any = coll, campaign: ObjectId = campaign, user: ObjectId = user
            ) -> None:
                for _ in range(events // BATCH):
                    docs = [event(campaign, user, "client.bench.test") for _ in range(BATCH)]
                    async with client.start_session() as session:
                        async with await session.start_transaction():
                            await coll.insert_many(docs, session=session)

            writes[name].append((await meter.per(events, insert))["cpu_ms"])

    counts: dict[str, float] = {}
    users = [ObjectId() for _ in range(10)]
    since = datetime.now(UTC) - timedelta(days=7)
    for name, indexes, window in (
        ("now", NOW, {"_id": {"$gte": ObjectId.from_datetime(since)}}),
        ("before", BEFORE, {"occurred_at": {"$gte": since}}),
    ):
        coll = await collection(db, f"reads_{name}", indexes)
        docs = [event(ObjectId(), users[i % 10], f"d{i % 10}.test") for i in range(reads)]
        for i in range(0, reads, 5000):
            await coll.insert_many(docs[i : i + 5000])
        pipeline = [
            {"$match": {**window, "event_type": {"$in": SENT}, "sender_user_id": users[0]}},
            {"$group": {"_id": None, "n": {"$sum": 1}}},
        ]
        started = time.perf_counter()
        rows = await (await coll.aggregate(pipeline)).to_list()
        counts[name] = round((time.perf_counter() - started) * 1000, 1)
        assert rows and rows[0]["n"] == reads // 10, rows
    await client.close()
    return {
        "indexes": {"now": len(NOW), "before": len(BEFORE)},
        "cpu_ms_per_event_inserted": writes,
        "reputation_count_ms": counts,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--reads", type=int, default=50000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-event-writes-"))
    stack = EmbeddedStack(work / "servers")
    out: dict[str, Any] = {"machine": {"cpus": psutil.cpu_count(), "platform": platform.platform()}}
    try:
        stack.start(mongo=True, redis=False, typesense=False)
        mongo = next(s for s in stack.servers if s.name == "mongodb")
        out.update(
            asyncio.run(run(stack.url("mongodb"), mongo.process.pid, a.events, a.reps, a.reads))
        )
    finally:
        stack.stop()
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # the servers' files
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
