"""Inbound benchmark: mailhub's MX next to the stack an operator would run instead, same run.

    .venv/bin/python bench/inbound.py [--n 1500] [--conc 20] [--rounds 1] [--mx-processes N]
                                      [--compare-log-level] [--no-fullstack] [--skip-postfix]
                                      [--no-floor]

Every server gets the same load client (``peers/smtpload.py``), the same fixed-seed inbound mix
(70% ~2 KB text, 25% ~50 KB HTML, 5% ~1 MB attachment) and the same 20 connections, one after
the other in each round (a new seed per round, the same for every server):

1. **bare Postfix** (``peers/setup.sh``: virtual domain bench.test → Maildir, Postfix defaults);
2. **mailhub**: ``mailhub mx`` as an operator runs it, with **default settings**: the benchmark
   sets only what a deployment must (database/Redis/Typesense URLs, hostname, secret, DNS
   servers, the port, the metrics port; ``MAILHUB_MX_PROCESSES`` only with ``--mx-processes``)
   and prints every other setting it passes. Every message goes
   through SPF/DKIM/DMARC (dnsmasq publishes SPF/DMARC for the client domain), the spam model and
   the durable group-committed store before its 250 (embedded SecantusDB, Redis, Typesense);
3. **the full stack** (``peers/fullstack_setup.sh``: Postfix + rspamd milter + Redis Bayes +
   Dovecot LMTP writing indexed Maildir; set up once under ``--fs-base``, Bayes trained on the
   same SpamAssassin corpus) — what an operator deploys to do mailhub's MX work;
DNS: the benchmark's dnsmasq serves the sender's records with TTL ``--dns-ttl`` (default 0, so
the MX's resolver cache never holds them and every message asks again); a variant with
``DNS_TTL=N`` (``--variant cached:DNS_TTL=300``) gets its own dnsmasq serving them with TTL N,
to price the lookups in the same run. The TTL is printed with each mailhub's settings. The
full stack keeps its own dnsmasq (peers/fullstack_setup.sh; rspamd keeps no DNS cache of its
own and asks it every time, as it would ask a local caching resolver).

4. with ``--compare-log-level``: mailhub again, identical but for ``MAILHUB_LOG_LEVEL=WARNING``
   (its own processes and database), to price the default log level in the same run;
5. the peers' **Python floor** (``fsync_server.py``: bare aiosmtpd that writes each message to a
   file and fsyncs it before 250; one process).

For each run: accepted msg/s, end-of-DATA → 250 p50/p99, server CPU per accepted message (every
process of that server, children included), and for mailhub the database's CPU and the
**documents written per message** (a pymongo CommandListener in every MX process counts the
documents each insert/update command carries). mailhub's stored count must equal its accepted
count. For mailhub also **where end of DATA → 250 went** ("stages"): the MX's own
``mailhub_mx_stage_seconds`` and ``mailhub_mx_commit_*`` histograms (docs/operations.md), read
from its ``/metrics`` before and after the run — each stage's mean and the bucket bounds of its
p50/p99, the group commits' size and length, and the share of the time the MX was committing.
Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.adapters.metrics import MX_STAGES  # noqa: E402
from app.config import Settings  # noqa: E402
from app.embedded import EmbeddedStack, database_facts, free_port  # noqa: E402
from tests.support.dnsmasq import DnsServer  # noqa: E402

FULLSTACK_PORT = 2527  # fixed by peers/fullstack_setup.sh
POSTFIX_PORT = 2526  # fixed by peers/setup.sh


def peers_dir() -> Path:
    for candidate in (
        os.environ.get("MAILHUB_PEERS_DIR"),
        ROOT.parent / "shared" / "peers",
    ):
        if candidate and (Path(candidate) / "smtpload.py").exists():
            return Path(candidate)
    raise SystemExit(f"{ROOT.parent / 'shared' / 'peers'} not found: set MAILHUB_PEERS_DIR")


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def settle() -> None:
    """Let the previous server's deferred disk writes land before the next one is measured."""
    os.sync()
    time.sleep(3)


# --- bare Postfix --------------------------------------------------------------------------


def start_postfix(peers: Path, base: Path) -> int:
    if not (base / "etc" / "main.cf").exists():
        subprocess.run(
            ["bash", str(peers / "setup.sh")], env={**os.environ, "BASE": str(base)}, check=True
        )
    subprocess.run(["postfix", "-c", str(base / "etc"), "start"], check=False, capture_output=True)
    wait_port(POSTFIX_PORT)
    return int((base / "spool" / "pid" / "master.pid").read_text().split()[0])


def clean_maildirs(base: Path) -> None:
    for path in (base / "mail").glob("*/*/new/*"):
        path.unlink()


def postfix_queue_empty(base: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = [
            p
            for d in ("incoming", "active", "deferred", "maildrop")
            for p in (base / "spool" / d).rglob("*")
            if p.is_file()
        ]
        if not queued:
            return
        time.sleep(0.5)


# --- the full stack (Postfix + rspamd milter + Redis + Dovecot LMTP) -------------------------


class FullStack:
    """The kit's full-stack peer under ``base``: set up once (trains Bayes), started here if it
    was not running, stopped again at the end only if this run started it."""

    def __init__(self, peers: Path, base: Path) -> None:
        self.peers = peers
        self.base = base
        self.started = False

    def _ctl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(
            ["bash", str(self.peers / "fullstack_ctl.sh"), *args],
            env={**os.environ, "FS_BASE": str(self.base)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and out.returncode != 0:
            raise SystemExit(f"fullstack_ctl.sh {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout

    def start(self) -> None:
        if not (self.base / "fullstack.env").exists():
            print(f"== setting up the full-stack peer in {self.base} (once, ~1-2 min)", flush=True)
            subprocess.run(
                ["bash", str(self.peers / "fullstack_setup.sh")],
                env={**os.environ, "FS_BASE": str(self.base)},
                check=True,
                timeout=1200,
                stdout=subprocess.DEVNULL,
            )
            self.started = True  # setup leaves it running
        if "postfix  running" not in self._ctl("status"):
            if port_busy(FULLSTACK_PORT):
                raise SystemExit(f"127.0.0.1:{FULLSTACK_PORT} is taken by another instance")
            self._ctl("start")
            self.started = True
        wait_port(FULLSTACK_PORT)

    def pids(self) -> dict[str, int]:
        out = {}
        for line in self._ctl("pids").split():
            name, _, pid = line.partition("=")
            if pid:
                out[name] = int(pid)
        return out

    def watch(self) -> list[str]:
        return [
            f"{name}={pid}:tree" if name in ("postfix", "rspamd", "dovecot") else f"{name}={pid}"
            for name, pid in self.pids().items()
        ]

    def clean(self) -> None:
        self._ctl("clean")

    def stop(self) -> None:
        if self.started:
            self._ctl("stop", check=False)


# --- mailhub ---------------------------------------------------------------------------------


def read_commands(directory: Path) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {"commands": {}, "documents": {}}
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for kind in total:
            for key, n in data.get(kind, {}).items():
                total[kind][key] = total[kind].get(key, 0) + n
    return total


def command_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        kind: {
            k: v - before[kind].get(k, 0)
            for k, v in sorted(after[kind].items())
            if v - before[kind].get(k, 0)
        }
        for kind in after
    }


WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")


@dataclass
class Mailhub:
    """One `mailhub mx` deployment: its processes, its own database, its own port."""

    name: str
    env: dict[str, str]  # every MAILHUB_* setting it runs with
    shown: dict[str, str]  # the settings the benchmark chose (printed with the results)
    work: Path
    port: int
    root: Path | None = None  # another checkout's code (a "before" next to this one)
    process: subprocess.Popen[bytes] | None = None
    commands_dir: Path = field(default_factory=Path)

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            k.removeprefix("MAILHUB_").lower(): v
            for k, v in self.env.items()
            if k != "MAILHUB_DNS_SERVERS"
        }
        return Settings(**values, _env_file=None)  # type: ignore[call-arg]

    def start(self) -> None:
        asyncio.run(prepare_mailhub(self.settings()))
        self.commands_dir = self.work / f"commands-{self.name}"
        self.commands_dir.mkdir(parents=True)
        root = self.root or ROOT
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import mongo_commands; "
            f"mongo_commands.count_commands({str(self.commands_dir)!r}); sys.path.pop(0); "
            "from app.cli import main; raise SystemExit(main(['mx']))"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root), **self.env},
            # Both streams into one file, as a service manager would keep them: structlog
            # writes to stdout, the stdlib loggers (aiosmtpd's among them) to stderr.
            stdout=open(self.work / f"{self.name}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        time.sleep(2.0)  # every worker process listening

    def log_lines(self) -> int:
        path = self.work / f"{self.name}.log"
        return sum(1 for _ in path.open("rb")) if path.exists() else 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def prepare_mailhub(settings: Settings) -> None:
    from app.bootstrap import build_system

    system = await build_system(settings)
    try:
        await system.accounts.add_domain("bench.test")
        for n in range(50):
            await system.accounts.create_user(f"u{n}@bench.test", "bench password", f"User {n}")
    finally:
        await system.close()


async def stored_count(settings: Settings) -> int:
    from app.adapters.mongo import Mongo

    mongo = Mongo.open(settings.mongodb_uri or "", settings.mongodb_database)
    try:
        return await mongo.db.mailbox_items.count_documents({})
    finally:
        await mongo.close()


# --- load and results ------------------------------------------------------------------------


def load(
    peers: Path,
    port: int,
    n: int,
    conc: int,
    watch: list[str],
    extra: list[str],
    cache: Path,
    seed: int,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(peers / "smtpload.py"),
        "--port",
        str(port),
        "--n",
        str(n),
        "--conc",
        str(conc),
        "--mix",
        "inbound",
        "--seed",
        str(seed),
        "--timeout",
        "900",
        "--cache-dir",
        str(cache),
        *extra,
    ]
    for w in watch:
        argv += ["--watch", w]
    before = os.getloadavg()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False)
    if out.returncode != 0:
        raise SystemExit(f"smtpload failed: {out.stderr[-2000:]}")
    run: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    run["loadavg_before"] = [round(x, 2) for x in before]
    return run


def cpu_per_message(
    run: dict[str, Any], names: list[str], phase: str = "cpu_during_send"
) -> dict[str, float]:
    """Server CPU milliseconds per accepted message while sending (smtpload's process sampling),
    per watched server and in all ("total"); ``phase="cpu_until_delivered"``: until the last
    message reached its Maildir (a peer's delivery after its 250 included)."""
    cpu = run.get(phase) or {}
    accepted = run.get("accepted") or 0
    out = {
        name: round(1000 * cpu[f"{name}_cpu_s"] / accepted, 2)
        for name in names
        if accepted and f"{name}_cpu_s" in cpu
    }
    out["total"] = round(sum(out.values()), 2)
    return out


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [r[key] for r in runs if r.get(key) is not None]

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    rates = col("accept_msgs_per_s")
    out = {
        "name": name,
        "runs": len(runs),
        "accepted": sum(r["accepted"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "msgs_per_s": (min(rates), statistics.median(rates), max(rates)) if rates else None,
        "p50_ms": median(col("eod_to_250_p50_ms")),
        "p99_ms": median(col("eod_to_250_p99_ms")),
        "server_cpu_ms_per_msg": median([r["cpu_ms_per_msg"]["total"] for r in runs]),
    }
    if runs and "documents_written_per_msg" in runs[0]:
        out["documents_written_per_msg"] = median([r["documents_written_per_msg"] for r in runs])
        out["mx_cpu_ms_per_msg"] = median([r["cpu_ms_per_msg"]["mailhub"] for r in runs])
        out["database_cpu_ms_per_msg"] = median([r["cpu_ms_per_msg"]["database"] for r in runs])
        out["log_lines_per_msg"] = median([r["log_lines_per_msg"] for r in runs])
    return out


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports on loopback."""
    while True:
        first = free_port()
        try:
            for port in range(first, first + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


Samples = dict[tuple[str, str, str], float]  # (sample name, stage, le) -> value


def scrape_stages(ports: list[int]) -> Samples:
    """The MX's stage and group-commit histograms, summed over its processes' /metrics."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for port in ports:
        try:
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
                text = page.read().decode()
        except OSError:
            continue  # a process without the metrics (another checkout's code)
        for family in text_string_to_metric_families(text):
            if not family.name.startswith(("mailhub_mx_stage", "mailhub_mx_commit")):
                continue
            for sample in family.samples:
                key = (sample.name, sample.labels.get("stage", ""), sample.labels.get("le", ""))
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def stage_summary(
    before: Samples, after: Samples, seconds: float, processes: int
) -> dict[str, Any]:
    """Where end of DATA → 250 went during one run (from the two scrapes around it): each
    stage's mean and bucket-bound p50/p99 in ms, the group commits' mean length and size, and
    the share of each process's time spent committing."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}

    def histogram(name: str, stage: str = "") -> dict[str, Any] | None:
        count = delta.get((f"{name}_count", stage, ""), 0.0)
        if not count:
            return None
        buckets = sorted(
            (float(le), n)
            for (sample, s, le), n in delta.items()
            if sample == f"{name}_bucket" and s == stage
        )

        def bound(q: float) -> float:  # the upper bound of the bucket the quantile falls in
            return next(le for le, n in buckets if n >= q * count)

        total = delta[(f"{name}_sum", stage, "")]
        return {
            "count": int(count),
            "mean": total / count,
            "sum": total,
            "p50": bound(0.5),
            "p99": bound(0.99),
        }

    out: dict[str, Any] = {}
    for stage in MX_STAGES:
        h = histogram("mailhub_mx_stage_seconds", stage)
        if h:
            out[stage] = {k: round(1000 * h[k], 1) for k in ("mean", "p50", "p99")}
    commit = histogram("mailhub_mx_commit_seconds")
    size = histogram("mailhub_mx_commit_messages")
    if commit and size:
        out["commit"] = {
            "count": commit["count"],
            "mean_ms": round(1000 * commit["mean"], 1),
            "p99_ms": round(1000 * commit["p99"], 1),
            "messages_mean": round(size["mean"], 1),
            "busy_share": round(commit["sum"] / (seconds * processes), 2),
        }
    return out


def show_stages(stages: dict[str, Any]) -> None:
    if not stages:
        return
    parts = [
        f"{s} {v['mean']} (p50 ≤{v['p50']:g}, p99 ≤{v['p99']:g})"
        for s, v in stages.items()
        if s != "commit"
    ]
    line = "   stages, ms mean: " + ", ".join(parts)
    if "commit" in stages:
        c = stages["commit"]
        line += (
            f"; group commits {c['count']}, {c['messages_mean']} msgs and {c['mean_ms']} ms each "
            f"(p99 ≤{c['p99_ms']:g}), committing {c['busy_share']:.0%} of the time"
        )
    print(line, flush=True)


def show(name: str, run: dict[str, Any], note: str = "") -> None:
    cpu = run["cpu_ms_per_msg"]
    parts = ", ".join(f"{k} {v}" for k, v in cpu.items() if k != "total")
    print(
        f"   {name:<16} {run['accept_msgs_per_s']:>7} msg/s  p50 {run['eod_to_250_p50_ms']} ms  "
        f"p99 {run['eod_to_250_p99_ms']} ms  CPU/msg {cpu['total']} ms ({parts}){note}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--conc", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--mx-processes",
        type=int,
        default=None,
        help="MAILHUB_MX_PROCESSES (default: not set, mailhub's default of one process: on two "
        "cores shared with the database, two MX processes cost ~25%% more CPU per message)",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="MAILHUB_MX_BATCH_MAX (default: not set)"
    )
    parser.add_argument("--skip-postfix", action="store_true", help="skip bare Postfix")
    parser.add_argument("--no-fullstack", action="store_true", help="skip the full-stack peer")
    parser.add_argument("--no-floor", action="store_true", help="skip the Python floor")
    parser.add_argument(
        "--compare-log-level",
        action="store_true",
        help="also run mailhub with MAILHUB_LOG_LEVEL=WARNING in the same rounds",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run mailhub with these MAILHUB_* settings in the same rounds (repeatable), "
        "e.g. mx1:MAILHUB_MX_PROCESSES=1; ROOT=<dir> runs another checkout's code (a 'before')",
    )
    tmp = Path(tempfile.gettempdir())
    parser.add_argument(
        "--pyspy",
        metavar="DIR",
        help="py-spy flame data (raw) of the MX processes during each mailhub run, into DIR",
    )
    parser.add_argument(
        "--dns-ttl",
        type=int,
        default=0,
        help="TTL of the sender domain's SPF/DMARC records as the benchmark's dnsmasq serves "
        "them (default 0: never cached, every message asks the server; a variant's "
        "DNS_TTL=N gets its own dnsmasq with that TTL)",
    )
    parser.add_argument("--fs-base", default=str(tmp / "fullstack-bench"))
    parser.add_argument("--out", default=str(tmp / "mailhub-bench-inbound.json"))
    args = parser.parse_args()

    peers = peers_dir()
    work = Path(tempfile.mkdtemp(prefix="mailhub-bench-"))
    base = Path(os.environ.get("BASE") or tmp / "peer-bench")
    stack = EmbeddedStack(work / "servers")

    def sender_dns(ttl: int) -> DnsServer:
        return DnsServer(
            txt={
                "client.bench.test": ["v=spf1 ip4:127.0.0.1 -all"],
                "_dmarc.client.bench.test": ["v=DMARC1; p=none"],
            },
            ttl=ttl,
        )

    dns = sender_dns(args.dns_ttl)
    dns_by_ttl = {args.dns_ttl: dns}  # and one more for each other DNS_TTL of a variant
    fullstack = None if args.no_fullstack else FullStack(peers, Path(args.fs_base))
    mailhubs: list[Mailhub] = []
    floor: subprocess.Popen[bytes] | None = None
    postfix_started = False
    results: dict[str, list[dict[str, Any]]] = {}
    started_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    try:
        postfix_pid = 0
        if not args.skip_postfix:
            postfix_pid = start_postfix(peers, base)
            postfix_started = True
        if fullstack is not None:
            fullstack.start()
        stack.start()
        dns.start()
        variants: list[tuple[str, dict[str, str]]] = [("mailhub", {})]
        if args.compare_log_level:
            variants.append(("mailhub-warning", {"MAILHUB_LOG_LEVEL": "WARNING"}))
        for spec in args.variant:
            name, _, pairs = spec.partition(":")
            values = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
            variants.append((f"mailhub-{name}", values))
        roots = {name: values.pop("ROOT", None) for name, values in variants}
        ttls = {name: values.pop("DNS_TTL", None) for name, values in variants}
        for name, extra in variants:
            port = free_port()
            ttl = args.dns_ttl if ttls[name] is None else int(ttls[name])
            if ttl not in dns_by_ttl:
                dns_by_ttl[ttl] = sender_dns(ttl).start()
            server = dns_by_ttl[ttl]
            # What a deployment must say (where its servers are, who it is); all else default.
            env = {
                "MAILHUB_MONGODB_URI": stack.url("mongodb"),
                "MAILHUB_MONGODB_DATABASE": name.replace("-", "_"),
                "MAILHUB_REDIS_URL": stack.url("redis"),
                "MAILHUB_REDIS_PREFIX": name,
                "MAILHUB_TYPESENSE_URL": stack.url("typesense"),
                "MAILHUB_TYPESENSE_API_KEY": stack.typesense_api_key,
                "MAILHUB_SECRET_KEY": "bench-secret-0123456789",
                "MAILHUB_HOSTNAME": "mx.bench.test",
                "MAILHUB_DNS_SERVERS": server.address,
                "MAILHUB_SMTP_PORT": str(port),
                # where end of DATA → 250 goes (docs/operations.md), read around each run; a
                # port per MX process from here
                "MAILHUB_METRICS_PORT": str(free_ports(args.mx_processes or 1)),
                **({"MAILHUB_MX_PROCESSES": str(args.mx_processes)} if args.mx_processes else {}),
                **({"MAILHUB_MX_BATCH_MAX": str(args.batch)} if args.batch else {}),
                **extra,
            }
            # Printed with the results: everything but the addresses and the secret.
            shown = {
                k: v
                for k, v in env.items()
                if k.startswith("MAILHUB_MX")
                or k in ("MAILHUB_LOG_LEVEL", "MAILHUB_METRICS_PORT")
                or k in extra
            }
            root = roots[name]
            if root:
                shown["code"] = root
            shown["dns_ttl"] = server.ttl  # of the sender's SPF/DMARC records (not a setting)
            mailhubs.append(Mailhub(name, env, shown, work, port, Path(root) if root else None))
        for hub in mailhubs:
            hub.start()
            print(
                f"== {hub.name}: mailhub mx on :{hub.port}; settings the benchmark sets beyond "
                f"addresses/hostname/secret: {hub.shown or 'none'} (everything else default)",
                flush=True,
            )
        floor_port = free_port()
        if not args.no_floor:
            floor = subprocess.Popen(
                [
                    sys.executable,
                    str(peers / "fsync_server.py"),
                    "--port",
                    str(floor_port),
                    "--dir",
                    str(work / "pyfloor"),
                    "--max-seconds",
                    "7200",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_port(floor_port)
        database = next(srv.process.pid for srv in stack.servers if srv.name == "mongodb")
        cache = work / "cache"
        print(f"== {started_at}, {os.cpu_count()} cores; {uptime_before}", flush=True)
        for round_no in range(1, args.rounds + 1):
            print(f"== round {round_no}", flush=True)
            # A new seed per round (the same for every server): a repeated corpus would only
            # measure mailhub's retry deduplication, which stores nothing.
            seed = 41 + round_no
            if postfix_started:
                postfix_queue_empty(base)
                clean_maildirs(base)
                settle()
                run = load(
                    peers,
                    POSTFIX_PORT,
                    args.n,
                    args.conc,
                    [f"postfix={postfix_pid}:tree"],
                    ["--wait-maildir", str(base / "mail"), "--wait-timeout", "600"],
                    cache,
                    seed,
                )
                run["cpu_ms_per_msg"] = cpu_per_message(run, ["postfix"])
                results.setdefault("postfix", []).append(run)
                show("postfix", run)
            for index, hub in enumerate(mailhubs):
                if index == 1 and fullstack is not None:
                    run_fullstack(fullstack, peers, args, cache, seed, results)
                run_mailhub(hub, peers, args, cache, seed, database, results)
            if fullstack is not None and len(mailhubs) == 1:
                run_fullstack(fullstack, peers, args, cache, seed, results)
            if floor is not None:
                settle()
                run = load(
                    peers, floor_port, args.n, args.conc, [f"pyfloor={floor.pid}"], [], cache, seed
                )
                run["cpu_ms_per_msg"] = cpu_per_message(run, ["pyfloor"])
                results.setdefault("pyfloor", []).append(run)
                show("pyfloor", run)
        summary = {name: summarize(name, runs) for name, runs in results.items() if runs}
        ratios = ratio_lines(summary)
        report = {
            "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
            "database": database_facts(),
            "started": started_at,
            "uptime_before": uptime_before,
            "uptime_after": subprocess.run(
                ["uptime"], capture_output=True, text=True
            ).stdout.strip(),
            "command": " ".join(sys.argv),
            "settings": {hub.name: hub.shown for hub in mailhubs},
            "summary": summary,
            "ratios": ratios,
            "runs": results,
        }
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(summary, indent=2))
        for line in ratios:
            print(line)
        print(f"== done; {report['uptime_after']}; JSON: {args.out}", flush=True)
        return 0
    finally:
        if floor is not None and floor.poll() is None:
            floor.terminate()
            floor.wait(30)
        for hub in mailhubs:
            hub.stop()
        if fullstack is not None:
            fullstack.stop()
        if postfix_started:
            subprocess.run(
                ["postfix", "-c", str(base / "etc"), "stop"], check=False, capture_output=True
            )
        for server in dns_by_ttl.values():
            server.stop()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_mailhub(
    hub: Mailhub,
    peers: Path,
    args: argparse.Namespace,
    cache: Path,
    seed: int,
    database: int,
    results: dict[str, list[dict[str, Any]]],
) -> None:
    assert hub.process is not None
    settle()
    settings = hub.settings()
    before = asyncio.run(stored_count(settings))
    commands_before = read_commands(hub.commands_dir)
    lines_before = hub.log_lines()
    spies = []
    if args.pyspy:  # py-spy is not a dependency: `pip install py-spy` into the venv first
        Path(args.pyspy).mkdir(parents=True, exist_ok=True)
        for name, pid in ((hub.name, hub.process.pid), ("database", database)):
            spies.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--subprocesses",
                        "--gil",
                        "-p",
                        str(pid),
                        "-r",
                        "100",
                        "-f",
                        "raw",
                        "-o",
                        f"{args.pyspy}/{name}-{seed}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)
    processes = int(hub.env.get("MAILHUB_MX_PROCESSES", "1"))
    metrics_ports = [int(hub.env["MAILHUB_METRICS_PORT"]) + i for i in range(processes)]
    stages_before = scrape_stages(metrics_ports)
    run = load(
        peers,
        hub.port,
        args.n,
        args.conc,
        [f"mailhub={hub.process.pid}:tree", f"database={database}"],
        [],
        cache,
        seed,
    )
    run["stages"] = stage_summary(
        stages_before, scrape_stages(metrics_ports), run["send_wall_s"], processes
    )
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(60)
    time.sleep(1.0)  # the command counters are written every half second
    run["stored"] = asyncio.run(stored_count(settings)) - before
    run["settings"] = hub.shown
    accepted = max(run["accepted"], 1)
    commands = command_delta(commands_before, read_commands(hub.commands_dir))
    run["mongodb_commands"] = commands
    written = sum(n for k, n in commands["documents"].items() if k.split()[0] in WRITE_COMMANDS)
    run["documents_written_per_msg"] = round(written / accepted, 2)
    run["commands_per_msg"] = round(sum(commands["commands"].values()) / accepted, 2)
    run["log_lines_per_msg"] = round((hub.log_lines() - lines_before) / accepted, 2)
    run["cpu_ms_per_msg"] = cpu_per_message(run, ["mailhub", "database"])
    results.setdefault(hub.name, []).append(run)
    show(
        hub.name,
        run,
        f"  stored {run['stored']}/{run['accepted']}  docs written/msg "
        f"{run['documents_written_per_msg']}  commands/msg {run['commands_per_msg']}  "
        f"log lines/msg {run['log_lines_per_msg']}",
    )
    show_stages(run["stages"])
    if run["stored"] != run["accepted"]:
        print("   !! stored count differs from accepted count", flush=True)


def run_fullstack(
    fullstack: FullStack,
    peers: Path,
    args: argparse.Namespace,
    cache: Path,
    seed: int,
    results: dict[str, list[dict[str, Any]]],
) -> None:
    fullstack.clean()  # waits for an empty queue, then empties the mailboxes and indexes
    settle()
    watch = fullstack.watch()
    run = load(
        peers,
        FULLSTACK_PORT,
        args.n,
        args.conc,
        watch,
        ["--wait-maildir", str(fullstack.base / "mail"), "--wait-timeout", "600"],
        cache,
        seed,
    )
    names = [w.split("=")[0] for w in watch]
    run["cpu_ms_per_msg"] = cpu_per_message(run, names)
    run["cpu_ms_per_msg_until_delivered"] = cpu_per_message(run, names, "cpu_until_delivered")
    results.setdefault("fullstack", []).append(run)
    show(
        "fullstack",
        run,
        f"  delivered {run.get('delivered')}, CPU/msg until delivered "
        f"{run['cpu_ms_per_msg_until_delivered']['total']} ms",
    )


def ratio_lines(summary: dict[str, Any]) -> list[str]:
    """mailhub's median rate against each peer's, and the log level's price."""

    def rate(name: str) -> float | None:
        s = summary.get(name)
        return s["msgs_per_s"][1] if s and s.get("msgs_per_s") else None

    lines = []
    ours = rate("mailhub")
    variants = [name for name in summary if name.startswith("mailhub-")]
    for peer in ("fullstack", "postfix", "pyfloor", *variants):
        theirs = rate(peer)
        if ours and theirs:
            lines.append(f"mailhub / {peer}: {ours} / {theirs} msg/s = {ours / theirs:.2f}x")
    return lines


if __name__ == "__main__":
    sys.exit(main())
