"""Read latency through GraphQL next to the same reads done directly with the driver.

    .venv/bin/python bench/api_read.py [--sizes 10000,100000] [--rounds 200]

Starts its own SecantusDB + Redis (or uses MAILHUB_MONGODB_URI / MAILHUB_REDIS_URL), seeds
one mailbox per size in bulk (plus a 20-message thread), runs `mailhub api` as a separate
process, and times, sequentially and after a warm-up:
  - a 50-item Inbox page (first page, and a page deep in the mailbox via its cursor)
  - a 20-message thread with bodies
through GraphQL over HTTP, and the same database reads (token, then page / thread, items,
messages) issued directly with PyMongo. Prints a Markdown table (p50/p95 in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from bson import ObjectId
from pymongo.errors import PyMongoError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.indexes import ensure_indexes  # noqa: E402
from app.adapters.mongo import Mongo  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.services.accounts import hash_token  # noqa: E402

PAGE = """query($after: String) { messages(folder: INBOX, first: 50, after: $after) {
  edges { cursor node { id subject snippet read starred receivedAt from { name email } hasAttachments } }
  pageInfo { hasNextPage endCursor } } }"""
THREAD = """query($id: ID!) { thread(id: $id) { subject messageCount
  messages { id subject receivedAt from { email } textBody } } }"""


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client: httpx's own CPU (~1–2 ms a request on these
    cores) would otherwise be counted as GraphQL's cost. Same idea as peers/smtpload.py."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict, headers: dict[str, str]) -> dict:
        try:
            return await self._post_json(path, body, headers)
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            # uvicorn closes a keep-alive connection idle for 5 s (a slow setup query between
            # cases): open a new one, once
            self.writer = None
            return await self._post_json(path, body, headers)

    async def _post_json(self, path: str, body: dict, headers: dict[str, str]) -> dict:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{head}\r\n".encode()
            + data
        )
        assert self.reader is not None
        status = await self.reader.readline()
        if not status:
            raise EOFError("connection closed by the server")
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(await self.reader.readexactly(length))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


async def seed(db, size: int) -> dict:
    user_id = ObjectId()
    token = f"mh_bench_{user_id}"
    now = datetime.now(UTC)
    await db.users.insert_one(
        {"_id": user_id, "email": f"u{size}@bench.test", "name": "Bench", "state": 0}
    )
    await db.api_tokens.insert_one(
        {
            "_id": hash_token(token),
            "user_id": user_id,
            "email": f"u{size}@bench.test",
            "name": "Bench",
            "created_at": now,
            "expires_at": now + timedelta(days=1),
        }
    )
    shared = ObjectId()
    await db.messages.insert_one({"_id": shared, "subject": "bulk", "text_body": "hello " * 50})
    thread_id = ObjectId()
    batch = []
    for i in range(size):
        batch.append(
            {
                "_id": ObjectId(),
                "user_id": user_id,
                "message_id": ObjectId(),
                "role": "received",
                "thread_id": ObjectId(),
                "folder": "INBOX",
                "labels": [],
                "read": i % 3 == 0,
                "starred": False,
                "received_at": now - timedelta(seconds=size - i),
                "version": 1,
                "from": {"name": f"Sender {i % 97}", "email": f"s{i % 97}@remote.test"},
                "to": [{"name": None, "email": f"u{size}@bench.test"}],
                "cc": [],
                "subject": f"Message number {i}",
                "snippet": "Lorem ipsum dolor sit amet " * 4,
                "has_attachments": i % 10 == 0,
                "size": 2048,
            }
        )
        if len(batch) == 5000:
            await db.mailbox_items.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await db.mailbox_items.insert_many(batch, ordered=False)
    # what filing maintains for every folder: totals and the oldest arrival
    await db.mailbox_counters.insert_one(
        {
            "user_id": user_id,
            "kind": "folder",
            "name": "INBOX",
            "total": size + 20,
            "unread": size,
            "first_at": now - timedelta(days=31),
        }
    )
    thread_items, messages = [], []
    for i in range(20):
        mid = ObjectId()
        messages.append({"_id": mid, "subject": f"Re: plan {i}", "text_body": f"reply {i} " * 40})
        thread_items.append(
            {
                "_id": ObjectId(),
                "user_id": user_id,
                "message_id": mid,
                "role": "received",
                "thread_id": thread_id,
                "folder": "INBOX",
                "labels": [],
                "read": True,
                "starred": False,
                "received_at": now - timedelta(days=30, minutes=20 - i),
                "from": {"name": None, "email": "p@remote.test"},
                "to": [],
                "cc": [],
                "subject": f"Re: plan {i}",
                "snippet": "",
                "has_attachments": False,
                "size": 1,
            }
        )
    await db.messages.insert_many(messages)
    await db.mailbox_items.insert_many(thread_items)
    await db.threads.insert_one(
        {
            "_id": thread_id,
            "user_id": user_id,
            "subject": "plan",
            "message_count": 20,
            "unread_count": 0,
            "latest_at": now,
            "folders": ["INBOX"],
            "labels": [],
            "participants": [],
            "normalized_subject": "plan",
        }
    )
    return {"user_id": user_id, "token": token, "thread_id": thread_id}


SORT = [("received_at", -1), ("_id", -1)]


async def naive_page(db, token: str, after: tuple | None) -> list:
    """The textbook keyset read: one find, sort, limit (O(page) on mongod, O(folder) on SecantusDB)."""
    doc = await db.api_tokens.find_one({"_id": hash_token(token)})
    query: dict = {"user_id": doc["user_id"], "folder": "INBOX"}
    if after:
        query["$or"] = [
            {"received_at": {"$lt": after[0]}},
            {"received_at": after[0], "_id": {"$lt": after[1]}},
        ]
    return await db.mailbox_items.find(query).sort(SORT).limit(51).to_list()


async def windowed(db, query: dict, upper: dict, start, window: float, floor, need: int) -> list:
    """MailboxService._keyset_page's window loop: widen ×8 until the window holds a page."""
    for _ in range(6):
        lower = start - timedelta(seconds=window)
        got = (
            await db.mailbox_items.find({**query, "received_at": {**upper, "$gte": lower}})
            .sort(SORT)
            .limit(need)
            .to_list()
        )
        if len(got) >= need or (floor is not None and lower <= floor):
            return got
        window *= 8
    rest = {**query, "received_at": upper} if upper else query
    return await db.mailbox_items.find(rest).sort(SORT).limit(need).to_list()


async def direct_page(db, token: str, after: tuple | None, span: float = 50.0) -> list:
    """The reads mailhub issues for a page, written out with the driver (no GraphQL, no services)."""
    doc = await db.api_tokens.find_one({"_id": hash_token(token)})
    query: dict = {"user_id": doc["user_id"], "folder": "INBOX"}
    if after:
        ties = (
            await db.mailbox_items.find(
                {**query, "received_at": after[0], "_id": {"$lt": after[1]}}
            )
            .sort(SORT)
            .limit(51)
            .to_list()
        )
        upper = {"$lt": after[0]}
        window = max(60.0, 2 * span)
        return ties + await windowed(db, query, upper, after[0], window, None, 51 - len(ties))
    counter = await db.mailbox_counters.find_one(
        {"user_id": doc["user_id"], "kind": "folder", "name": "INBOX"}
    )
    if counter.get("page_span") is not None:  # learned by earlier first pages
        window = max(60.0, 2 * counter["page_span"])
    else:
        window = max(
            60.0,
            2 * 51 / (counter["total"] / (datetime.now(UTC) - counter["first_at"]).total_seconds()),
        )
    return await windowed(db, query, {}, datetime.now(UTC), window, counter["first_at"], 51)


async def direct_thread(db, token: str, thread_id: ObjectId) -> list:
    doc = await db.api_tokens.find_one({"_id": hash_token(token)})
    await db.threads.find_one({"_id": thread_id, "user_id": doc["user_id"]})
    items = (
        await db.mailbox_items.find({"user_id": doc["user_id"], "thread_id": {"$in": [thread_id]}})
        .sort([("received_at", 1), ("_id", 1)])
        .to_list()
    )
    await db.messages.find({"_id": {"$in": [i["message_id"] for i in items]}}).to_list()
    return items


async def timed_pairs(a, b, rounds: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately, so both see the same machine (a load spike from
    elsewhere lands on both, not on whichever block ran at that moment)."""
    for _ in range(10):
        await a()
        await b()
    out_a, out_b = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        await a()
        out_a.append(time.perf_counter() - t)
        t = time.perf_counter()
        await b()
        out_b.append(time.perf_counter() - t)
    return out_a, out_b


async def timed(fn, rounds: int) -> list[float]:
    for _ in range(10):
        await fn()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stack = None
    mongo_uri, redis_url = (
        os.environ.get("MAILHUB_MONGODB_URI"),
        os.environ.get("MAILHUB_REDIS_URL"),
    )
    if not (mongo_uri and redis_url):
        stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="bench-api-")))
        stack.start(mongo=not mongo_uri, redis=not redis_url, typesense=False)
        mongo_uri = mongo_uri or stack.url("mongodb")
        redis_url = redis_url or stack.url("redis")
    dbname = f"bench_api_{os.getpid()}"
    mongo = Mongo.open(mongo_uri, dbname)
    started = time.monotonic()
    print(f"seeding {sizes} ...", file=sys.stderr, flush=True)
    seeded = {size: await seed(mongo.db, size) for size in sizes}
    await ensure_indexes(
        mongo.db
    )  # after the bulk load: building once beats maintaining per insert
    print(f"seeded in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    port = free_port()
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": mongo_uri,
        "MAILHUB_MONGODB_DATABASE": dbname,
        "MAILHUB_REDIS_URL": redis_url,
        "MAILHUB_SECRET_KEY": "bench-secret",
        "MAILHUB_LOG_LEVEL": "WARNING",
    }
    api = subprocess.Popen(
        [str(Path(sys.executable).parent / "mailhub"), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    naive_rows = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            for size, s in seeded.items():
                headers = {"Authorization": f"Bearer {s['token']}"}

                raw_http = RawHttp(port)

                async def gql(query: str, variables: dict, headers=headers) -> dict:
                    body = await raw_http.post_json(
                        "/graphql", {"query": query, "variables": variables}, headers
                    )
                    assert not body.get("errors"), body
                    return body

                first = await gql(PAGE, {"after": None})
                # a cursor half-way down the mailbox: keyset pages cost the same anywhere
                deep_item = (
                    await mongo.db.mailbox_items.find({"user_id": s["user_id"], "folder": "INBOX"})
                    .sort([("received_at", -1), ("_id", -1)])
                    .skip(size // 2)
                    .limit(1)
                    .to_list()
                )
                deep_after = (deep_item[0]["received_at"], deep_item[0]["_id"])
                from app.domain.cursors import Cursor, encode_cursor

                deep_cursor = encode_cursor(
                    Cursor(deep_after[0], str(deep_after[1]), 50.0), b"bench-secret", "m"
                )
                assert len(first["data"]["messages"]["edges"]) == 50
                cases = [
                    (
                        "Inbox page 1 (50)",
                        lambda: gql(PAGE, {"after": None}),
                        lambda: direct_page(mongo.db, s["token"], None),
                    ),
                    (
                        "Inbox page mid-mailbox (50)",
                        lambda: gql(PAGE, {"after": deep_cursor}),
                        lambda: direct_page(mongo.db, s["token"], deep_after),
                    ),
                    (
                        "Thread of 20 with bodies",
                        lambda: gql(THREAD, {"id": str(s["thread_id"])}),
                        lambda: direct_thread(mongo.db, s["token"], s["thread_id"]),
                    ),
                ]
                for name, via_graphql, via_driver in cases:
                    print(f"{size:,}: {name}", file=sys.stderr, flush=True)
                    g, d = await timed_pairs(via_graphql, via_driver, args.rounds)
                    rows.append(
                        (
                            size,
                            name,
                            pct(g, 50),
                            pct(g, 95),
                            pct(d, 50),
                            pct(d, 95),
                            statistics.median(g) / statistics.median(d),
                        )
                    )
                print(f"| {size:,} | ... measured |", file=sys.stderr, flush=True)
                for row in rows[-3:]:
                    print(row, file=sys.stderr, flush=True)
                # the reference: a few runs only (seconds each at 100k), never fatal
                times = []
                for _ in range(3):
                    started_at = time.perf_counter()
                    try:
                        await naive_page(mongo.db, s["token"], None)
                    except PyMongoError as e:  # the driver's 15 s socket timeout
                        print(f"naive page at {size:,}: {e}", file=sys.stderr)
                        times.append(float("inf"))
                        break
                    times.append(time.perf_counter() - started_at)
                naive_rows.append((size, pct(times, 50), max(times) * 1000))
    finally:
        api.terminate()
        api.wait(10)
        await mongo.client.drop_database(dbname)
        await mongo.close()
        if stack:
            stack.stop()
            shutil.rmtree(stack.data_dir, ignore_errors=True)  # the servers' files
    print(
        "| mailbox | read | GraphQL p50 | GraphQL p95 | driver p50 | driver p95 | GraphQL/driver (p50) |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, name, gp50, gp95, dp50, dp95, ratio in rows:
        print(
            f"| {size:,} | {name} | {gp50:.1f} ms | {gp95:.1f} ms | {dp50:.1f} ms | {dp95:.1f} ms | {ratio:.2f}× |"
        )
    print()
    for size, p50, p95 in naive_rows:
        print(
            f"- reference, textbook find().sort().limit(51) on {size:,} items: median {p50:.1f} ms, max {p95:.1f} ms (3 runs)"
        )
    by = {(r[0], r[1]): r[2] for r in rows}
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for name in (
            "Inbox page 1 (50)",
            "Inbox page mid-mailbox (50)",
            "Thread of 20 with bodies",
        ):
            print(
                f"- {name}: {large:,} vs {small:,} p50 ratio {by[(large, name)] / by[(small, name)]:.2f}×"
            )


if __name__ == "__main__":
    asyncio.run(main())
