"""Realtime latency and memory: MX 250 → `mailboxEvents` frame at the websocket client, and
local mail: alice's `sendEmail` → bob's `unreadCounts` / `mailboxEvents` frames (issue 13).

    .venv/bin/python bench/realtime.py [--subscribers 1,100,2000] [--messages 100]
    .venv/bin/python bench/realtime.py --subscribers '' --local 100 [--local-gap-ms 0]

Starts its own SecantusDB + Redis, one `mailhub api` process and one `mailhub mx` process. For
each subscriber count N it opens N graphql-transport-ws connections (one user each, one
`mailboxEvents` subscription each), then sends messages over SMTP to random subscribed users and
measures, per message, the time from the MX's 250 reply (client side) to the event frame at
that user's websocket. Memory per idle subscription = growth of the api process RSS while the
N connections sit idle, divided by N. Prints a Markdown table.

``--local M``: bob holds one websocket with both `unreadCounts` and `mailboxEvents`; alice (same
server) sends him M messages with `sendEmail` over HTTP, back to back (``--local-gap-ms`` between
them; 0 = the next send right after both frames arrived, the worst case for any pacing). Per
message: the time from `sendEmail`'s HTTP response to each frame (0 when the frame came first:
events are published before the mutation returns). MAILHUB_UNDO_SECONDS is 0 here (the default);
with an undo window the send is held as scheduled and reaches bob only when the window ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import websockets
from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.indexes import ensure_indexes  # noqa: E402
from app.adapters.mongo import Mongo  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.services.accounts import hash_token  # noqa: E402

DOMAIN = "rt.bench.test"
SUBSCRIBE = {"query": "subscription { mailboxEvents { type itemId state } }"}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


async def make_users(db, n: int, offset: int) -> list[tuple[str, str, str]]:
    now = datetime.now(UTC)
    users, idents, tokens, out = [], [], [], []
    for i in range(offset, offset + n):
        uid = ObjectId()
        email = f"u{i}@{DOMAIN}"
        token = f"mh_rt_{uid}"
        users.append({"_id": uid, "email": email, "name": None, "state": 0, "password_hash": "x"})
        idents.append({"address": email, "user_id": uid, "primary": True, "created_at": now})
        tokens.append(
            {
                "_id": hash_token(token),
                "user_id": uid,
                "email": email,
                "name": None,
                "created_at": now,
                "expires_at": now + timedelta(days=1),
            }
        )
        out.append((str(uid), email, token))
    await db.users.insert_many(users)
    await db.identities.insert_many(idents)
    await db.api_tokens.insert_many(tokens)
    return out


class Subscriber:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.frames: asyncio.Queue[float] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with websockets.connect(
            self.url, subprotocols=["graphql-transport-ws"], open_timeout=60, ping_interval=None
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": self.token}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": SUBSCRIBE}))
            self.ready.set()
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "next":
                    self.frames.put_nowait(time.perf_counter())
                elif message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("process exited")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wait_smtp(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
                s.noop()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("MX did not answer")


def send_one(port: int, to: str, i: int) -> float:
    body = (
        f"From: Sender <sender@remote.test>\r\nTo: {to}\r\nSubject: realtime {i}\r\n"
        f"Message-ID: <rt-{i}-{time.time_ns()}@remote.test>\r\n\r\nhello {i}\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("sender@remote.test", [to], body.encode())
        return time.perf_counter()  # right after the 250 to DATA


SEND = (
    'mutation($to:[String!]!,$s:String!){sendEmail(input:{to:$to,subject:$s,text:"hi"})'
    "{__typename}}"
)
COUNTS_AND_EVENTS = {
    "counts": "subscription { unreadCounts { folder unread } }",
    "events": "subscription { mailboxEvents { type itemId } }",
}


async def local_send_latency(
    http_port: int, alice_token: str, bob: tuple[str, str, str], messages: int, gap_ms: int
) -> dict[str, list[float]]:
    """sendEmail (alice → bob, one server) → bob's frames; seconds per message and stream."""
    url = f"ws://127.0.0.1:{http_port}/graphql"
    frames: dict[str, asyncio.Queue[tuple[float, dict]]] = {
        k: asyncio.Queue() for k in COUNTS_AND_EVENTS
    }
    latencies: dict[str, list[float]] = {k: [] for k in COUNTS_AND_EVENTS}
    async with websockets.connect(
        url, subprotocols=["graphql-transport-ws"], ping_interval=None
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": bob[2]}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for key, query in COUNTS_AND_EVENTS.items():
            await ws.send(json.dumps({"id": key, "type": "subscribe", "payload": {"query": query}}))

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "next":
                    frames[message["id"]].put_nowait((time.perf_counter(), message["payload"]))
                elif message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))

        reader = asyncio.create_task(read())
        await asyncio.wait_for(frames["counts"].get(), 30)  # the snapshot sent on subscribe
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"Authorization": f"Bearer {alice_token}"},
            timeout=30,
        ) as http:
            for i in range(messages):
                r = await http.post(
                    "/graphql",
                    json={"query": SEND, "variables": {"to": [bob[1]], "s": f"local {i}"}},
                )
                returned_at = time.perf_counter()
                assert r.json()["data"]["sendEmail"]["__typename"] == "SendEmailSuccess", r.text
                for key in COUNTS_AND_EVENTS:
                    received_at, _ = await asyncio.wait_for(frames[key].get(), 30)
                    latencies[key].append(max(0.0, received_at - returned_at))
                if gap_ms:
                    await asyncio.sleep(gap_ms / 1000)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return latencies


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", default="1,100,2000")
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--local", type=int, default=0, help="local sendEmail messages to measure")
    ap.add_argument("--local-gap-ms", type=int, default=0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="bench-rt-")))
    stack.start(typesense=False)
    dbname = "bench_realtime"
    mongo = Mongo.open(stack.url("mongodb"), dbname)
    await ensure_indexes(mongo.db)
    from app.services.accounts import AccountService  # noqa: F401  (DKIM key for the domain)

    await mongo.db.domains.insert_one({"_id": DOMAIN, "dkim": {"selector": "x", "private_key": ""}})
    http_port, smtp_port = free_port(), free_port()
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": stack.url("mongodb"),
        "MAILHUB_MONGODB_DATABASE": dbname,
        "MAILHUB_REDIS_URL": stack.url("redis"),
        "MAILHUB_SECRET_KEY": "bench",
        "MAILHUB_LOG_LEVEL": "WARNING",
        "MAILHUB_SMTP_PORT": str(smtp_port),
        "MAILHUB_HTTP_PORT": str(http_port),
    }
    mailhub = str(Path(sys.executable).parent / "mailhub")
    api = subprocess.Popen(
        [mailhub, "api", "--port", str(http_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mx = subprocess.Popen(
        [mailhub, "mx", "--port", str(smtp_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    local: dict[str, list[float]] = {}
    offset = 0
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", api)
        wait_smtp(smtp_port)
        api_proc = psutil.Process(api.pid)
        url = f"ws://127.0.0.1:{http_port}/graphql"
        if args.local:
            alice, bob = await make_users(mongo.db, 2, offset)
            offset += 2
            local = await local_send_latency(
                http_port, alice[2], bob, args.local, args.local_gap_ms
            )
        for n in [int(x) for x in args.subscribers.split(",") if x]:
            users = await make_users(mongo.db, n, offset)
            offset += n
            await asyncio.sleep(1)
            rss_before = api_proc.memory_info().rss
            subs = [Subscriber(url, token) for _, _, token in users]
            for i in range(0, n, 200):  # connect in waves
                for s in subs[i : i + 200]:
                    s.task = asyncio.create_task(s.run())
                await asyncio.gather(*(s.ready.wait() for s in subs[i : i + 200]))
            await asyncio.sleep(3)  # idle
            rss_idle = api_proc.memory_info().rss
            latencies = []
            rng = random.Random(n)
            for i in range(args.messages):
                k = rng.randrange(n)
                sent_at = await asyncio.to_thread(send_one, smtp_port, users[k][1], i)
                received_at = await asyncio.wait_for(subs[k].frames.get(), 30)
                latencies.append(received_at - sent_at)
            per_sub = (rss_idle - rss_before) / n
            rows.append((n, pct(latencies, 50), pct(latencies, 99), per_sub / 1024))
            for s in subs:
                s.task.cancel()
            await asyncio.gather(*(s.task for s in subs), return_exceptions=True)
            await asyncio.sleep(2)
    finally:
        api.terminate()
        mx.terminate()
        api.wait(10)
        mx.wait(10)
        await mongo.close()
        stack.stop()
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # the servers' files
    if rows:
        print("| subscribers | 250 → frame p50 | 250 → frame p99 | api RSS per idle subscription |")
        print("|---|---|---|---|")
        for n, p50, p99, kb in rows:
            print(f"| {n:,} | {p50:.1f} ms | {p99:.1f} ms | {kb:.1f} KB |")
    if local:
        print(f"\nlocal sendEmail → frame, {args.local} messages, gap {args.local_gap_ms} ms")
        print("| subscription | p50 | p99 | max |")
        print("|---|---|---|---|")
        for key, name in (("counts", "unreadCounts"), ("events", "mailboxEvents")):
            values = local[key]
            print(
                f"| {name} | {pct(values, 50):.1f} ms | {pct(values, 99):.1f} ms | {max(values) * 1000:.1f} ms |"
            )


if __name__ == "__main__":
    asyncio.run(main())
