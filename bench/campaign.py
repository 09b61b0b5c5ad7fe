"""Campaign benchmark (issue 15): accept, render and queue; delivery next to Postfix;
unsubscribe-to-effect latency.

    .venv/bin/python bench/campaign.py [--n 100000] [--domains 50] [--skip-delivery]
        [--skip-postfix] [--watchers K]

1. accept: ``addCampaignRecipients``' service path (CampaignService.add_recipients, 1,000 a
   call, each with its own variables) for N recipients over d0..dD.test.
2. render + queue: the batch sender as the ``campaign_batch`` job runs it
   (CampaignSender.run_batches: batches of 500, no pacing, one after another for up to
   CHAIN_SECONDS a call, each but a call's last rendering the next ahead) until the campaign
   completes — template render per recipient, List-Unsubscribe headers, one parcel per
   destination domain and a bucket of ``queued`` events in one transaction per batch, one
   deliver_domain job per domain per batch. No worker runs meanwhile.
   Target: accept + render + queue ≥ 2,000 recipients/s.
3. delivery: one ``mailhub worker`` drains the queued campaign to the peers' counting sink
   (peers/sink.py on 127.0.0.1:2600; dnsmasq MX of every dN.test → 127.0.0.1), DKIM signing
   and VERP included. Postfix (peers/setup.sh instance) relays N messages of the peers'
   outbound corpus (msggen.py, ~2 KB, one recipient each: the same size class as the rendered
   campaign messages, not byte-identical) to the same sink in the same run (bench/outbound.py's
   ``run_postfix``): N/2 before the mailhub delivery and N/2 after it (A-B-A), and the ratio
   is mailhub's rate over Postfix's N messages over both rounds' seconds (each half's ratio
   printed too). Rate = messages / (last sink accept − start).
4. unsubscribe-to-effect: a paced campaign (6,000/min: 100 a batch, a batch a second); an
   unsubscribe (TrackingService.unsubscribe, what ``POST /u/{token}`` calls) for a recipient
   still pending; latency = start of the next batch − the unsubscribe; that batch must skip
   the recipient. Target: before the next batch, < 5 s.

``--track``: the campaign of parts 1–3 tracks opens and clicks (pixel, rewritten link, the
recipient's links stored with its state); printed with the results.

``--watchers K``: K ``campaignProgress`` subscribers during part 3, as the server runs them
(the campaign document, its stats, a second's sleep, in the benchmark's process): what live
progress costs the delivery it watches.

BENCH_COMMANDS=1: the worker's MongoDB commands, documents written and documents read per
delivered message (bench/mongo_commands.py, as bench/outbound.py counts them: ``read_rows``
counts a parcel as its rows, and a read that projects is counted apart); the worker's log is
kept in the run's directory.

The sending domain is marked verified directly (no DNS records for it in this run).
Needs: Debian postfix + dnsmasq, BASE (default /tmp/peer-bench) set up by peers/setup.sh for
parts 3's sink and Postfix. Not part of the test suite. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.domain.campaign_tokens import unsubscribe_token  # noqa: E402
from app.domain.viewer import Viewer  # noqa: E402
from app.embedded import EmbeddedStack, database_facts  # noqa: E402
from app.services.campaigns import lists  # noqa: E402
from app.services.templates.store import TemplateDraft  # noqa: E402
from bench.outbound import (
    WORKER_SETTINGS,
    bench_system,
    corpus,
    counted_commands,
    per_send,
    read_sink,
    run_postfix,
    start_service,
    start_sink,
    wait_sink,
    worker_env,
)  # noqa: E402
from schema.campaigns import PROGRESS_INTERVAL  # noqa: E402

SENDER = "news@client.bench.test"
TEMPLATE = TemplateDraft(
    key="newsletter",
    subject="{{ name }}, this week's offers",
    text=(
        "Hello {{ name }},\n\nyour code {{ code }} gives 10% off everything until Sunday.\n"
        + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20
    ),
    html="<h1>Hello {{ name }}</h1><p>Your code <b>{{ code }}</b> gives 10% off.</p>"
    '<p><a href="https://shop.bench.test/offers?c={{ code }}">See the offers</a></p>'
    + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>"
    * 10,
)


async def mark_verified(system: Any) -> None:
    """The sending domain marked verified (it has no DNS records here, so the worker's daily
    ``verify_domains``, at 04:11, marks it unverified again when a run spans that minute)."""
    await system.mongo.db.domains.update_one(
        {"_id": "client.bench.test"}, {"$set": {"verification": {"verified": True}}}
    )


async def bench_sender(system: Any) -> Viewer:
    """The campaign sender: its domain marked verified, its user, the template published."""
    await mark_verified(system)
    user = await system.accounts.create_user(SENDER, "bench password 123", "News")
    viewer = Viewer(user["_id"], SENDER, "News")
    await system.templates.save(viewer, TEMPLATE)
    await system.templates.publish(viewer, "newsletter", 1)
    return viewer


def recipient_rows(n: int, domains: int) -> list[tuple[str, dict[str, str]]]:
    """n recipients over d0..d<domains-1>.test, each with its own variables."""
    return [
        (f"r{k}@d{k % domains}.test", {"name": f"Reader {k}", "code": f"C{k:07d}"})
        for k in range(n)
    ]


async def create_campaign(
    system: Any, viewer: Viewer, name: str, rate: int | None, track: bool = False
) -> str:
    doc = await system.campaigns.create(
        viewer,
        name=name,
        template_key="newsletter",
        template_version=None,
        variables={},
        from_=None,
        rate_per_minute=rate,
        send_at=None,
        track_opens=track,
        track_clicks=track,
    )
    return str(doc["_id"])


async def run(
    a: argparse.Namespace,
    urls: dict[str, str],
    sink_status: Path | None,
    postfix: Callable[[int], dict[str, Any]] | None,
) -> dict:
    async with bench_system(
        urls, a.domains, public_url="https://mail.bench.test", campaign_warmup_ramp=[]
    ) as (system, settings):
        return await _measure(a, system, settings, sink_status, postfix)


async def _measure(
    a: argparse.Namespace,
    system: Any,
    settings: Settings,
    sink_status: Path | None,
    postfix: Callable[[int], dict[str, Any]] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    worker: subprocess.Popen[bytes] | None = None
    try:
        viewer = await bench_sender(system)

        # 1. accept
        cid = await create_campaign(system, viewer, "bench", None, track=a.track)
        rows = recipient_rows(a.n, a.domains)
        t0 = time.perf_counter()
        for i in range(0, a.n, 1000):
            await system.campaigns.add_recipients(viewer, cid, rows[i : i + 1000])
        accept = time.perf_counter() - t0
        # 2. render + queue
        await system.campaigns.transition(viewer, cid, "start")
        t1, db_cpu, own_cpu = time.perf_counter(), _cpu(a.db_pid), time.process_time()
        helpers_before = _helpers_cpu(a.server_pids)
        batches = 0
        while True:  # as the campaign_batch job runs them (jobs/campaigns.py)
            result = await system.campaign_sender.run_batches(ObjectId(cid))
            batches += result["chained"]
            if result.get("completed"):
                break
        queue = time.perf_counter() - t1
        queue_db_cpu = _cpu(a.db_pid) - db_cpu
        queue_own_cpu = time.process_time() - own_cpu
        queue_helpers_cpu = _helpers_cpu(a.server_pids) - helpers_before
        queued = sum(  # a bucket (the batch's, app/services/events/buckets.py): its events
            [
                d.get("count", 1)
                async for d in system.mongo.db.delivery_events.find(
                    {"campaign_id": ObjectId(cid), "event_type": "queued"}, {"count": 1}
                )
            ]
        )
        out["accept_render_queue"] = {
            "recipients": a.n,
            "queued": queued,
            "batches": batches,
            "accept_s": round(accept, 2),
            "accept_per_s": round(a.n / accept, 1),
            "render_queue_s": round(queue, 2),
            "render_queue_per_s": round(a.n / queue, 1),
            "total_per_s": round(a.n / (accept + queue), 1),
            # the database's CPU for render + queue (an embedded SecantusDB's process)
            "db_cpu_ms_per_recipient": round(queue_db_cpu * 1000 / a.n, 3),
            # the batch sender's event loop (this process) and its render helper processes
            "sender_cpu_ms_per_recipient": round(queue_own_cpu * 1000 / a.n, 3),
            "render_helpers_cpu_ms_per_recipient": round(queue_helpers_cpu * 1000 / a.n, 3),
        }
        print(json.dumps(out), flush=True)

        # 3. delivery by one worker, between two Postfix rounds of N/2 each (A-B-A: a load
        # change on the shared machine shows as a difference between the two Postfix halves)
        if postfix is not None:
            out["postfix_before"] = postfix(a.n // 2)
            print(json.dumps({"postfix_before": out["postfix_before"]}), flush=True)
        if sink_status is not None:
            base_count = read_sink(sink_status)[0]
            waiting = asyncio.ensure_future(
                wait_sink(sink_status, base_count, base_count + queued, 1800)
            )
            start, db_cpu = time.time(), _cpu(a.db_pid)
            work = sink_status.parent  # the run's directory: the worker's log and counts
            worker = start_service("worker", ["worker"], worker_env(settings), work)
            worker_cpu = 0.0
            asked: list[float] = []  # seconds each watcher's stats call took
            watchers = [
                asyncio.ensure_future(_watch(system, viewer, cid, asked)) for _ in range(a.watchers)
            ]
            count, last, first, _ = await waiting
            delivery_db_cpu = _cpu(a.db_pid) - db_cpu
            worker_cpu = _cpu(worker.pid)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            delivered = count - base_count
            out["delivery"] = {
                "delivered": delivered,
                "seconds": round(last - start, 2),
                "msgs_per_s": round(delivered / (last - start), 1) if last > start else None,
                "worker_log": str(work / "worker.log"),
                "watchers": a.watchers,
                "worker_settings_changed": WORKER_SETTINGS,  # beyond addresses/hostname/secret
                # CPU a message delivered: the database (to the last message at the sink) and
                # the worker (since its start, its start-up included)
                "db_cpu_ms_per_message": round(delivery_db_cpu * 1000 / max(delivered, 1), 3),
                "worker_cpu_ms_per_message": round(worker_cpu * 1000 / max(delivered, 1), 3),
            }
            if a.watchers:
                out["delivery"]["stats_calls"] = len(asked)
                out["delivery"]["stats_call_s"] = {
                    "median": round(sorted(asked)[len(asked) // 2], 3) if asked else None,
                    "max": round(max(asked), 3) if asked else None,
                }
            if os.environ.get("BENCH_COMMANDS"):
                await asyncio.sleep(1.0)  # mongo_commands writes its counts every half second
                nothing: dict[str, Counter[str]] = {"commands": Counter(), "documents": Counter()}
                out["delivery"]["worker_per_message"] = per_send(
                    counted_commands(work, "worker"), nothing, delivered
                )
            print(json.dumps({"delivery": out["delivery"]}), flush=True)
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            worker = None
        if postfix is not None:
            out["postfix_after"] = postfix(a.n - a.n // 2)
            print(json.dumps({"postfix_after": out["postfix_after"]}), flush=True)

        # 4. unsubscribe to effect
        await mark_verified(system)
        paced = await create_campaign(system, viewer, "paced", 6000)
        await system.campaigns.add_recipients(
            viewer, paced, [(f"p{k}@d0.test", {"name": "P", "code": "X"}) for k in range(1000)]
        )
        await system.campaigns.transition(viewer, paced, "start")
        secret = settings.secret_key.get_secret_value().encode()  # type: ignore[union-attr]
        latencies = []
        for round_ in range(5):
            doc = await system.mongo.db.campaigns.find_one({"_id": ObjectId(paced)})
            wait = (doc["next_batch_at"] - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.0, wait))
            await system.campaign_sender.run_batch(ObjectId(paced))
            doc = await system.mongo.db.campaigns.find_one({"_id": ObjectId(paced)})
            (target,) = await lists.pending_from(  # the next one to go
                system.mongo.db, doc, int(doc["pending_floor"]), 1
            )
            await asyncio.sleep(0.1 + 0.15 * round_)  # somewhere inside the batch interval
            clicked = time.time()
            await system.tracking.unsubscribe(unsubscribe_token(secret, target.id))
            doc = await system.mongo.db.campaigns.find_one({"_id": ObjectId(paced)})
            wait = (doc["next_batch_at"] - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.0, wait))
            await system.campaign_sender.run_batch(ObjectId(paced))
            after = await system.mongo.db.campaigns.find_one({"_id": ObjectId(paced)})
            batch_at = after["batch_log"][-1]["at"].timestamp()
            found = await lists.find_recipient(system.mongo.db, target.id)
            assert found is not None and found.state == "suppressed", found
            latencies.append(round(batch_at - clicked, 3))
        out["unsubscribe_to_effect_s"] = {"samples": latencies, "max": max(latencies)}
        print(json.dumps({"unsubscribe": out["unsubscribe_to_effect_s"]}), flush=True)
    finally:
        if worker is not None:
            worker.kill()
    return out


async def _watch(system: Any, viewer: Viewer, cid: str, asked: list[float]) -> None:
    """What one ``campaignProgress`` subscriber makes the server do (schema/campaigns.py): the
    campaign document, its stats, a second's sleep, again. The stats come from ``live_stats``
    (one count shared by the process's subscribers, paced), or from ``stats`` on code before it."""
    stats = getattr(system.campaigns, "live_stats", None) or system.campaigns.stats
    while True:
        doc = await system.campaigns.get(viewer, cid)
        t0 = time.perf_counter()
        await stats(doc)
        asked.append(time.perf_counter() - t0)
        await asyncio.sleep(PROGRESS_INTERVAL)


def _ratio(out: dict[str, Any]) -> dict[str, Any] | None:
    """mailhub's delivery rate over Postfix's: against each half and against both together
    (all of Postfix's messages over all of its seconds)."""
    halves = [out.get("postfix_before"), out.get("postfix_after")]
    mailhub = (out.get("delivery") or {}).get("msgs_per_s")
    if not mailhub or not all(h and h.get("msgs_per_s") and h.get("seconds") for h in halves):
        return None
    both = sum(h["delivered"] for h in halves) / sum(h["seconds"] for h in halves)  # type: ignore[index]
    return {
        "postfix_msgs_per_s": round(both, 1),
        "mailhub_over_postfix": round(mailhub / both, 2),
        "against_before": round(mailhub / halves[0]["msgs_per_s"], 2),  # type: ignore[index]
        "against_after": round(mailhub / halves[1]["msgs_per_s"], 2),  # type: ignore[index]
    }


def _cpu(pid: int) -> float:
    """Seconds of CPU a process has used (user + system)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _helpers_cpu(server_pids: set[int]) -> float:
    """Seconds of CPU this process's children other than the servers have used: the render
    helpers (services/campaigns/messages.py), which live as long as the sender."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid not in server_pids:
            try:
                total += _cpu(child.pid)
            except psutil.NoSuchProcess:
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/peer-bench"))
    ap.add_argument("--skip-delivery", action="store_true")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument(
        "--track",
        action="store_true",
        help="the measured campaign with open and click tracking (the template's link carries "
        "the recipient's code: a list of links of its own for every recipient)",
    )
    ap.add_argument(
        "--watchers",
        type=int,
        default=0,
        help="campaignProgress subscribers (their server-side loop) during the delivery",
    )
    a = ap.parse_args()  # Postfix alone: bench/outbound.py --skip-mailhub --n N --domains D
    base = Path(a.base)
    work = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    sink_status = work / "sink.status"
    sink = None
    if not a.skip_delivery or not a.skip_postfix:
        sink = start_sink(base, sink_status)
        time.sleep(1.0)
    stack = EmbeddedStack(work / "servers")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load": os.getloadavg(),
        },
        "database": database_facts(),
        "n": a.n,
        "track": a.track,
        "domains": a.domains,
    }
    try:
        stack.start(mongo=True, redis=True, typesense=False)
        urls = {"mongodb": stack.url("mongodb"), "redis": stack.url("redis")}
        a.db_pid = next(s for s in stack.servers if s.name == "mongodb").process.pid
        a.server_pids = {s.process.pid for s in stack.servers}
        postfix = None
        if not a.skip_postfix:
            corpus(base, 1, a.domains)  # the peers' generator is importable

            def postfix(n: int) -> dict[str, Any]:
                return run_postfix(base, n, sink_status)

        results["mailhub"] = asyncio.run(
            run(a, urls, None if a.skip_delivery else sink_status, postfix)
        )
        results["ratio"] = _ratio(results["mailhub"])
        print(json.dumps({"ratio": results["ratio"]}), flush=True)
    finally:
        stack.stop()
        # the database's files (GBs at 100,000 recipients); the worker's log stays
        shutil.rmtree(stack.data_dir, ignore_errors=True)
        if sink is not None:
            sink.send_signal(signal.SIGTERM)
            sink.wait(10)
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
