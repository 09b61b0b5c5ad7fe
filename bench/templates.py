"""Template sends and webhook fan-out (issue 14).

    .venv/bin/python bench/templates.py [--renders 5000] [--sends 300] [--concurrency 1]
                                        [--plain 100] [--events 20000] [--intake 4000]
                                        [--callers 32] [--per-call 500] [--batch-callers 4]

Starts its own SecantusDB + Redis. A realistic receipt template (subject, ~5 KB of HTML with a
loop over 10 items, a text part, a JSON Schema of the variables) is saved and published, then:

1. render + validate: ``TemplateRenderer.render_version`` (schema check, sandboxed render on
   the render thread pool) — per-render latency p50/p99, and renders/s;
2. template sends: ``TemplateSender.send_email`` (render, validate, then the ordinary send use
   case: one MongoDB transaction per message, a delivery job enqueued) to a remote recipient,
   ``--concurrency`` at a time — sends/s accepted through the service layer; next to it the same
   message sent without a template (``--plain`` sends), which is what the send use case costs;
3. the batched send path (``SendIntake`` → ``SendMaterializer``): ``--intake`` template sends
   accepted (checked, rendered, one lean durable document each, group-committed) by
   ``--callers`` concurrent single-send callers, then the same number through the batch entry
   point (``accept_many``, ``--per-call`` sends a call, ``--batch-callers`` at a time) —
   accepted/s each; then the materializer's sustained rate: messages/s until every accepted send
   is a stored message with its Sent view and queued recipients (delivery jobs enqueued); and
   both at once (accepting while the materializer runs): the time until the last one is stored;
4. webhook fan-out: ``--events`` delivery events of one user, 4 endpoints on a local Starlette
   receiver (uvicorn), ``WebhookService.deliver`` until every endpoint has acknowledged every
   event — events/s delivered (POSTed, signed, acknowledged).

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.mongo import as_domain_error  # noqa: E402
from app.bootstrap import build_system  # noqa: E402
from app.config import Settings  # noqa: E402
from app.domain.errors import ServiceUnavailable  # noqa: E402
from app.domain.viewer import Viewer  # noqa: E402
from app.embedded import EmbeddedStack  # noqa: E402
from app.services.send_intake.accept import Accepted, SendRequest  # noqa: E402
from app.services.sending.compose import Composition  # noqa: E402
from app.services.templates.sending import TemplateRef  # noqa: E402
from app.services.templates.store import TemplateDraft  # noqa: E402
from bench.outbound import cpu_of  # noqa: E402

DOMAIN = "tpl.bench.test"

HTML = (
    """<!doctype html><html><head><meta charset="utf-8"><title>Receipt {{ orderId }}</title>
<style>body{font-family:Helvetica,Arial,sans-serif;color:#222;margin:0;padding:0}
table{border-collapse:collapse;width:100%}td,th{padding:8px 12px;border-bottom:1px solid #eee}
th{text-align:left;background:#fafafa;font-weight:600}.total{font-weight:700;font-size:18px}
.muted{color:#888;font-size:12px}.wrap{max-width:640px;margin:0 auto;padding:24px}</style></head>
<body><div class="wrap"><h1>Thanks for your order, {{ name }}!</h1>
<p>Order <b>#{{ orderId }}</b> placed on {{ date }}. We will email you again when it ships.</p>
<table><tr><th>Item</th><th>Qty</th><th>Price</th></tr>
{% for i in items %}<tr><td>{{ i.title }}<br><span class="muted">SKU {{ i.sku }}</span></td>
<td>{{ i.qty }}</td><td>{{ i.price }} {{ currency }}</td></tr>
{% endfor %}<tr><td colspan="2" class="total">Total</td><td class="total">{{ total }} {{ currency }}
</td></tr></table>
<h2>Shipping to</h2><p>{{ address.line1 }}<br>{{ address.city }} {{ address.zip }}<br>
{{ address.country }}</p>
"""
    + "\n".join(
        f'<p class="muted">Terms {n}: returns are accepted within 30 days of delivery for '
        f"unused items in their original packaging; refunds go to the original payment method "
        f"within 5 business days of our receiving the return.</p>"
        for n in range(15)
    )
    + "</div></body></html>"
)
TEXT = """Thanks for your order, {{ name }}!
Order #{{ orderId }} ({{ date }})
{% for i in items %}- {{ i.title }} (SKU {{ i.sku }}) x{{ i.qty }}: {{ i.price }} {{ currency }}
{% endfor %}Total: {{ total }} {{ currency }}
"""
SCHEMA = {
    "type": "object",
    "required": ["orderId", "name", "date", "items", "total", "currency", "address"],
    "properties": {
        "orderId": {"type": "string", "pattern": "^[0-9]+$"},
        "name": {"type": "string", "maxLength": 200},
        "date": {"type": "string"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "string"},
        "items": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["sku", "title", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "title": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "string"},
                },
            },
        },
        "address": {"type": "object", "required": ["line1", "city", "zip", "country"]},
    },
}


def variables(n: int) -> dict[str, object]:
    return {
        "orderId": str(100000 + n),
        "name": f"Customer {n} <vip>",
        "date": "2026-12-04",
        "currency": "EUR",
        "total": "123.45",
        "items": [
            {"sku": f"SKU-{n}-{k}", "title": f"Item number {k}", "qty": k + 1, "price": "9.99"}
            for k in range(10)
        ],
        "address": {
            "line1": "1 Main Street",
            "city": "Springfield",
            "zip": "12345",
            "country": "X",
        },
    }


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-templates-"))
    stack = EmbeddedStack(tmp)
    stack.start(mongo=True, redis=True, typesense=False)
    settings = Settings(
        mongodb_uri=stack.url("mongodb"),
        mongodb_database="bench_templates",
        redis_url=stack.url("redis"),
        redis_prefix="bench-tpl",
        hostname="mx.bench.test",
        secret_key="bench-secret-0123456789abcdef0123",
        environment="test",
        data_dir=tmp,
        send_limit_per_hour=10**9,
        send_limit_per_day=10**9,
        event_settle_seconds=0,
        webhook_allow_private=True,
        webhook_batch_size=args.batch,
        webhook_retry_base_seconds=0.1,
        webhook_retry_max_seconds=1,
        _env_file=None,
    )
    system = await build_system(settings)
    rows: list[tuple[str, str]] = []
    try:
        await system.accounts.add_domain(DOMAIN)
        user = await system.accounts.create_user(f"shop@{DOMAIN}", "correct horse battery")
        viewer = Viewer(user["_id"], user["email"], None)
        await system.templates.save(
            viewer,
            TemplateDraft(
                key="receipt",
                subject="Receipt for order {{ orderId }}",
                text=TEXT,
                html=HTML,
                variables=SCHEMA,
            ),
        )
        await system.templates.publish(viewer, "receipt", 1)
        _, version = await system.templates.version(viewer, "receipt", None)
        sample = await system.renderer.render_version(version, variables(0))
        rows.append(("HTML rendered (bytes)", f"{len((sample.html or '').encode()):,}"))

        # 1. render + validate
        for n in range(200):  # warm-up
            await system.renderer.render_version(version, variables(n))
        latencies = []
        started = time.perf_counter()
        for n in range(args.renders):
            t = time.perf_counter()
            await system.renderer.render_version(version, variables(n))
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        rows.append(
            (
                "render + validate, p50 / p99 (ms)",
                f"{pct(latencies, 50):.2f} / {pct(latencies, 99):.2f}",
            )
        )
        rows.append(("render + validate, sequential (renders/s)", f"{args.renders / elapsed:,.0f}"))

        # 2a. the same message without a template: what the send use case itself costs
        started = time.perf_counter()
        for n in range(args.plain):
            await system.sending.send_email(
                viewer,
                Composition(
                    to=[f"p{n}@remote{n % 50}.bench.test"],
                    subject=sample.subject,
                    text=sample.text_part(),
                    html=sample.html,
                    transactional=True,
                ),
            )
        elapsed = time.perf_counter() - started
        rows.append(
            (
                f"plain sends, same content ({args.plain}, 1 at a time) (sends/s)",
                f"{args.plain / elapsed:,.0f}",
            )
        )

        # 2. template sends through the service layer
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(args.sends):
            queue.put_nowait(n)

        conflicts = {"retried": 0}

        async def sender() -> None:
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                while True:
                    try:
                        await system.template_sender.send_email(
                            viewer,
                            Composition(to=[f"c{n}@remote{n % 50}.bench.test"], transactional=True),
                            TemplateRef(key="receipt", variables=variables(n)),
                        )
                        break
                    except Exception as e:  # what a client does with 503 "busy, retry"
                        if not isinstance(as_domain_error(e), ServiceUnavailable):
                            raise
                        conflicts["retried"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        rows.append(
            (
                f"template sends accepted ({args.sends}, {args.concurrency} at a time) (sends/s)",
                f"{args.sends / elapsed:,.0f}",
            )
        )
        rows.append(
            (
                "sends answered 'busy, retry' (write conflicts) and retried",
                str(conflicts["retried"]),
            )
        )

        # 3. the batched path
        if args.intake:
            database = {srv.name: srv.process.pid for srv in stack.servers}["mongodb"]
            await batched_path(system, viewer, args, rows, database)

        # 4. webhook fan-out
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from tests.support.http_servers import serving

        received: dict[str, set[str]] = {}  # endpoint → event ids acknowledged

        async def hook(request: Request) -> Response:
            ids = {e["id"] for e in json.loads(await request.body())}
            received.setdefault(request.query_params["e"], set()).update(ids)
            return Response(status_code=204)

        await system.mongo.db.delivery_events.delete_many({})
        async with serving(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
            endpoints = []
            for _ in range(4):
                url = f"{base}/hook?e={len(endpoints)}"
                _, doc = await system.webhooks.create(viewer, url, ["delivered"])
                endpoints.append(doc["_id"])
            # ids as a production stream would make them: --event-rate per second, ending now
            start = time.time() - args.events / args.event_rate - 2
            process = os.urandom(5)  # one writing process: ids in order within a second
            now = datetime.now(UTC)
            batch = []
            for n in range(args.events):
                at = int(start + n / args.event_rate)
                batch.append(
                    {
                        "_id": ObjectId(at.to_bytes(4, "big") + process + n.to_bytes(3, "big")),
                        "message_id": ObjectId(),
                        "recipient": f"r{n}@remote.bench.test",
                        "event_type": "delivered",
                        "occurred_at": now,
                        "sender_user_id": user["_id"],
                        "sender_domain": DOMAIN,
                        "metadata": {"mx": "mx.remote.bench.test", "attempt": 1},
                    }
                )
                if len(batch) == 1000:
                    await system.mongo.db.delivery_events.insert_many(batch)
                    batch = []
            if batch:
                await system.mongo.db.delivery_events.insert_many(batch)
            # the endpoints existed before the stream began
            await system.mongo.db.webhooks.update_many(
                {},
                {
                    "$set": {
                        "cursor": ObjectId.from_datetime(datetime.fromtimestamp(start - 1, UTC))
                    }
                },
            )

            errors: list[str] = []

            async def drain(index: int, endpoint: ObjectId) -> None:
                """Until the receiver has every event for this endpoint (a lost one: no end)."""
                while len(received.get(str(index), ())) < args.events:
                    result = await system.webhooks.deliver(str(endpoint))
                    if result.get("error"):
                        errors.append(result["error"])
                    if not result.get("sent"):
                        await asyncio.sleep(0.05)

            started = time.perf_counter()
            await asyncio.gather(*(drain(i, e) for i, e in enumerate(endpoints)))
            elapsed = time.perf_counter() - started
            rows.append(
                (
                    f"webhook fan-out ({args.events:,} events written at {args.event_rate:,}/s, "
                    f"x {len(endpoints)} endpoints, batches of {settings.webhook_batch_size}) "
                    "(events/s)",
                    f"{args.events * len(endpoints) / elapsed:,.0f}",
                )
            )
            rows.append(("webhook POSTs failed and retried", f"{len(errors)} {errors[:2]}"))
    finally:
        await system.mongo.client.drop_database(settings.mongodb_database)
        await system.close()
        stack.stop()
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # the servers' files
    print(f"\nmachine: {os.cpu_count()} cores (shared), SecantusDB + Redis embedded")
    print(
        "settings changed from the defaults: send_limit_per_hour=send_limit_per_day=10^9 (the "
        "limit is not what is measured), event_settle_seconds=0, webhook_allow_private=true, "
        f"webhook_batch_size={settings.webhook_batch_size}, webhook retry 0.1-1 s\n"
    )
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


async def batched_path(
    system: Any,
    viewer: Viewer,
    args: argparse.Namespace,
    rows: list[tuple[str, str]],
    database: int,
) -> None:
    """Accepted/s through ``SendIntake`` (single callers, then the batch entry point), the
    materializer's sustained rate (and the database's CPU, ``database`` its pid), and both at
    once."""
    intake, materializer = system.send_intake, system.materializer
    db = system.mongo.db

    def request(n: int) -> SendRequest:
        return SendRequest(
            Composition(to=[f"b{n}@remote{n % 50}.bench.test"], transactional=True),
            TemplateRef(key="receipt", variables=variables(n)),
        )

    async def singles(numbers: range) -> None:
        todo = iter(numbers)

        async def caller() -> None:
            for n in todo:
                await intake.accept(viewer, request(n))

        await asyncio.gather(*(caller() for _ in range(args.callers)))

    async def batches(numbers: range) -> None:
        calls = iter(range(numbers.start, numbers.stop, args.per_call))

        async def caller() -> None:
            for start in calls:
                chunk = range(start, min(start + args.per_call, numbers.stop))
                results = await intake.accept_many(viewer, [request(n) for n in chunk])
                refused = [r for r in results if not isinstance(r, Accepted)]
                if refused:
                    raise RuntimeError(f"refused: {refused[:2]}")

        await asyncio.gather(*(caller() for _ in range(args.batch_callers)))

    async def drained() -> float:
        started, db_cpu = time.perf_counter(), cpu_of(database)
        await materializer.drain()
        drain_s = time.perf_counter() - started
        # the database's CPU per stored message: steadier than the rate on a shared machine
        rows.append(
            (
                "materializer: database CPU per stored message (ms)",
                f"{(cpu_of(database) - db_cpu) / n * 1000:.3f}",
            )
        )
        return drain_s

    n = args.intake
    started = time.perf_counter()
    await singles(range(0, n))
    single_s = time.perf_counter() - started
    rows.append(
        (
            f"batched path: template sends accepted, {n:,} by {args.callers} concurrent "
            "single-send callers (sends/s)",
            f"{n / single_s:,.0f}",
        )
    )
    drain_s = await drained()
    rows.append(
        (
            f"materializer: the {n:,} accepted sends stored as messages, Sent views, queued "
            "recipients, delivery jobs (messages/s)",
            f"{n / drain_s:,.0f}",
        )
    )
    started, cpu = time.perf_counter(), time.process_time()
    await batches(range(n, 2 * n))
    batch_s, batch_cpu = time.perf_counter() - started, time.process_time() - cpu
    rows.append(
        (
            f"batched path: template sends accepted, {n:,} through accept_many, {args.per_call} "
            f"a call, {args.batch_callers} calls at a time (sends/s)",
            f"{n / batch_s:,.0f}",
        )
    )
    # CPU of this process (the service layer and the client building its requests; not the
    # database's): what a busy machine does not change much, unlike the rate above
    rows.append(("batched path: CPU per accepted send (ms)", f"{batch_cpu / n * 1000:.3f}"))
    drain_s = await drained()
    rows.append(("materializer, the second backlog (messages/s)", f"{n / drain_s:,.0f}"))

    # both at once: what an operator sees, accepted/s while the backlog is being stored
    running = True

    async def materialize_meanwhile() -> None:
        while running:
            if not await materializer.run_once():
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    loop_task = asyncio.create_task(materialize_meanwhile())
    await batches(range(2 * n, 3 * n))
    accepted_s = time.perf_counter() - started
    backlog = await materializer.backlog()
    running = False
    await loop_task
    await materializer.drain()
    all_s = time.perf_counter() - started
    rows.append(
        (
            f"both at once: {n:,} accepted through accept_many while the materializer runs "
            "(sends/s accepted; backlog when the last was accepted)",
            f"{n / accepted_s:,.0f}; {backlog:,}",
        )
    )
    rows.append(
        (
            "both at once: accepted → every one stored and queued (sends/s end to end)",
            f"{n / all_s:,.0f}",
        )
    )
    stored = await db.messages.count_documents({"to.email": {"$regex": "^b"}})
    left = await materializer.backlog()
    rows.append(("batched path: messages stored / accepted sends left", f"{stored:,} / {left}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--plain", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--intake", type=int, default=4000, help="sends per batched-path phase")
    parser.add_argument("--callers", type=int, default=32, help="concurrent single-send callers")
    parser.add_argument("--per-call", type=int, default=500, help="sends per accept_many call")
    parser.add_argument("--batch-callers", type=int, default=4, help="accept_many calls at once")
    parser.add_argument("--event-rate", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000, help="webhook events per POST")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
