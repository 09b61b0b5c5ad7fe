"""Faults under load (issue 18 item 4): what clients see and what is kept when a part fails.

    .venv/bin/python bench/chaos.py [--phase-seconds 40] [--subscribers 200] [--out table.md]

Starts its own SecantusDB, Redis and Typesense (app/embedded.py), dnsmasq with an MX record for
``sink.test`` and an SMTP sink (tests/support), and the production process layout: one
``mailhub api``, one ``mailhub worker``, one ``mailhub mx``. A steady mixed load runs the whole
time: SMTP into the MX (4/s), ``sendEmail`` to the sink (2/s), GraphQL reads (4/s) and
``--subscribers`` websocket subscriptions (``mailboxEvents``), which reconnect when dropped and
then catch up with ``changes(since:)`` from the last state they saw.

Then, one at a time, each for ``--phase-seconds``: SIGKILL the MX, the worker, the API (the
bench restarts the killed process after 2 s, as systemd's Restart= would); SIGSTOP SecantusDB
for 20 s; FLUSHALL Redis; SIGSTOP Typesense for 20 s. After a drain, per phase:

- SMTP: messages answered 250 vs stored in MongoDB (lost = accepted but not stored);
- sendEmail: accepted vs delivered to the sink, and recipients delivered more than once;
- recovery: seconds from the fault's end until every load kind succeeds again;
- errors clients saw, by kind (HTTP status + GraphQL code, SMTP reply class), 500s apart;
- subscriptions: dropped, reconnected, and resumed through ``changes(since:)``.

Prints a Markdown table (and writes it to ``--out``). The machine is shared: figures are for
one run, not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets
from bson import ObjectId
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.adapters.indexes import ensure_indexes  # noqa: E402
from app.adapters.mongo import Mongo  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.services.accounts import hash_token  # noqa: E402
from tests.support.dnsmasq import DnsServer  # noqa: E402
from tests.support.smtp_sinks import Sink  # noqa: E402

MAILHUB = str(Path(sys.executable).parent / "mailhub")
DOMAIN = "chaos.bench.test"
SINK_DOMAIN = "sink.test"
SINK_IP = "127.0.0.2"
USERS = 20
SUBSCRIBE = {"query": "subscription { mailboxEvents { type itemId state } }"}
SEND = (
    'mutation($to:[String!]!,$s:String!){sendEmail(input:{to:$to,subject:$s,text:"hi"})'
    "{__typename}}"
)
READ = "{ state }"
CHANGES = "query($s: String!) { changes(since: $s) { __typename ... on Changes { newState } } }"


@dataclass
class Phase:
    name: str
    started: float = 0.0
    fault_end: float = 0.0
    ended: float = 0.0
    smtp_accepted: list[str] = field(default_factory=list)  # Message-IDs answered 250
    sends_accepted: list[str] = field(default_factory=list)  # sink recipients accepted
    errors: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    drops: int = 0
    resumed: int = 0
    resume_failed: Counter[str] = field(default_factory=Counter)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="mailhub-chaos-"))
        self.stack = EmbeddedStack(self.dir / "servers")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.phase = Phase("warm-up")
        self.phases: list[Phase] = []
        self.running = True
        self.counter = 0
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.delivery_port = free_port()

    # --- setup --------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.stack.start()
        self.dns = DnsServer(
            mx={SINK_DOMAIN: [(10, f"mx.{SINK_DOMAIN}")]}, a={f"mx.{SINK_DOMAIN}": SINK_IP}
        ).start()
        self.sink = await Sink.start(SINK_IP, self.delivery_port)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MAILHUB_")},
            "MAILHUB_MONGODB_URI": self.stack.url("mongodb"),
            "MAILHUB_MONGODB_DATABASE": "chaos",
            "MAILHUB_REDIS_URL": self.stack.url("redis"),
            "MAILHUB_TYPESENSE_URL": self.stack.url("typesense"),
            "MAILHUB_TYPESENSE_API_KEY": self.stack.typesense_api_key,
            "MAILHUB_SECRET_KEY": "chaos-bench-secret-0123456789abcdef",
            "MAILHUB_HOSTNAME": "mx.chaos.bench.test",
            "MAILHUB_LOG_LEVEL": "WARNING",
            "MAILHUB_SMTP_HOST": "127.0.0.1",
            "MAILHUB_SMTP_PORT": str(self.smtp_port),
            "MAILHUB_HTTP_HOST": "127.0.0.1",
            "MAILHUB_HTTP_PORT": str(self.http_port),
            "MAILHUB_DNS_SERVERS": self.dns.address,
            "MAILHUB_DELIVERY_PORT": str(self.delivery_port),
            "MAILHUB_DELIVERY_TIMEOUT_SECONDS": "5",
            "MAILHUB_DELIVERY_LEASE_SECONDS": "30",
            "MAILHUB_SMTP_MESSAGES_PER_MINUTE_PER_IP": "100000",
            "MAILHUB_SMTP_LIMIT_EXEMPT": "127.0.0.1",
        }
        r = subprocess.run(
            [MAILHUB, "domains", "add", DOMAIN], env=self.env, capture_output=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        self.mongo = Mongo.open(self.stack.url("mongodb"), "chaos")
        await ensure_indexes(self.mongo.db)
        self.users = await self._make_users()
        for name in ("api", "worker", "mx"):
            self.start(name)
        await self._wait_ready()

    async def _make_users(self) -> list[tuple[str, str]]:
        db, now, out = self.mongo.db, datetime.now(UTC), []
        for i in range(USERS):
            uid, email = ObjectId(), f"u{i}@{DOMAIN}"
            token = f"mh_chaos_{uid}"
            await db.users.insert_one(
                {"_id": uid, "email": email, "name": None, "state": 0, "password_hash": "x"}
            )
            await db.identities.insert_one(
                {"address": email, "user_id": uid, "primary": True, "created_at": now}
            )
            await db.api_tokens.insert_one(
                {
                    "_id": hash_token(token),
                    "user_id": uid,
                    "email": email,
                    "name": None,
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                }
            )
            out.append((email, token))
        return out

    def start(self, name: str) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [MAILHUB, name], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                try:
                    ok = (await http.get(f"http://127.0.0.1:{self.http_port}/readyz")).is_success
                    await asyncio.to_thread(self._smtp_noop)
                    if ok:
                        return
                except (httpx.HTTPError, OSError):
                    pass
                await asyncio.sleep(0.3)
        raise RuntimeError("the processes did not come up")

    def _smtp_noop(self) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=2) as s:
            s.noop()

    # --- load ---------------------------------------------------------------------------------

    def fail(self, kind: str, what: str) -> None:
        self.phase.errors[f"{kind}: {what}"] += 1
        self.phase.failures[kind].append(time.monotonic())

    async def smtp_load(self) -> None:
        while self.running:
            self.counter += 1
            mid = f"<chaos-{self.counter}-{time.time_ns()}@remote.test>"
            to = random.choice(self.users)[0]
            phase = self.phase
            try:
                code = await asyncio.to_thread(self._smtp_send, to, mid)
            except (OSError, smtplib.SMTPException) as e:
                self.fail("smtp", type(e).__name__)
            else:
                if code == 250:
                    phase.smtp_accepted.append(mid)
                else:
                    self.fail("smtp", f"{code // 100}xx ({code})")
            await asyncio.sleep(0.25)

    def _smtp_send(self, to: str, mid: str) -> int:
        body = (
            f"From: Remote <someone@remote.test>\r\nTo: {to}\r\nSubject: chaos\r\n"
            f"Message-ID: {mid}\r\n\r\nload\r\n"
        )
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            try:
                s.sendmail("someone@remote.test", [to], body.encode())
            except smtplib.SMTPDataError as e:
                return e.smtp_code
            except smtplib.SMTPRecipientsRefused as e:
                return next(iter(e.recipients.values()))[0]
            return 250

    async def send_load(self, http: httpx.AsyncClient) -> None:
        n = 0
        while self.running:
            n += 1
            rcpt = f"r{n}@{SINK_DOMAIN}"
            phase = self.phase
            email, token = self.users[n % USERS]
            ok = await self._gql(
                http, "send", SEND, {"to": [rcpt], "s": f"chaos {n}"}, token, "sendEmail"
            )
            if ok == "SendEmailSuccess":
                phase.sends_accepted.append(rcpt)
            await asyncio.sleep(0.5)

    async def read_load(self, http: httpx.AsyncClient) -> None:
        while self.running:
            await self._gql(http, "read", READ, {}, random.choice(self.users)[1], "state")
            await asyncio.sleep(0.25)

    async def _gql(
        self,
        http: httpx.AsyncClient,
        kind: str,
        query: str,
        variables: dict[str, Any],
        token: str,
        field_name: str,
    ) -> str | None:
        try:
            r = await http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as e:
            self.fail(kind, type(e).__name__)
            return None
        try:
            body = r.json()
        except ValueError:
            self.fail(kind, f"HTTP {r.status_code} (not JSON)")
            return None
        errors = body.get("errors") if isinstance(body, dict) else None
        if r.status_code != 200 or errors:
            code = (errors or [{}])[0].get("extensions", {}).get("code") if errors else None
            self.fail(kind, f"HTTP {r.status_code} {code or ''}".strip())
            return None
        value = (body.get("data") or {}).get(field_name)
        return value.get("__typename") if isinstance(value, dict) else str(value)

    async def subscriber(self, token: str) -> None:
        """One subscription: reconnects when dropped, then catches up with changes(since:)
        from the last state it saw. A drop and its resumption count in the phase it dropped."""
        url = f"ws://127.0.0.1:{self.http_port}/graphql"
        state: str | None = None
        dropped_in: Phase | None = None
        while self.running:
            session = False
            try:
                async with websockets.connect(
                    url,
                    subprotocols=[Subprotocol("graphql-transport-ws")],
                    open_timeout=10,
                    ping_interval=None,
                ) as ws:
                    await ws.send(
                        json.dumps({"type": "connection_init", "payload": {"token": token}})
                    )
                    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if ack.get("type") != "connection_ack":
                        raise ConnectionError(f"no ack: {ack}")
                    await ws.send(
                        json.dumps({"id": "1", "type": "subscribe", "payload": SUBSCRIBE})
                    )
                    session = True
                    if dropped_in is not None:
                        if state is not None:
                            await self._resume(token, state, dropped_in)
                        else:
                            dropped_in.resumed += 1  # nothing seen yet: nothing to catch up
                        dropped_in = None
                    async for raw in ws:
                        message = json.loads(raw)
                        if message.get("type") == "next":
                            event = (message.get("payload") or {}).get("data") or {}
                            state = (event.get("mailboxEvents") or {}).get("state") or state
                        elif message.get("type") == "ping":
                            await ws.send(json.dumps({"type": "pong"}))
                        elif message.get("type") in ("error", "complete"):
                            break
            except (OSError, websockets.WebSocketException, TimeoutError, ConnectionError):
                pass
            if not self.running:
                return
            if session and dropped_in is None:
                dropped_in = self.phase
                dropped_in.drops += 1
            await asyncio.sleep(random.uniform(0.5, 1.5))
        if dropped_in is not None:
            dropped_in.resume_failed["not reconnected before the end"] += 1

    async def _resume(self, token: str, state: str, phase: Phase) -> None:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.http_port}", timeout=30
        ) as http:
            for _ in range(60):
                got = await self._gql(http, "resume", CHANGES, {"s": state}, token, "changes")
                if got == "Changes":
                    phase.resumed += 1
                    return
                if got is not None:
                    phase.resume_failed[got] += 1
                    return
                await asyncio.sleep(1)
            phase.resume_failed["gave up after 60 tries"] += 1

    # --- faults -------------------------------------------------------------------------------

    def server(self, name: str) -> subprocess.Popen[bytes]:
        return next(s.process for s in self.stack.servers if s.name == name)

    async def kill_restart(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        await asyncio.sleep(2)
        self.start(name)

    async def pause(self, server: str, seconds: float) -> None:
        process = self.server(server)
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            process.send_signal(signal.SIGCONT)

    async def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.stack.url("redis"))
        client.flushall()
        client.close()

    async def run_phase(self, name: str, fault: Any) -> None:
        phase = Phase(name, started=time.monotonic())
        self.phases.append(phase)
        self.phase = phase
        await fault()
        phase.fault_end = time.monotonic()
        await asyncio.sleep(max(0.0, self.args.phase_seconds - (phase.fault_end - phase.started)))
        phase.ended = time.monotonic()

    # --- verdict ------------------------------------------------------------------------------

    async def verdict(self) -> list[dict[str, Any]]:
        db = self.mongo.db
        received = Counter(a.lower() for r in self.sink.received for a in r.rcpt_tos)
        rows = []
        for p in self.phases:
            stored: set[str] = set()
            for i in range(0, len(p.smtp_accepted), 500):
                part = [m.strip("<>") for m in p.smtp_accepted[i : i + 500]]
                part += [f"<{m}>" for m in part]
                stored.update(
                    d["rfc822_message_id"].strip("<>")
                    for d in await db.messages.find(
                        {"rfc822_message_id": {"$in": part}}, {"rfc822_message_id": 1}
                    ).to_list()
                )
            lost = len({m.strip("<>") for m in p.smtp_accepted} - stored)
            delivered = sum(1 for r in p.sends_accepted if received[r] >= 1)
            duplicates = sum(1 for r in p.sends_accepted if received[r] > 1)
            # Per load kind: seconds from the fault's end (the restart, SIGCONT, the flush) to
            # that kind's last failure in the phase; "-" when it never failed.
            recovery = {
                kind: round(max(0.0, max(ts) - p.fault_end), 1)
                for kind, ts in sorted(p.failures.items())
            }
            rows.append(
                {
                    "phase": p.name,
                    "smtp accepted": len(p.smtp_accepted),
                    "smtp stored": len(p.smtp_accepted) - lost,
                    "lost": lost,
                    "sends accepted": len(p.sends_accepted),
                    "delivered": delivered,
                    "duplicates": duplicates,
                    "recovered after (s)": ", ".join(f"{k} {v}" for k, v in recovery.items())
                    or "-",
                    "500s": sum(n for k, n in p.errors.items() if " 500" in k),
                    "errors": ", ".join(f"{k} ×{n}" for k, n in p.errors.most_common(6)) or "none",
                    "subs dropped": p.drops,
                    "resumed": p.resumed,
                    "resume failed": dict(p.resume_failed) or 0,
                    "not resumed by the end": p.drops - p.resumed - sum(p.resume_failed.values()),
                }
            )
        return rows

    async def close(self) -> None:
        self.running = False
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        await self.sink.stop()
        self.dns.stop()
        self.stack.stop()


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase-seconds", type=float, default=40)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--drain-seconds", type=float, default=90)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bench = Bench(args)
    await bench.setup()
    print(f"servers and processes up (logs under {bench.dir})", flush=True)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bench.http_port}", timeout=30
    ) as http:
        loads = [
            asyncio.create_task(bench.smtp_load()),
            asyncio.create_task(bench.send_load(http)),
            asyncio.create_task(bench.read_load(http)),
        ]
        subs = [
            asyncio.create_task(bench.subscriber(bench.users[i % USERS][1]))
            for i in range(args.subscribers)
        ]

        async def nothing() -> None:
            return None

        faults = [
            ("baseline (no fault)", nothing),
            ("SIGKILL mailhub mx", lambda: bench.kill_restart("mx")),
            ("SIGKILL mailhub worker", lambda: bench.kill_restart("worker")),
            ("SIGKILL mailhub api", lambda: bench.kill_restart("api")),
            ("SecantusDB stopped 20 s", lambda: bench.pause("mongodb", 20)),
            ("Redis FLUSHALL", bench.flush_redis),
            ("Typesense stopped 20 s", lambda: bench.pause("typesense", 20)),
        ]
        try:
            await asyncio.sleep(5)  # subscriptions connect
            for name, fault in faults:
                print(f"phase: {name}", flush=True)
                await bench.run_phase(name, fault)
            bench.phase = Phase("drain")
            bench.running = False
            await asyncio.gather(*loads, return_exceptions=True)
            for s in subs:
                s.cancel()
            await asyncio.gather(*subs, return_exceptions=True)
            print(f"draining {args.drain_seconds:.0f} s", flush=True)
            await asyncio.sleep(args.drain_seconds)
            rows = await bench.verdict()
        finally:
            await bench.close()
    out = table(rows)
    print(out)
    if args.out:
        args.out.write_text(out + "\n")


if __name__ == "__main__":
    asyncio.run(main())
