"""Outbound delivery benchmark: mailhub's worker next to Postfix, same messages, same sink.

    .venv/bin/python bench/outbound.py [--n 10000] [--domains 50] [--mode flow|drain|graphql]

Both systems deliver the peers' fixed outbound corpus (msggen.py, seed 43: ~2 KB text messages,
one recipient each, spread over d0..d49.test) to the peers' counting sink (sink.py, one aiosmtpd
on 127.0.0.1:2600) on this machine, in this run:

- Postfix (shared/peers: setup.sh instance, defaults): smtpload.py injects over SMTP with 20
  connections while Postfix relays to the sink. Rate = messages / (last sink accept − first
  injection). Queue-to-accepted latency per message = Postfix's own ``delay=`` (arrival in its
  queue → remote 250), read from its log.
- mailhub: one ``mailhub worker`` process, real MX lookups (dnsmasq: MX of every dN.test →
  127.0.0.1), DKIM signing, VERP, per-recipient recording. The queue is filled the way
  SendingService leaves it (message + recipient documents, raw MIME in GridFS, one
  deliver_domain job per message) by a loader in this process, in bulk. ``flow``: the loader runs
  while the worker delivers (like smtpload feeding Postfix). ``drain``: the queue is filled first,
  then the worker starts. Rate = messages / (last sink accept − start). Queue-to-accepted
  latency = recorded ``sent`` time − the recipient's ``created_at``.
- ``graphql`` (flow mode as a user drives it, issue 17): a ``mailhub api`` and a ``mailhub
  worker`` process at default settings (the only changes, each user's sending limits when the
  share exceeds them, are printed); 20 users on client.bench.test, each logged in over GraphQL,
  and 20 httpx clients (one per user, one connection each) calling ``sendEmail`` with the
  corpus messages' recipient, subject and text, while the worker delivers. Accepted/s = sends /
  (last answer − first request); delivered/s = messages / (last sink accept − first request);
  sendEmail latency p50/p99 as the client sees it. Postfix in the same run is smtpload's 20
  connections (accepted/s and end-of-DATA → 250 latency are smtpload's).

BENCH_COMMANDS=1: the MongoDB commands, documents written and documents read of the worker per
message (and, in graphql mode, of the api per send; bench/mongo_commands.py); BENCH_PYSPY=<dir>:
py-spy of the mailhub processes and SecantusDB.

Needs: Debian postfix + dnsmasq, and BASE (default /tmp/peer-bench) set up by peers/setup.sh.
Not part of the test suite. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from bson import ObjectId
from pymongo.errors import PyMongoError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.adapters.queue import JobQueue  # noqa: E402
from app.bootstrap import build_system  # noqa: E402
from app.config import Settings  # noqa: E402
from app.domain.conversations import normalize_subject  # noqa: E402
from app.embedded import EmbeddedStack, database_facts, free_port  # noqa: E402
from tests.support.dnsmasq import DnsServer  # noqa: E402

SENDER = "bench@client.bench.test"
SINK_PORT = 2600


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def start_sink(base: Path, status: Path) -> subprocess.Popen[bytes]:
    """The peers' counting sink (one aiosmtpd on SINK_PORT), its counts written to ``status``."""
    return subprocess.Popen(
        [
            sys.executable,
            str(base / "bin/sink.py"),
            "--port",
            str(SINK_PORT),
            "--status",
            str(status),
        ],
        stdout=subprocess.DEVNULL,
    )


def read_sink(path: Path) -> tuple[int, float]:
    try:
        count, last = path.read_text().split()
        return int(count), float(last)
    except (FileNotFoundError, ValueError):
        return 0, 0.0


async def wait_sink(
    path: Path, base: int, target: int, within: float, on_first: Any = None
) -> tuple[int, float, float, list[int]]:
    """Wait until the sink has ``target`` messages; (count, last accept, first accept seen,
    messages accepted by the end of each second since the first accept).

    Start it before the queue is filled: it notes when the first message arrives; the
    per-second counts show a stall or a slow start that the average hides."""
    deadline = time.monotonic() + within
    first = 0.0
    timeline: list[int] = []
    while time.monotonic() < deadline:
        count, last = read_sink(path)
        if count > base and not first:
            first = time.time()
            if on_first is not None:
                on_first()
        if first:
            second = int(time.time() - first)
            while len(timeline) <= second:
                timeline.append(count - base)
            timeline[second] = count - base
        if count >= target:
            return count, last, first, timeline
        await asyncio.sleep(0.02)
    count, last = read_sink(path)
    return count, last, first, timeline


def corpus(base: Path, n: int, domains: int) -> list[tuple[str, bytes]]:
    """The smtpload outbound corpus (same seed and recipient pattern), dot-stuffing undone."""
    sys.path.insert(0, str(base / "bin"))
    import msggen  # type: ignore[import-not-found]

    out = []
    for rcpt, _, data in msggen.build_corpus(
        n, 43, "outbound", lambda r: f"rcpt@d{r.randrange(domains)}.test"
    ):
        out.append((rcpt, re.sub(rb"(?m)^\.\.", b".", data)))
    return out


# --------------------------------------------------------------------------------- Postfix


def run_postfix(base: Path, n: int, sink_status: Path, clients: int = 20) -> dict[str, Any]:
    etc = base / "etc"
    running = subprocess.run(["postfix", "-c", str(etc), "status"], capture_output=True)
    if running.returncode != 0:
        subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True)
        time.sleep(1.0)
    try:
        return _postfix_round(base, n, sink_status, clients)
    finally:
        if running.returncode != 0:  # leave the peer instance as we found it
            subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True)


def _postfix_round(base: Path, n: int, sink_status: Path, clients: int) -> dict[str, Any]:
    master = int((base / "spool/pid/master.pid").read_text().strip())
    log = base / "log/postfix.log"
    offset = log.stat().st_size if log.exists() else 0
    python = base / "venv/bin/python"
    command = [
        str(python),
        str(base / "bin/smtpload.py"),
        "--port",
        "2526",
        "--n",
        str(n),
        "--conc",
        str(clients),
        "--mix",
        "outbound",
        "--seed",
        "43",
        "--rcpt-pattern",
        "rcpt@d%d.test",
        "--wait-sink",
        str(sink_status),
        "--wait-timeout",
        "900",
        "--timeout",
        "900",
        "--watch",
        f"postfix={master}:tree",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=2000, env={**os.environ, "BASE": str(base)}
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    time.sleep(1.5)  # let the log catch up
    delays = []
    with open(log, "rb") as f:
        f.seek(offset)
        for line in f:
            if b"status=sent" in line and b"relay=127.0.0.1" in line:
                m = re.search(rb"delay=([\d.]+)", line)
                if m:
                    delays.append(float(m.group(1)))
    return {
        "delivered": out.get("delivered"),
        "msgs_per_s": out.get("deliver_msgs_per_s"),
        "inject_msgs_per_s": out.get("accept_msgs_per_s"),
        "accept_p50_ms": out.get("eod_to_250_p50_ms"),  # end of DATA -> 250
        "accept_p99_ms": out.get("eod_to_250_p99_ms"),
        "seconds": out.get("deliver_all_s"),
        "latency_p50_ms": round(1000 * (percentile(delays, 50) or 0), 1),
        "latency_p99_ms": round(1000 * (percentile(delays, 99) or 0), 1),
        "latency_samples": len(delays),
        "cpu": out.get("cpu_until_delivered"),
    }


# --------------------------------------------------------------------------------- mailhub


class Loader:
    """Fills the outbox as SendingService leaves it, in bulk (bench-only shortcut)."""

    def __init__(self, system: Any, queue: JobQueue, user_id: ObjectId) -> None:
        self.db = system.mongo.db
        self.queue = queue
        self.user_id = user_id

    async def load(self, items: list[tuple[str, bytes]], batch: int = 250) -> float:
        started = time.time()
        for start in range(0, len(items), batch):
            await self._batch(items[start : start + batch])
        return time.time() - started

    async def _batch(self, items: list[tuple[str, bytes]]) -> None:
        now = datetime.now(UTC)
        files, chunks, messages, recipients, events = [], [], [], [], []
        for rcpt, raw in items:
            blob_id, message_id, recipient_id = ObjectId(), ObjectId(), ObjectId()
            files.append(
                {
                    "_id": blob_id,
                    "length": len(raw),
                    "chunkSize": 255 * 1024,
                    "uploadDate": now,
                    "filename": "message.eml",
                    "metadata": {"kind": "raw"},
                }
            )
            chunks.append({"files_id": blob_id, "n": 0, "data": raw})
            head = raw.split(b"\r\n\r\n", 1)[0].decode()
            subject = re.search(r"^Subject: (.*)$", head, re.M).group(1)  # type: ignore[union-attr]
            mid = re.search(r"^Message-ID: (.*)$", head, re.M).group(1)  # type: ignore[union-attr]
            domain = rcpt.split("@")[1]
            messages.append(
                {
                    "_id": message_id,
                    "rfc822_message_id": mid,
                    "sender_user_id": self.user_id,
                    "direction": "outbound",
                    "status": "queued",
                    "from": {"name": "Bench Sender", "email": SENDER},
                    "to": [{"name": None, "email": rcpt}],
                    "cc": [],
                    "bcc": [],
                    "subject": subject,
                    "normalized_subject": normalize_subject(subject),
                    "raw_blob_id": blob_id,
                    "created_at": now,
                    "size": len(raw),
                    "in_reply_to": None,
                    "references": [],
                }
            )
            recipients.append(
                {
                    "_id": recipient_id,
                    "message_id": message_id,
                    "address": rcpt,
                    "address_key": rcpt,
                    "domain": domain,
                    "type": "to",
                    "local_user_id": None,
                    "delivery_status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "lease_until": None,
                    "last_reply": None,
                    "bounce_class": None,
                    "created_at": now,
                    "updated_at": now,
                    "sender_user_id": self.user_id,
                }
            )
            events.append(
                {
                    "message_id": message_id,
                    "recipient": rcpt,
                    "recipient_id": recipient_id,
                    "event_type": "queued",
                    "occurred_at": now,
                    "sender_user_id": self.user_id,
                    "sender_domain": "client.bench.test",
                    "metadata": {},
                }
            )
        await self.db["blobs.files"].insert_many(files)
        await self.db["blobs.chunks"].insert_many(chunks)
        await self.db.messages.insert_many(messages)
        await self.db.recipients.insert_many(recipients)
        await self.db.delivery_events.insert_many(events)
        for r in recipients:
            await self.queue.enqueue(
                "deliver_domain",
                str(r["message_id"]),
                r["domain"],
                job_id=f"deliver:{r['message_id']}:{r['domain']}",
            )


def profile_start(pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """BENCH_PYSPY=<dir>: py-spy profiles (raw) of these processes, with BENCH_PYSPY_GIL=1 of
    the GIL holder only (CPU, not lock waits); py-spy is not in pyproject: it is looked for on
    PATH, then next to this Python."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    gil = ["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "-o", f"{out}/{name}.txt", "-f", "raw", "-r", "200"]
            + gil,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def profile_stop(spies: list[subprocess.Popen[bytes]]) -> None:
    for p in spies:
        p.send_signal(signal.SIGINT)
    for p in spies:
        p.wait(60)


def service_env(s: Settings) -> dict[str, str]:
    """What a deployment must give each mailhub process: addresses, hostname, secret."""
    return {
        **os.environ,
        "MAILHUB_MONGODB_URI": s.mongodb_uri or "",
        "MAILHUB_MONGODB_DATABASE": s.mongodb_database,
        "MAILHUB_REDIS_URL": s.redis_url or "",
        "MAILHUB_REDIS_PREFIX": s.redis_prefix,
        "MAILHUB_DNS_SERVERS": ",".join(s.dns_servers),
        "MAILHUB_DELIVERY_PORT": str(s.delivery_port),
        "MAILHUB_HOSTNAME": s.hostname,
        "MAILHUB_SECRET_KEY": s.secret_key.get_secret_value() if s.secret_key else "",
        "MAILHUB_ENVIRONMENT": "production",
    }


# what the drain/flow modes' worker (and bench/campaign.py's) sets beyond addresses, hostname
# and secret: nothing, an operator's defaults (it set MAILHUB_LOG_LEVEL=WARNING until the
# fifteenth session); printed with the result
WORKER_SETTINGS: dict[str, str] = {}


def worker_env(s: Settings) -> dict[str, str]:
    return {**service_env(s), **WORKER_SETTINGS}


def sink_dns(domains: int) -> DnsServer:
    """dnsmasq answering the MX of every dN.test with the sink's address."""
    return DnsServer(
        mx={f"d{i}.test": [(10, f"mx.d{i}.test")] for i in range(domains)},
        a={f"mx.d{i}.test": "127.0.0.1" for i in range(domains)},
    ).start()


def bench_settings(urls: dict[str, str], dns: DnsServer, **overrides: Any) -> Settings:
    """A fresh database on the run's servers, delivering to the sink through ``dns``."""
    return Settings(  # type: ignore[call-arg]
        mongodb_uri=urls["mongodb"],
        mongodb_database="bench" + ObjectId().__str__()[-6:],
        redis_url=urls["redis"],
        redis_prefix="bench",
        hostname="mx.mailhub.bench",
        secret_key="bench-secret-key-0123456789abcdef",
        dns_servers=[dns.address],
        delivery_port=SINK_PORT,
        _env_file=None,
        **overrides,
    )


def cpu_of(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@contextlib.asynccontextmanager
async def bench_system(
    urls: dict[str, str], domains: int, **overrides: Any
) -> AsyncIterator[tuple[Any, Settings]]:
    """The run's mailhub services in this process (indexes ensured, the sender's domain
    hosted) with dnsmasq answering the sink's MX records; ``overrides``: settings of the run.
    Afterwards the run's database is dropped (best effort: the servers go with the run anyway,
    and SecantusDB may take longer than the client's timeout to drop 100k messages; a slow
    drop must not lose the numbers), the clients closed and dnsmasq stopped."""
    dns = sink_dns(domains)
    settings = bench_settings(urls, dns, **overrides)
    system = await build_system(settings)
    try:
        await system.accounts.add_domain("client.bench.test")
        yield system, settings
    finally:
        try:
            await system.mongo.client.drop_database(settings.mongodb_database)
        except PyMongoError as e:
            print(f"drop_database: {e!r} (the stack is removed anyway)", file=sys.stderr)
        await system.close()
        dns.stop()


async def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait without blocking the loop (the client's monitors must keep running)."""
    process.send_signal(signal.SIGTERM)
    for _ in range(600):
        if process.poll() is not None:
            return
        await asyncio.sleep(0.1)
    process.kill()
    process.wait()


async def run_mailhub(
    urls: dict[str, str],
    n: int,
    domains: int,
    items: list[tuple[str, bytes]],
    sink_status: Path,
    mode: str,
    servers: dict[str, int],
    work: Path,
) -> dict[str, Any]:
    async with bench_system(urls, domains) as (system, settings):
        worker: subprocess.Popen[bytes] | None = None
        try:
            user = await system.accounts.create_user(SENDER, "bench password 123", "Bench Sender")
            loader = Loader(system, system.queue, user["_id"])
            base_count = read_sink(sink_status)[0]
            process = None

            def start_worker() -> tuple[subprocess.Popen[bytes], float]:
                return start_service("worker", ["worker"], worker_env(settings), work), time.time()

            cpu: dict[str, float] = {}

            before = {name: cpu_of(pid) for name, pid in servers.items()}
            own_before = time.process_time()
            at_first: dict[str, float] = {}

            def first_accept() -> None:  # the worker's start-up CPU, as far as the first accept
                if worker is not None:
                    at_first["worker"] = cpu_of(worker.pid)

            waiting = asyncio.create_task(
                wait_sink(sink_status, base_count, base_count + n, 900, first_accept)
            )
            if mode == "drain":
                fill_seconds = await loader.load(items)
                at_start = {name: cpu_of(pid) for name, pid in servers.items()}
                worker, t0 = start_worker()
                spies = profile_start({"worker": worker.pid, "mongodb": servers["mongodb"]})
            else:
                worker, _ = start_worker()
                await asyncio.sleep(4.0)  # started and idle: process start-up is not delivery time
                process = psutil.Process(worker.pid)
                idle_cpu = process.cpu_times()
                at_start = {name: cpu_of(pid) for name, pid in servers.items()}
                spies = profile_start({"worker": worker.pid, "mongodb": servers["mongodb"]})
                t0 = time.time()
                fill_seconds = await loader.load(items)
            process = psutil.Process(worker.pid)
            count, last, first, timeline = await waiting
            t = process.cpu_times()
            worker_cpu = t.user + t.system
            if mode != "drain":
                worker_cpu -= idle_cpu.user + idle_cpu.system
            for name, pid in servers.items():
                cpu[name] = round(cpu_of(pid) - before[name], 1)
            delivery_cpu = {
                name: round(cpu_of(pid) - at_start[name], 1) for name, pid in servers.items()
            }
            profile_stop(spies)
            # Give the recorder a moment for the last outcomes, then read the latencies.
            for _ in range(100):
                if (
                    await system.mongo.db.recipients.count_documents({"delivery_status": "sent"})
                    >= n
                ):
                    break
                await asyncio.sleep(0.1)
            lat = []
            async for r in system.mongo.db.recipients.find(
                {"delivery_status": "sent"}, {"created_at": 1, "last_attempt_at": 1}
            ):
                start = max(r["created_at"].timestamp(), t0)
                lat.append(r["last_attempt_at"].timestamp() - start)
            statuses = {
                d["_id"]: d["n"]
                async for d in await system.mongo.db.recipients.aggregate(
                    [{"$group": {"_id": "$delivery_status", "n": {"$sum": 1}}}]
                )
            }
            delivered = count - base_count
            result = {
                "mode": mode,
                "settings_changed": WORKER_SETTINGS,
                "delivered": delivered,
                "statuses": statuses,
                "msgs_per_s": round(delivered / (last - t0), 1) if last > t0 else None,
                "seconds": round(last - t0, 2),
                "fill_seconds": round(fill_seconds, 2),
                "first_accept_after_s": round(first - t0, 2),
                "msgs_per_s_after_first": round(delivered / (last - first), 1)
                if last > first
                else None,
                "latency_p50_ms": round(1000 * (percentile(lat, 50) or 0), 1),
                "latency_p99_ms": round(1000 * (percentile(lat, 99) or 0), 1),
                # accepted in each second after the first accept (stalls show here)
                "per_second": [b - a for a, b in zip([0, *timeline], timeline, strict=False)],
                "worker_cpu_s": round(worker_cpu, 1),
                "server_cpu_s": cpu,
                # this process: the loader's bulk inserts and enqueues (flow: while the worker runs)
                "loader_cpu_s": round(time.process_time() - own_before, 1),
                # from worker start (drain) or loader start (flow): delivery without the drain's fill
                "server_cpu_since_start_s": delivery_cpu,
                "mongodb_cpu_ms_per_msg": round(
                    1000 * delivery_cpu["mongodb"] / max(1, delivered), 2
                ),
                "worker_cpu_ms_per_msg": round(1000 * worker_cpu / max(1, delivered), 2),
                # after the first accept: delivery without the process start-up
                "worker_cpu_until_first_accept_s": round(at_first.get("worker", 0.0), 2),
                "worker_cpu_ms_per_msg_after_first": round(
                    1000 * (t.user + t.system - at_first.get("worker", 0.0)) / max(1, delivered), 2
                ),
            }
            if os.environ.get("BENCH_COMMANDS"):
                await asyncio.sleep(1.0)  # mongo_commands writes its counts every half second
                empty: dict[str, Counter[str]] = {"commands": Counter(), "documents": Counter()}
                result["worker_per_message"] = per_send(
                    counted_commands(work, "worker"), empty, max(1, delivered)
                )
            return result
        finally:
            if worker is not None:
                await stop(worker)


# ----------------------------------------------------------------- mailhub, driven over GraphQL

LOGIN = """mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename ... on LoginSuccess { token } ... on AuthError { message } } }"""
SEND = """mutation Send($input: SendEmailInput!) {
  sendEmail(input: $input) {
    __typename ... on SendEmailSuccess { item { id } }
    ... on ValidationError { message } ... on RateLimited { message } } }"""


def send_input(rcpt: str, raw: bytes) -> dict[str, Any]:
    """The corpus message as a user's ``sendEmail`` input: its recipient, subject and text."""
    head, body = raw.split(b"\r\n\r\n", 1)
    subject = re.search(rb"^Subject: ([^\r\n]*)", head, re.M).group(1)  # type: ignore[union-attr]
    return {"to": [rcpt], "subject": subject.decode(), "text": body.decode().replace("\r\n", "\n")}


def api_settings_changed(n: int, clients: int) -> dict[str, str]:
    """The only settings the GraphQL run changes: each user's sending limits, raised to the
    user's share when the defaults (500 an hour, 2,000 a day) would refuse part of it."""
    share = -(-n // clients)
    defaults = Settings.model_fields
    changed = {}
    for name in ("send_limit_per_hour", "send_limit_per_day"):
        if share > defaults[name].default:
            changed[f"MAILHUB_{name.upper()}"] = str(share)
    return changed


def start_service(
    name: str, args: list[str], env: dict[str, str], work: Path
) -> subprocess.Popen[bytes]:
    """`mailhub <args>`, its output kept in ``<work>/<name>.log`` (what a service manager
    keeps). BENCH_COMMANDS: its MongoDB commands counted (mongo_commands) into
    ``<work>/<name>-commands``."""
    code = f"from app.cli import main; main({args!r})"
    if os.environ.get("BENCH_COMMANDS"):
        (work / f"{name}-commands").mkdir()
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import mongo_commands; "
            f"mongo_commands.count_commands({str(work / f'{name}-commands')!r}); {code}"
        )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        stdout=(work / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def counted_commands(work: Path, name: str) -> dict[str, Counter[str]]:
    """A service's command and document counts so far (mongo_commands' files)."""
    out: dict[str, Counter[str]] = {"commands": Counter(), "documents": Counter()}
    for path in (work / f"{name}-commands").glob("*.json"):
        for part, counts in json.loads(path.read_text()).items():
            out.setdefault(part, Counter()).update(counts)
    return out


def per_send(after: dict[str, Counter[str]], before: dict[str, Counter[str]], n: int) -> Any:
    """Commands, documents written and documents read per send, by command and collection."""
    return {
        part: {
            key: round(count / n, 2)
            for key, count in sorted((after[part] - before.get(part, Counter())).items())
            if count
        }
        for part in after
    }


async def wait_healthy(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError("mailhub api exited; see api.log")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("mailhub api did not come up")


async def login(http: httpx.AsyncClient, email: str, password: str) -> str:
    answer = await http.post(
        "/graphql", json={"query": LOGIN, "variables": {"email": email, "password": password}}
    )
    result = answer.json()["data"]["login"]
    if result["__typename"] != "LoginSuccess":
        raise RuntimeError(f"login {email}: {result}")
    return str(result["token"])


async def client(
    base_url: str, token: str, inputs: list[dict[str, Any]], latencies: list[float]
) -> tuple[int, int]:
    """One user's client: its sends one after the other on one kept-alive connection. A send
    answered SERVICE_UNAVAILABLE ("busy, retry": nothing was stored) is sent again after the
    retryAfterSeconds it names, as a client does; its latency runs from the first attempt.
    Returns (sends that did not succeed, each answer printed; retries)."""
    failed = retried = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as http:
        for send in inputs:
            started = time.perf_counter()
            while True:
                answer = await http.post(
                    "/graphql", json={"query": SEND, "variables": {"input": send}}
                )
                body = answer.json()
                wait = retry_after(body)
                if wait is None:
                    break
                retried += 1
                await asyncio.sleep(wait)
            latencies.append(time.perf_counter() - started)
            result = (body.get("data") or {}).get("sendEmail") or {}
            if result.get("__typename") != "SendEmailSuccess":
                failed += 1
                print(json.dumps({"send_failed": body}), file=sys.stderr, flush=True)
    return failed, retried


def retry_after(body: dict[str, Any]) -> float | None:
    """The seconds a SERVICE_UNAVAILABLE answer asks to wait before trying again, else None."""
    for error in body.get("errors") or ():
        extensions = error.get("extensions") or {}
        if extensions.get("code") == "SERVICE_UNAVAILABLE":
            return float(extensions.get("retryAfterSeconds") or 1)
    return None


async def run_graphql(
    urls: dict[str, str],
    n: int,
    domains: int,
    items: list[tuple[str, bytes]],
    sink_status: Path,
    servers: dict[str, int],
    work: Path,
    clients: int,
) -> dict[str, Any]:
    """Flow mode as a user drives it: ``clients`` users, each logged in over GraphQL, call
    ``sendEmail`` for their share of the corpus against a `mailhub api` process while a
    `mailhub worker` delivers to the sink."""
    changed = api_settings_changed(n, clients)
    print(json.dumps({"settings_changed": changed}), flush=True)
    async with bench_system(urls, domains) as (system, settings):
        processes: list[subprocess.Popen[bytes]] = []
        try:
            users = [(f"u{i}@client.bench.test", f"bench password {i}") for i in range(clients)]
            for email, password in users:
                await system.accounts.create_user(email, password, "Bench Sender")
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            env = service_env(settings)
            api = start_service("api", ["api", "--port", str(port)], {**env, **changed}, work)
            worker = start_service("worker", ["worker"], env, work)
            processes = [api, worker]
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
                await wait_healthy(http, api)
                tokens = [await login(http, email, password) for email, password in users]
            inputs = [send_input(rcpt, raw) for rcpt, raw in items]
            await asyncio.sleep(4.0)  # started and idle: process start-up is not sending time
            watched = {**servers, "api": api.pid, "worker": worker.pid}
            cpu_before = {name: cpu_of(pid) for name, pid in watched.items()}
            own_before = time.process_time()
            counting = bool(os.environ.get("BENCH_COMMANDS"))
            before = {name: counted_commands(work, name) for name in ("api", "worker") if counting}
            spies = profile_start(
                {"api": api.pid, "worker": worker.pid, "mongodb": servers["mongodb"]}
            )
            base_count = read_sink(sink_status)[0]
            waiting = asyncio.create_task(wait_sink(sink_status, base_count, base_count + n, 900))
            latencies: list[float] = []
            t0 = time.time()
            answers = await asyncio.gather(
                *(
                    client(base_url, tokens[i], inputs[i::clients], latencies)
                    for i in range(clients)
                )
            )
            accepted_at = time.time()
            cpu_accepted = {name: cpu_of(pid) - cpu_before[name] for name, pid in watched.items()}
            own_accepted = time.process_time() - own_before
            failed, retried = sum(a[0] for a in answers), sum(a[1] for a in answers)
            accepted = n - failed
            if failed:  # refused sends never reach the sink: wait for the accepted ones only
                waiting.cancel()
                waiting = asyncio.create_task(
                    wait_sink(sink_status, base_count, base_count + accepted, 900)
                )
            count, last, first, timeline = await waiting
            profile_stop(spies)
            cpu = {name: round(cpu_of(pid) - cpu_before[name], 1) for name, pid in watched.items()}
            delivered = count - base_count
            result = {
                "mode": "graphql",
                "clients": clients,
                "settings_changed": changed,
                "accepted": accepted,
                "failed": failed,
                "retried": retried,  # SERVICE_UNAVAILABLE answers, sent again
                "delivered": delivered,
                "accepted_msgs_per_s": round(accepted / (accepted_at - t0), 1),
                "msgs_per_s": round(delivered / (last - t0), 1) if last > t0 else None,
                "seconds_to_accept": round(accepted_at - t0, 2),
                "seconds_to_deliver": round(last - t0, 2),
                "send_p50_ms": round(1000 * (percentile(latencies, 50) or 0), 1),
                "send_p99_ms": round(1000 * (percentile(latencies, 99) or 0), 1),
                "first_delivery_after_s": round(first - t0, 2) if first else None,
                # delivered in each second after the first delivery
                "per_second": [b - a for a, b in zip([0, *timeline], timeline, strict=False)],
                # until the last sendEmail answered, per accepted message
                "cpu_ms_per_send": {
                    **{k: round(1000 * v / max(1, accepted), 2) for k, v in cpu_accepted.items()},
                    "clients": round(1000 * own_accepted / max(1, accepted), 2),
                },
                # until the sink counted every message
                "cpu_s": cpu,
            }
            if counting:
                await asyncio.sleep(1.0)  # mongo_commands writes its counts every half second
                for name in before:
                    after = counted_commands(work, name)
                    result[f"{name}_per_send"] = per_send(after, before[name], accepted)
            return result
        finally:
            for process in processes:
                await stop(process)


def ratios(mailhub: dict[str, Any], postfix: dict[str, Any]) -> dict[str, float | None]:
    """mailhub ÷ Postfix in the same run: end to end (all delivered) and, in graphql mode,
    accepted (sendEmail answers against SMTP 250s)."""
    out = {}
    for name, ours, theirs in (
        ("delivered", mailhub.get("msgs_per_s"), postfix.get("msgs_per_s")),
        ("accepted", mailhub.get("accepted_msgs_per_s"), postfix.get("inject_msgs_per_s")),
    ):
        out[name] = round(ours / theirs, 2) if ours and theirs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--mode", choices=["flow", "drain", "graphql"], default="flow")
    # graphql mode: GraphQL clients (one user each); Postfix gets as many SMTP connections
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/peer-bench"))
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--skip-mailhub", action="store_true")
    a = ap.parse_args()
    base = Path(a.base)
    work = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    sink_status = work / "sink.status"
    sink = start_sink(base, sink_status)
    stack = EmbeddedStack(work / "servers")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "database": database_facts(),
        "n": a.n,
        "domains": a.domains,
    }
    try:
        time.sleep(1.0)
        if not a.skip_postfix:
            results["postfix"] = run_postfix(base, a.n, sink_status, a.clients)
            print(json.dumps({"postfix": results["postfix"]}), flush=True)
        if not a.skip_mailhub:
            stack.start(mongo=True, redis=True, typesense=False)
            urls = {"mongodb": stack.url("mongodb"), "redis": stack.url("redis")}
            servers = {srv.name: srv.process.pid for srv in stack.servers}
            servers["sink"] = sink.pid
            items = corpus(base, a.n, a.domains)
            if a.mode == "graphql":
                results["mailhub"] = asyncio.run(
                    run_graphql(urls, a.n, a.domains, items, sink_status, servers, work, a.clients)
                )
            else:
                results["mailhub"] = asyncio.run(
                    run_mailhub(urls, a.n, a.domains, items, sink_status, a.mode, servers, work)
                )
            print(json.dumps({"mailhub": results["mailhub"]}), flush=True)
            if "postfix" in results:
                results["ratio"] = ratios(results["mailhub"], results["postfix"])
    finally:
        stack.stop()
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        shutil.rmtree(work / "servers", ignore_errors=True)  # the logs stay
    print(f"logs: {work}", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
