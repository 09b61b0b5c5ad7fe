"""What a campaign batch's writes cost the database, document by document (issue 15).

    .venv/bin/python bench/campaign_writes.py [--recipients 5000] [--reps 4]

Runs a campaign of ``--recipients`` (bench/campaign.py's template and recipients) through the
batch sender (``CampaignSender.run_batch``, 500 a batch, no pacing) on an embedded SecantusDB
and measures the database's CPU (psutil, the SecantusDB process) and the elapsed time per
recipient for the whole of render + queue. Then it takes the documents one batch wrote and
writes copies of them again, one collection at a time, 500 in a transaction as the sender
writes them, ``--reps`` times: what each kind of document costs. (Until the twenty-fourth
session it also timed the per-recipient state change of the list's one-document-a-recipient
design, which the list's parts have no more: app/services/campaigns/lists.py.)

The sum of the parts is the floor the rows design (below) put under render + queue on this
database, rendering aside.

Then a recipient's whole life, for three designs (``life``):

- **rows** (until the twentieth session): at queue time its ``recipients`` row (carrying the
  MIME) and its ``queued`` event; at delivery the row's outcome update (the delivered fields
  and ``$unset raw``, 50 ids an ``UpdateMany``, 100 a transaction, as the outcome writer
  updates rows) and the ``delivered`` event.
- **parcels** (what the batch sender does now, app/services/delivery/parcels.py): at queue
  time one parcel per destination domain of the batch (``parcels_of``) and the ``queued``
  events; at delivery the row inserted once in its final state (no MIME kept), the
  ``delivered`` event, and the parcel's deletion.
- **parcels_events_at_delivery** (not built): the same with the ``queued`` events written at
  delivery too, so that nothing per recipient is written at queue time.

Each part is measured alone, on copies of what a real batch wrote, so the floors are the
database's write CPU only (no reads, no rendering, no SMTP). Not part of the test suite;
results in docs/benchmarks.md ("Campaigns: what each document of a batch costs", "What a
recipient costs the database across its life").
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.adapters.mongo import UpdateMany, in_transaction  # noqa: E402
from app.embedded import EmbeddedStack  # noqa: E402
from app.services.delivery.outbox import owned_filter  # noqa: E402
from app.services.delivery.parcels import members, parcels_of  # noqa: E402
from bench.campaign import bench_sender, create_campaign, recipient_rows  # noqa: E402
from bench.outbound import bench_system  # noqa: E402

BATCH = 500
COLLECTIONS = ("blobs.files", "messages", "recipients", "delivery_events")


class Meter:
    """CPU of one process and elapsed time, per unit of work."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def cpu(self) -> float:
        t = self.process.cpu_times()
        return float(t.user + t.system)

    async def per(self, units: int, work: Any) -> dict[str, float]:
        cpu, start = self.cpu(), time.perf_counter()
        await work()
        return {
            "cpu_ms": round((self.cpu() - cpu) * 1000 / units, 3),
            "elapsed_ms": round((time.perf_counter() - start) * 1000 / units, 3),
        }


async def measure(urls: dict[str, str], meter: Meter, n: int, reps: int) -> dict[str, Any]:
    async with bench_system(
        urls, 50, public_url="https://mail.bench.test", campaign_warmup_ramp=[]
    ) as (system, _settings):
        db = system.mongo.db
        viewer = await bench_sender(system)
        cid = await create_campaign(system, viewer, "bench", None)
        rows = recipient_rows(n + BATCH, 50)  # the last BATCH stay pending
        for i in range(0, len(rows), 1000):
            await system.campaigns.add_recipients(viewer, cid, rows[i : i + 1000])
        await system.campaigns.transition(viewer, cid, "start")

        async def render_and_queue() -> None:
            for _ in range(n // BATCH):
                await system.campaign_sender.run_batch(ObjectId(cid))

        out: dict[str, Any] = {"render_and_queue": await meter.per(n, render_and_queue)}

        written = {c: await db[c].find({}).limit(BATCH).to_list() for c in COLLECTIONS}
        # the batch queued its rows in parcels (app/services/delivery/parcels.py): the rows
        # themselves are what the parts below copy, as the design before parcels wrote them
        written["recipients"] = members(await db.recipients.find({}).to_list())[:BATCH]
        out["sizes"] = {c: len(docs) for c, docs in written.items()}
        parts: dict[str, list[dict[str, float]]] = {}
        for _ in range(reps):
            for collection, docs in written.items():
                if not docs:  # (campaign mail to remote addresses writes no message or blob)
                    continue
                copies = [{**d, "_id": ObjectId()} for d in docs]

                async def insert(
                    copies: list[dict[str, Any]] = copies, c: str = collection
                ) -> None:
                    await in_transaction(
                        system.mongo, lambda s: db[c].insert_many(copies, session=s)
                    )

                parts.setdefault(f"insert {collection}", []).append(
                    await meter.per(len(copies), insert)
                )
        out["per_document"] = {name: _median(runs) for name, runs in parts.items()}
        floor = sum(v["cpu_ms"] for k, v in out["per_document"].items() if k.startswith("insert"))
        out["writes_cpu_ms_per_recipient"] = round(floor, 3)
        out["writes_ceiling_recipients_per_s"] = round(1000 / floor, 1)
        out["life"] = await life(system, meter, written, reps)
        return out


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        key: round(sorted(r[key] for r in runs)[len(runs) // 2], 3)
        for key in ("cpu_ms", "elapsed_ms")
    }


async def life(
    system: Any, meter: Meter, written: dict[str, list[dict[str, Any]]], reps: int
) -> dict[str, Any]:
    """What one campaign recipient costs the database from queue to delivered, part by part,
    for the three designs of the module's docstring."""
    db = system.mongo.db
    rows, events = written["recipients"], written["delivery_events"]
    now = datetime.now(UTC)
    delivered = {
        "delivery_status": "delivered",
        "attempts": 1,
        "lease_until": None,
        "lease_token": None,
        "updated_at": now,
        "bounce_class": None,
        "last_reply": {"code": 250, "enhanced": "2.0.0", "text": "ok", "mx": "mx.bench.test"},
        "last_attempt_at": now,
    }
    parts: dict[str, list[dict[str, float]]] = {}

    async def timed(name: str, units: int, work: Any) -> None:
        parts.setdefault(name, []).append(await meter.per(units, work))

    async def insert(
        name: str, collection: str, docs: list[dict[str, Any]], units: int | None = None
    ) -> None:
        """``docs`` in one transaction, as a batch writes them; timed a document (or a unit
        of ``units``: a parcel's cost is per recipient it carries)."""
        await timed(
            name,
            units or len(docs),
            lambda: in_transaction(
                system.mongo, lambda s: db[collection].insert_many(docs, session=s)
            ),
        )

    for _ in range(reps):
        copies = [{**r, "_id": ObjectId()} for r in rows]
        await insert("insert recipients: queued, with MIME", "recipients", copies)
        ids = [c["_id"] for c in copies]
        logged = [{**e, "_id": ObjectId()} for e in events]
        await insert("insert delivery_events", "delivery_events", logged)

        async def outcome() -> None:
            for i in range(0, len(ids), 100):
                part = ids[i : i + 100]
                requests = [
                    UpdateMany(
                        {"_id": {"$in": part[j : j + 50]}, **owned_filter(0)},
                        {"$set": delivered, "$unset": {"raw": ""}},
                    )
                    for j in range(0, len(part), 50)
                ]
                await in_transaction(
                    system.mongo,
                    lambda s, r=requests: db.recipients.bulk_write(r, ordered=False, session=s),
                )

        await timed("update recipients: delivered outcome", len(ids), outcome)
        final = [
            {**{k: v for k, v in r.items() if k != "raw"}, **delivered, "_id": ObjectId()}
            for r in rows
        ]
        await insert("insert recipients: final, without MIME", "recipients", final)
        # the batch's rows as the batch sender queues them now: parcels (fresh ids)
        parcels = parcels_of([{**r, "_id": ObjectId()} for r in rows])
        await insert("insert parcels: one a domain of a batch", "recipients", parcels, len(rows))

        async def drop_parcels() -> None:
            for p in parcels:
                await in_transaction(
                    system.mongo,
                    lambda s, p=p: db.recipients.delete_one({"_id": p["_id"]}, session=s),
                )

        await timed("delete parcels: each when done", len(rows), drop_parcels)
    cost = {name: _median(runs) for name, runs in parts.items()}
    event = cost["insert delivery_events"]["cpu_ms"]
    row_insert = cost["insert recipients: final, without MIME"]["cpu_ms"]
    parcel = cost["insert parcels: one a domain of a batch"]["cpu_ms"]
    parcel_gone = cost["delete parcels: each when done"]["cpu_ms"]
    designs = {
        "rows": {  # until the twentieth session
            "queue": cost["insert recipients: queued, with MIME"]["cpu_ms"] + event,
            "delivery": cost["update recipients: delivered outcome"]["cpu_ms"] + event,
        },
        "parcels": {"queue": parcel + event, "delivery": row_insert + event + parcel_gone},
        "parcels_events_at_delivery": {
            "queue": parcel,
            "delivery": row_insert + 2 * event + parcel_gone,
        },
    }
    return {
        "per_recipient": cost,
        **{
            f"{name}_cpu_ms": {
                **{k: round(v, 3) for k, v in d.items()},
                "total": round(sum(d.values()), 3),
            }
            for name, d in designs.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=4)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-campaign-writes-"))
    stack = EmbeddedStack(work / "servers")
    results: dict[str, Any] = {
        "machine": {"cpus": psutil.cpu_count(), "platform": platform.platform()},
        "recipients": a.recipients,
    }
    try:
        stack.start(mongo=True, redis=True, typesense=False)
        mongo = next(s for s in stack.servers if s.name == "mongodb")
        urls = {"mongodb": stack.url("mongodb"), "redis": stack.url("redis")}
        results.update(asyncio.run(measure(urls, Meter(mongo.process.pid), a.recipients, a.reps)))
    finally:
        stack.stop()
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # the servers' files
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
