"""Search benchmark: a 100,000-message mailbox with 1,000 other users' mail beside it.

    .venv/bin/python bench/search.py [--messages 100000] [--others 1000] [--per-other 20]
                                     [--reps 30] [--deliveries 40] [--out results.md]

Starts its own SecantusDB, Redis and Typesense (unless MAILHUB_MONGODB_URI / MAILHUB_REDIS_URL /
MAILHUB_TYPESENSE_URL + MAILHUB_TYPESENSE_API_KEY are set), and runs `mailhub api` and
`mailhub worker` as separate processes, as in production. Measured, in one run:

1. p50/p95 of 1–3 term queries, plain and with operators, through GraphQL (HTTP, auth, the
   query compiler, Typesense under a scoped key, live state from MongoDB, GraphQL shaping);
2. the very same Typesense request (compiled query, owner filter, scoped key) sent directly;
3. delivery to searchable: a message sent through the real path (sendEmail → filing → index
   job on the worker → Typesense) until a search finds it.

Seeding 100k items through the send path on SecantusDB would take hours, so the mailbox is
written in bulk (insert_many into MongoDB, import into Typesense) with the same document
builder the index jobs use; only (3) uses the real path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.bootstrap import build_system  # noqa: E402
from app.config import Settings  # noqa: E402
from app.domain.search_query import compile_query, owner_filter, parse_query, viewer_filter  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.services.search.indexing import search_document  # noqa: E402
from app.services.search.service import search_params  # noqa: E402

WORDS = (
    "invoice receipt budget meeting quarterly report lunch travel flight hotel project plan "
    "deadline review draft contract payment order shipping update team schedule weekend "
    "photos family dinner agenda minutes release notes security password reset customer "
    "support ticket launch roadmap hiring interview offer benefits insurance renewal"
).split()
FILLER = (
    "the a to of and in for on with at from by about as this that it is be will we you "
    "please thanks regards see attached let know next week today tomorrow"
).split()
PEOPLE = [
    (f"{first} {last}", f"{first.lower()}.{last.lower()}@{domain}")
    for first, last, domain in [
        ("Dana", "Scully", "fbi.example"),
        ("Fox", "Mulder", "fbi.example"),
        ("Ada", "Lovelace", "engine.example"),
        ("Grace", "Hopper", "navy.example"),
        ("Alan", "Turing", "bletchley.example"),
        ("Linus", "Torvalds", "kernel.example"),
        ("Margaret", "Hamilton", "apollo.example"),
        ("Ken", "Thompson", "bell.example"),
    ]
]
LABELS = ["Work", "Travel", "Receipts", "Family", "Projects"]
FILES = ["report.pdf", "IMG_1234.jpg", "budget-2024.xlsx", "notes.txt", "contract.pdf"]
PLAIN = [
    "invoice",
    "budget meeting",
    "quarterly report",
    "travel hotel flight",
    "roadmap",
    "contract renewal",
    "security password reset",
    "team dinner",
]
OPERATORS = [
    "from:dana invoice",
    "label:work is:unread",
    "has:attachment budget report",
    "in:archive travel",
    "after:2024/01/01 invoice",
    "filename:pdf contract",
    "from:fbi.example -label:work",
    "(invoice OR receipt) larger:100K",
]
GRAPHQL = """query($q: String!) { search(query: $q, first: 20) { totalCount
  edges { node { highlights item { id subject folder read from { email } } } } } }"""


def generate(
    rng: random.Random, owner: ObjectId, me: tuple[str, str], now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    received = rng.random() < 0.8
    other = rng.choice(PEOPLE)
    person = lambda p: {"name": p[0], "email": p[1]}  # noqa: E731
    sender, to = (person(other), [person(me)]) if received else (person(me), [person(other)])
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).capitalize()
    body = " ".join(
        rng.choice(WORDS if rng.random() < 0.3 else FILLER) for _ in range(rng.randint(20, 200))
    )
    files = rng.sample(FILES, rng.choice([0, 0, 0, 1, 2]))
    message_id = ObjectId()
    size = len(body) + sum(rng.randint(10_000, 3_000_000) for _ in files)
    message = {
        "_id": message_id,
        "from": sender,
        "to": to,
        "cc": [],
        "bcc": [],
        "subject": subject,
        "text_body": body,
        "html_body": None,
        "has_attachments": bool(files),
        "size": size,
        "attachments": [
            {
                "id": ObjectId(),
                "filename": f,
                "content_type": "application/pdf",
                "size": 1,
                "sha256": "0",
                "blob_id": None,
            }
            for f in files
        ],
        "status": "stored",
        "created_at": now,
    }
    item = {
        "_id": ObjectId(),
        "user_id": owner,
        "message_id": message_id,
        "role": "received" if received else "sent",
        "thread_id": ObjectId(),
        "folder": rng.choice(["INBOX"] * 5 + ["ARCHIVE"] * 3 + ["TRASH"]) if received else "SENT",
        "labels": rng.sample(LABELS, rng.choice([0, 0, 1, 2])),
        "read": rng.random() < 0.7,
        "starred": rng.random() < 0.1,
        "version": 1,
        "indexed_version": 1,
        "received_at": now - timedelta(seconds=rng.randint(60, 4 * 365 * 86400)),
        "from": sender,
        "to": to,
        "cc": [],
        "subject": subject,
        "snippet": body[:100],
        "has_attachments": bool(files),
        "size": size,
    }
    return item, message


async def seed(system: Any, owner: ObjectId, args: argparse.Namespace) -> float:
    """Bulk-write the mailboxes into MongoDB and Typesense; returns seconds taken."""
    started = time.perf_counter()
    rng, now = random.Random(1), datetime.now(UTC)
    owners = [(owner, ("Alice Example", "alice@bench.test"), args.messages)]
    owners += [
        (ObjectId(), (f"User {i}", f"user{i}@bench.test"), args.per_other)
        for i in range(args.others)
    ]
    batch: list[tuple[dict[str, Any], dict[str, Any]]] = []
    total = sum(n for *_, n in owners)
    done = 0

    async def flush() -> None:
        nonlocal done
        await system.mongo.db.messages.insert_many([m for _, m in batch], ordered=False)
        await system.mongo.db.mailbox_items.insert_many([i for i, _ in batch], ordered=False)
        docs = [
            search_document(i, m, m["text_body"], body_chars=system.settings.search_body_chars)
            for i, m in batch
        ]
        await system.search.index.upsert(docs)
        done += len(batch)
        print(f"\r  seeded {done}/{total}", end="", flush=True)
        batch.clear()

    for user, me, count in owners:
        for _ in range(count):
            batch.append(generate(rng, user, me, now))
            if len(batch) >= 5000:
                await flush()
    if batch:
        await flush()
    print()
    return time.perf_counter() - started


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(0.95 * len(ordered)) - 1)]


async def time_queries(
    api: httpx.AsyncClient,
    typesense: httpx.AsyncClient,
    token: str,
    system: Any,
    owner: ObjectId,
    queries: list[str],
    reps: int,
) -> dict[str, list[float]]:
    """GraphQL and direct timings, interleaved per query so both see the same conditions."""
    times: dict[str, list[float]] = {"graphql": [], "direct": []}
    scoped = system.search.index.scoped_key(owner_filter(str(owner)))
    alias = system.search.index.alias
    for q in queries:
        compiled = compile_query(parse_query(q, now=datetime.now(UTC)))
        body = {
            "searches": [
                {
                    "collection": alias,
                    **search_params(compiled.q, viewer_filter(str(owner), compiled.filter_by), 20),
                }
            ]
        }
        for rep in range(reps + 3):
            t0 = time.perf_counter()
            r = await api.post(
                "/graphql",
                json={"query": GRAPHQL, "variables": {"q": q}},
                headers={"Authorization": f"Bearer {token}"},
            )
            t1 = time.perf_counter()
            d = await typesense.post(
                "/multi_search", json=body, headers={"X-TYPESENSE-API-KEY": scoped}
            )
            t2 = time.perf_counter()
            assert r.status_code == 200 and "errors" not in r.json(), r.text[:500]
            assert d.status_code == 200 and "error" not in d.json()["results"][0], d.text[:500]
            if rep >= 3:  # warm-up
                times["graphql"].append((t1 - t0) * 1000)
                times["direct"].append((t2 - t1) * 1000)
    return times


async def delivery_to_searchable(
    api: httpx.AsyncClient, alice_token: str, bob_token: str, alice: str, n: int
) -> list[float]:
    """Send through the real path and poll search (GraphQL) until the message is found."""
    send = """mutation($input: SendEmailInput!) { sendEmail(input: $input) { __typename } }"""
    out = []
    for _ in range(n):
        marker = "zq" + uuid.uuid4().hex[:10]
        r = await api.post(
            "/graphql",
            json={
                "query": send,
                "variables": {
                    "input": {
                        "to": [alice],
                        "subject": f"Fresh news {marker}",
                        "text": "delivered just now",
                    }
                },
            },
            headers={"Authorization": f"Bearer {bob_token}"},
        )
        delivered = time.perf_counter()
        assert r.json()["data"]["sendEmail"]["__typename"] == "SendEmailSuccess", r.text
        while True:
            s = await api.post(
                "/graphql",
                json={"query": GRAPHQL, "variables": {"q": marker}},
                headers={"Authorization": f"Bearer {alice_token}"},
            )
            if s.json()["data"]["search"]["totalCount"]:
                out.append((time.perf_counter() - delivered) * 1000)
                break
            if time.perf_counter() - delivered > 30:
                raise RuntimeError("a delivered message was not searchable after 30 s")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    return out


def spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", command],
        env=env,
        cwd=ROOT,  # noqa: S603
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def run(args: argparse.Namespace, urls: dict[str, str], workdir: Path) -> str:
    name = "bench" + uuid.uuid4().hex[:8]
    port = free_port()
    env_settings = {
        "MAILHUB_MONGODB_URI": urls["mongodb"],
        "MAILHUB_REDIS_URL": urls["redis"],
        "MAILHUB_TYPESENSE_URL": urls["typesense"],
        "MAILHUB_TYPESENSE_API_KEY": urls["typesense_key"],
        "MAILHUB_MONGODB_DATABASE": name,
        "MAILHUB_REDIS_PREFIX": name,
        "MAILHUB_TYPESENSE_COLLECTION": f"{name}_items",
        "MAILHUB_HTTP_PORT": str(port),
        "MAILHUB_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "MAILHUB_LOG_LEVEL": "WARNING",
        "MAILHUB_ENVIRONMENT": "production",
    }
    settings = Settings(
        **{k.removeprefix("MAILHUB_").lower(): v for k, v in env_settings.items()}, _env_file=None
    )
    system = await build_system(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await system.accounts.add_domain("bench.test")
        alice_doc = await system.accounts.create_user(
            "alice@bench.test", "bench-password-1", "Alice"
        )
        await system.accounts.create_user("bob@bench.test", "bench-password-2", "Bob")
        await system.search.index.ensure()
        print(
            f"seeding {args.messages} messages for one user and {args.others} x {args.per_other} "
            "for others ...",
            flush=True,
        )
        seed_seconds = await seed(system, alice_doc["_id"], args)
        env = {**os.environ, **env_settings}
        procs.append(spawn("api", env, workdir / "api.log"))
        procs.append(spawn("worker", env, workdir / "worker.log"))
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
            httpx.AsyncClient(base_url=urls["typesense"], timeout=30) as typesense,
        ):
            login = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) {
              ... on LoginSuccess { token } } }"""
            tokens = []
            for email, password in (
                ("alice@bench.test", "bench-password-1"),
                ("bob@bench.test", "bench-password-2"),
            ):
                r = await api.post(
                    "/graphql", json={"query": login, "variables": {"e": email, "p": password}}
                )
                tokens.append(r.json()["data"]["login"]["token"])
            plain = await time_queries(
                api, typesense, tokens[0], system, alice_doc["_id"], PLAIN, args.reps
            )
            ops = await time_queries(
                api, typesense, tokens[0], system, alice_doc["_id"], OPERATORS, args.reps
            )
            await asyncio.sleep(1.5)  # let the worker settle before timing deliveries
            fresh = await delivery_to_searchable(
                api, tokens[0], tokens[1], "alice@bench.test", args.deliveries
            )
        total = await system.mongo.db.mailbox_items.estimated_document_count()
    except BaseException:
        for log in ("api.log", "worker.log"):
            path = workdir / log
            if path.exists():
                print(
                    f"--- {log} (last 3000 characters)\n{path.read_text()[-3000:]}", file=sys.stderr
                )
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        try:  # the servers are thrown away with the temporary directory anyway
            await system.search.index.drop_all()
            await system.close()
        except Exception as e:  # noqa: BLE001 - never hide the run's own outcome
            print(f"clean-up failed: {e!r}", file=sys.stderr)
    return report(args, plain, ops, fresh, seed_seconds, total)


def report(
    args: argparse.Namespace,
    plain: dict[str, list[float]],
    ops: dict[str, list[float]],
    fresh: list[float],
    seed_seconds: float,
    total: int,
) -> str:
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        "Typesense, SecantusDB, Redis, api and worker "
        "all on this one machine",
        f"corpus: {args.messages} items for the searching user + {args.others} users x "
        f"{args.per_other} items = {total} mailbox items (seeded in {seed_seconds:.0f} s)",
        "",
        "| queries (first: 20) | n | GraphQL p50 | GraphQL p95 | direct p50 | direct p95 "
        "| p95 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, t in (
        ("1–3 words", plain),
        ("with operators", ops),
        ("all", {k: plain[k] + ops[k] for k in plain}),
    ):
        g50, g95 = percentiles(t["graphql"])
        d50, d95 = percentiles(t["direct"])
        lines.append(
            f"| {label} | {len(t['graphql'])} | {g50:.1f} ms | {g95:.1f} ms | {d50:.1f} ms "
            f"| {d95:.1f} ms | {g95 / d95:.2f}x |"
        )
    f50, f95 = percentiles(fresh)
    lines += [
        "",
        f"delivery → searchable (sendEmail answered → a search finds it), n={len(fresh)}: "
        f"p50 {f50:.0f} ms, p95 {f95:.0f} ms, max {max(fresh):.0f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--per-other", type=int, default=20)
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per query")
    parser.add_argument("--deliveries", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailhub-bench-") as tmp:
        workdir = Path(tmp)
        env = os.environ
        stack = EmbeddedStack(workdir / "servers")
        stack.start(
            mongo=not env.get("MAILHUB_MONGODB_URI"),
            redis=not env.get("MAILHUB_REDIS_URL"),
            typesense=not env.get("MAILHUB_TYPESENSE_URL"),
        )
        try:
            urls = {
                "mongodb": env.get("MAILHUB_MONGODB_URI") or stack.url("mongodb"),
                "redis": env.get("MAILHUB_REDIS_URL") or stack.url("redis"),
                "typesense": env.get("MAILHUB_TYPESENSE_URL") or stack.url("typesense"),
                "typesense_key": env.get("MAILHUB_TYPESENSE_API_KEY") or stack.typesense_api_key,
            }
            text = asyncio.run(run(args, urls, workdir))
        finally:
            stack.stop()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
