"""Inbound benchmark: mailhub's MX next to Postfix, same load client, same message mix, same run.

    .venv/bin/python bench/inbound.py [--n 3000] [--conc 20] [--rounds 3] [--mx-processes 2]

What it does (everything on loopback, bounded in time):
1. the Postfix peer from ``shared/peers/setup.sh`` (virtual domain bench.test → Maildir), started
   with ``postfix -c $BASE/etc start``;
2. mailhub: embedded SecantusDB, Redis and Typesense, dnsmasq publishing SPF/DMARC for the client
   domain, hosted domain ``bench.test`` with users u0..u49, and ``mailhub mx`` as its own
   process(es) — so every message goes through SPF/DKIM/DMARC, the spam model and the durable
   group-committed store before its 250;
3. ``peers/smtpload.py`` (fixed-seed inbound mix: 70% ~2 KB, 25% ~50 KB HTML, 5% ~1 MB
   attachment; 20 connections) against each, alternating, ``--rounds`` times;
4. checks that mailhub stored exactly what it accepted, prints a table (with each server's CPU per
   accepted message) and writes JSON.
5. the same load against the peers' "Python floor" (``fsync_server.py``: bare aiosmtpd that only
   writes each message to a file and fsyncs it before 250; one process, as the kit runs it) —
   what any Python MX on aiosmtpd starts from on this machine (``--no-floor`` skips it).
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from tests.support.dnsmasq import DnsServer  # noqa: E402


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


def start_postfix(peers: Path, base: Path) -> int:
    if not (base / "etc" / "main.cf").exists():
        subprocess.run(
            ["bash", str(peers / "setup.sh")], env={**os.environ, "BASE": str(base)}, check=True
        )
    subprocess.run(["postfix", "-c", str(base / "etc"), "start"], check=False, capture_output=True)
    wait_port(2526)
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
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False)
    if out.returncode != 0:
        raise SystemExit(f"smtpload failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def cpu_per_message(run: dict[str, Any]) -> dict[str, float | None]:
    """Server CPU milliseconds per accepted message while sending (smtpload's process sampling)."""
    cpu = run.get("cpu_during_send") or {}
    accepted = run.get("accepted") or 0
    return {
        name: round(1000 * cpu[f"{name}_cpu_s"] / accepted, 2)
        if accepted and f"{name}_cpu_s" in cpu
        else None
        for name in ("mailhub", "database")
    }


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [r[key] for r in runs if r.get(key) is not None]

    rates = col("accept_msgs_per_s")
    return {
        "name": name,
        "runs": len(runs),
        "accepted": sum(r["accepted"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "msgs_per_s": (min(rates), statistics.median(rates), max(rates)) if rates else None,
        "p50_ms": statistics.median(col("eod_to_250_p50_ms")) if col("eod_to_250_p50_ms") else None,
        "p99_ms": statistics.median(col("eod_to_250_p99_ms")) if col("eod_to_250_p99_ms") else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--conc", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mx-processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--no-floor", action="store_true", help="skip the Python floor")
    default_out = Path(tempfile.gettempdir()) / "mailhub-bench-inbound.json"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()

    peers = peers_dir()
    work = Path(tempfile.mkdtemp(prefix="mailhub-bench-"))
    base = Path(os.environ.get("BASE") or Path(tempfile.gettempdir()) / "peer-bench")
    stack = EmbeddedStack(work / "servers")
    dns = DnsServer(
        txt={
            "client.bench.test": ["v=spf1 ip4:127.0.0.1 -all"],
            "_dmarc.client.bench.test": ["v=DMARC1; p=none"],
        }
    )
    mx: subprocess.Popen[bytes] | None = None
    floor: subprocess.Popen[bytes] | None = None
    postfix_started = False
    results: dict[str, list[dict[str, Any]]] = {"postfix": [], "mailhub": [], "pyfloor": []}
    try:
        postfix_pid = 0
        if not args.skip_postfix:
            postfix_pid = start_postfix(peers, base)
            postfix_started = True
        stack.start()
        dns.start()
        port = free_port()
        env = {
            "MAILHUB_MONGODB_URI": stack.url("mongodb"),
            "MAILHUB_MONGODB_DATABASE": "bench",
            "MAILHUB_REDIS_URL": stack.url("redis"),
            "MAILHUB_REDIS_PREFIX": "bench",
            "MAILHUB_TYPESENSE_URL": stack.url("typesense"),
            "MAILHUB_TYPESENSE_API_KEY": stack.typesense_api_key,
            "MAILHUB_SECRET_KEY": "bench-secret-0123456789",
            "MAILHUB_HOSTNAME": "mx.bench.test",
            "MAILHUB_DNS_SERVERS": dns.address,
            "MAILHUB_SMTP_PORT": str(port),
            "MAILHUB_MX_PROCESSES": str(args.mx_processes),
            "MAILHUB_MX_BATCH_MAX": str(args.batch),
            "MAILHUB_LOG_LEVEL": "WARNING",
        }
        settings = Settings(
            **{
                k.removeprefix("MAILHUB_").lower(): v
                for k, v in env.items()
                if k not in ("MAILHUB_DNS_SERVERS",)
            },
            _env_file=None,
        )  # type: ignore[arg-type]
        asyncio.run(prepare_mailhub(settings))
        mx = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "mx"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=open(work / "mx.log", "wb"),
        )  # noqa: SIM115
        wait_port(port)
        time.sleep(1.0)  # every worker process listening
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
        cache = work / "cache"
        for round_no in range(1, args.rounds + 1):
            print(f"== round {round_no}", flush=True)
            # A new seed per round (the same for both servers): a repeated corpus would only
            # measure mailhub's retry deduplication, which stores nothing.
            seed = 41 + round_no
            if postfix_started:
                postfix_queue_empty(base)
                clean_maildirs(base)
                run = load(
                    peers,
                    2526,
                    args.n,
                    args.conc,
                    [f"postfix={postfix_pid}:tree"],
                    ["--wait-maildir", str(base / "mail"), "--wait-timeout", "600"],
                    cache,
                    seed,
                )
                results["postfix"].append(run)
                print(
                    f"   postfix  {run['accept_msgs_per_s']:>7} msg/s  "
                    f"p50 {run['eod_to_250_p50_ms']} ms  "
                    f"p99 {run['eod_to_250_p99_ms']} ms",
                    flush=True,
                )
            before = asyncio.run(stored_count(settings))
            database = next(srv.process.pid for srv in stack.servers if srv.name == "mongodb")
            run = load(
                peers,
                port,
                args.n,
                args.conc,
                [f"mailhub={mx.pid}:tree", f"database={database}"],
                [],
                cache,
                seed,
            )
            after = asyncio.run(stored_count(settings))
            run["stored"] = after - before
            results["mailhub"].append(run)
            run["cpu_ms_per_msg"] = cpu_per_message(run)
            print(
                f"   mailhub  {run['accept_msgs_per_s']:>7} msg/s  "
                f"p50 {run['eod_to_250_p50_ms']} ms  "
                f"p99 {run['eod_to_250_p99_ms']} ms  stored {run['stored']}/{run['accepted']}  "
                f"CPU/msg: mx {run['cpu_ms_per_msg']['mailhub']} ms, "
                f"database {run['cpu_ms_per_msg']['database']} ms",
                flush=True,
            )
            if run["stored"] != run["accepted"]:
                print("   !! stored count differs from accepted count", flush=True)
            if floor is not None:
                run = load(
                    peers, floor_port, args.n, args.conc, [f"pyfloor={floor.pid}"], [], cache, seed
                )
                results["pyfloor"].append(run)
                print(
                    f"   pyfloor  {run['accept_msgs_per_s']:>7} msg/s  "
                    f"p50 {run['eod_to_250_p50_ms']} ms  "
                    f"p99 {run['eod_to_250_p99_ms']} ms",
                    flush=True,
                )
        summary = {name: summarize(name, runs) for name, runs in results.items() if runs}
        report = {
            "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
            "command": " ".join(sys.argv),
            "summary": summary,
            "runs": results,
        }
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(summary, indent=2))
        return 0
    finally:
        if floor is not None and floor.poll() is None:
            floor.terminate()
            floor.wait(30)
        if mx is not None and mx.poll() is None:
            mx.send_signal(signal.SIGTERM)
            try:
                mx.wait(30)
            except subprocess.TimeoutExpired:
                mx.kill()
        if postfix_started:
            subprocess.run(
                ["postfix", "-c", str(base / "etc"), "stop"], check=False, capture_output=True
            )
        dns.stop()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
