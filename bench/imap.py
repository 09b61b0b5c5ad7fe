"""`mailhub imap` next to Dovecot, measured the same way with the same client (mbsync).

    .venv/bin/python bench/imap.py [--messages 10000] [--idle-rounds 30]

Starts its own SecantusDB + Redis, stores N messages for one user through the inbound service
(the MX's path minus SMTP), runs `mailhub imap` as a separate process, and a private Dovecot
(Debian dovecot-imapd, its own config dir, loopback only) serving a Maildir holding the very
same raw messages (read back from GridFS). Both over STARTTLS with one self-signed cert.

Measured for each server, in the same run:
  - full sync: `mbsync -a` of INBOX into an empty Maildir
  - incremental: 100 flag changes made on the server (mailhub: one mailbox-service call, as
    GraphQL does; Dovecot: `doveadm flags add`), then `mbsync -a` again
  - IDLE → EXISTS: a client IDLEs on INBOX; a message is delivered (mailhub: inbound service,
    whose change reaches the IMAP process over Redis pub/sub; Dovecot: a file renamed into
    Maildir/new, which Dovecot sees through inotify); the time until "* n EXISTS" is read
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.blob_batches import read_blobs  # noqa: E402
from app.bootstrap import build_system  # noqa: E402
from app.config import Settings  # noqa: E402
from app.domain.folders import Folder  # noqa: E402
from app.domain.parsing import parse_message  # noqa: E402
from app.domain.viewer import Viewer  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.services.inbound.group_commit import InboundStore  # noqa: E402
from app.services.inbound.pipeline import Envelope  # noqa: E402
from app.services.mailbox.changes import StateChange  # noqa: E402
from tests.support.imap import deliver, sample_message  # noqa: E402

DOMAIN = "bench.test"
SEED_BATCH = 500  # messages per group commit while seeding
PASSWORD = "bench-password-1"
CHANGES = 100
# Dovecot refuses to serve mail as root: the Maildir belongs to its own system user
MAIL_UID, MAIL_GID = (lambda p: (p.pw_uid, p.pw_gid))(__import__("pwd").getpwnam("dovecot"))


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def mbsync_config(directory: Path, port: int, user: str, password: str, cert: Path) -> Path:
    local = directory / "Maildir"
    local.mkdir(parents=True, exist_ok=True)
    config = directory / "mbsyncrc"
    config.write_text(
        f'IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass "{password}"\n'
        f"SSLType STARTTLS\nCertificateFile {cert}\nAuthMechs PLAIN\nPipelineDepth 50\n\n"
        "IMAPStore remote\nAccount a\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\n\n"
        "Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync All\n"
        "Expunge Both\nSyncState *\n"
    )
    return config


def timed_mbsync(config: Path) -> tuple[float, float]:
    """(seconds, the client's CPU seconds): mbsync's own CPU (TLS, parsing, Maildir writes)
    is part of both servers' times, so it is printed next to them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def start_profile(
    prefix: str | None, phase: str, target: subprocess.Popen[bytes]
) -> subprocess.Popen[bytes] | None:
    if not prefix:
        return None
    py_spy = shutil.which("py-spy") or Path(sys.executable).with_name("py-spy")
    out = f"{prefix}-{phase}.svg"
    profiler = subprocess.Popen(  # noqa: S603
        [str(py_spy), "record", "-r", "200", "-o", out, "--pid", str(target.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached
    return profiler


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(__import__("signal").SIGINT)
        profiler.wait(60)


def count_files(directory: Path) -> int:
    return sum(1 for sub in ("cur", "new") for _ in (directory / "Maildir/INBOX" / sub).glob("*"))


class IdleClient:
    def __init__(self, port: int, user: str, password: str) -> None:
        import ssl

        self.raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock: Any = self.raw
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.command(b"s STARTTLS")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.raw)
        self.file = self.sock.makefile("rb")
        self.command(f'l LOGIN "{user}" "{password}"'.encode())
        self.command(b"x SELECT INBOX")

    def command(self, line: bytes) -> None:
        tag = line.split(b" ", 1)[0]
        self.sock.sendall(line + b"\r\n")
        while True:
            got = self.file.readline()
            if not got:
                raise ConnectionError("closed")
            if got.startswith(tag + b" "):
                if not got.startswith(tag + b" OK"):
                    raise RuntimeError(got)
                return

    def idle(self) -> None:
        self.sock.sendall(b"i IDLE\r\n")
        while not self.file.readline().startswith(b"+"):
            pass

    def wait_exists(self) -> float:
        while True:
            line = self.file.readline()
            if line.endswith(b"EXISTS\r\n"):
                return time.monotonic()
            if not line:
                raise ConnectionError("closed")

    def done(self) -> None:
        self.sock.sendall(b"DONE\r\n")
        while not self.file.readline().startswith(b"i "):
            pass


async def idle_latencies(
    port: int, user: str, password: str, rounds: int, deliver_one: Any
) -> list[float]:
    client = await asyncio.to_thread(IdleClient, port, user, password)
    out = []
    for n in range(rounds):
        await asyncio.to_thread(client.idle)
        waiting = asyncio.create_task(asyncio.to_thread(client.wait_exists))
        await asyncio.sleep(0.2)  # the server has entered IDLE and subscribed
        started = time.monotonic()
        await deliver_one(n)
        out.append(await waiting - started)
        await asyncio.to_thread(client.done)
    return out


def dovecot_config(directory: Path, port: int, cert: Path, key: Path, user: str) -> Path:
    home = directory / "home"
    conf = directory / "dovecot.conf"
    conf.write_text(
        f"""base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {MAIL_UID}
mail_location = maildir:{home}/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
    )
    (home / user / "Maildir").mkdir(parents=True, exist_ok=True)
    return conf


async def seed(system: Any, to: str, raws: list[bytes]) -> None:
    """Store the mailbox the way the MX would, fast: the inbound service's own ``prepare``
    (the same message, blob and attachment documents, trace headers included) and its group
    commit (``InboundStore``: GridFS files, messages, views, threads, counters and change log
    in one transaction per batch), with batches of SEED_BATCH instead of the MX's
    ``mx_batch_max``. Every message comes through the same envelope and none is signed, so the
    SPF/DKIM/DMARC verdict is computed once; the spam model scores every message."""
    inbound = system.inbound
    recipient = await inbound.resolve_recipient(to)
    envelope = Envelope("127.0.0.1", "remote.test", "sender@remote.test", (recipient,))
    auth = await inbound.authenticator.authenticate(
        raws[0], client_ip="127.0.0.1", helo="remote.test",
        mail_from="sender@remote.test", from_domain="remote.test",
    )  # fmt: skip
    store = InboundStore(system.mongo, system.notifier, max_batch=SEED_BATCH)
    prepared = []
    for raw in raws:
        spam = inbound.scorer.score(raw)
        folder = Folder.SPAM if spam.is_spam else Folder.INBOX
        prepared.append(
            inbound.prepare(envelope, raw, parse_message(raw), auth, spam, folder.value,
                            [recipient], {})
        )  # fmt: skip
    for start in range(0, len(prepared), SEED_BATCH):
        await asyncio.gather(*(store.store(p) for p in prepared[start : start + SEED_BATCH]))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--idle-rounds", type=int, default=30)
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="record the mailhub imap process with py-spy during its syncs "
        "(PREFIX-full.svg, PREFIX-incremental.svg); the timings then include py-spy's cost",
    )
    args = parser.parse_args()
    if not shutil.which("mbsync") or not shutil.which("dovecot"):
        raise SystemExit("needs mbsync (isync) and dovecot (dovecot-imapd)")
    work = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    work.chmod(0o755)  # Dovecot's mail processes run as the dovecot user
    stack = EmbeddedStack(work / "servers")
    stack.start(typesense=False)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        cert, key = self_signed(work)
        imap_port, dovecot_port = free_port(), free_port()
        env = {
            "MAILHUB_MONGODB_URI": stack.url("mongodb"),
            "MAILHUB_MONGODB_DATABASE": "bench",
            "MAILHUB_REDIS_URL": stack.url("redis"),
            "MAILHUB_REDIS_PREFIX": "bench",
            "MAILHUB_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "MAILHUB_HOSTNAME": "mx.bench.test",
            "MAILHUB_IMAP_TLS_CERT": str(cert),
            "MAILHUB_IMAP_TLS_KEY": str(key),
        }
        settings = Settings(
            mongodb_uri=env["MAILHUB_MONGODB_URI"],
            mongodb_database="bench",
            redis_url=env["MAILHUB_REDIS_URL"],
            redis_prefix="bench",
            secret_key=env["MAILHUB_SECRET_KEY"],
            hostname="mx.bench.test",
            data_dir=work,
            _env_file=None,
        )
        system = await build_system(settings)
        await system.accounts.add_domain(DOMAIN)
        email = f"reader@{DOMAIN}"
        user = await system.accounts.create_user(email, PASSWORD, "Reader")
        viewer = Viewer(user["_id"], email)
        started = time.monotonic()
        await seed(system, email, [sample_message(n, email) for n in range(args.messages)])
        print(
            f"seeded {args.messages} messages in {time.monotonic() - started:.1f} s "
            f"(inbound prepare + group commit, {SEED_BATCH} a transaction); "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )

        # the same raw bytes into Dovecot's Maildir
        dovecot_dir = work / "dovecot"
        dovecot_dir.mkdir()
        conf = dovecot_config(dovecot_dir, dovecot_port, cert, key, email)
        cur = dovecot_dir / "home" / email / "Maildir"  # INBOX is the Maildir's root
        for sub in ("cur", "new", "tmp"):
            (cur / sub).mkdir(parents=True, exist_ok=True)
        items = (
            await system.mongo.db.mailbox_items.find({"user_id": user["_id"]})
            .sort("received_at", 1)
            .to_list()
        )
        messages = {
            m["_id"]: m
            for m in await system.mongo.db.messages.find({}, {"raw_blob_id": 1}).to_list()
        }
        for start in range(0, len(items), 500):  # the same bytes, 500 blobs per query
            batch = items[start : start + 500]
            blobs = await read_blobs(
                system.mongo.db, [messages[i["message_id"]]["raw_blob_id"] for i in batch]
            )
            for n, item in enumerate(batch, start):
                raw = blobs[messages[item["message_id"]]["raw_blob_id"]]
                (cur / "cur" / f"{1700000000 + n}.M{n}.bench:2,").write_bytes(raw)

        subprocess.run(
            ["chown", "-R", f"{MAIL_UID}:{MAIL_GID}", str(dovecot_dir / "home")], check=True
        )  # noqa: S603,S607
        processes.append(
            subprocess.Popen(
                ["dovecot", "-F", "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # noqa: S603,S607
        processes.append(
            subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "app.cli", "imap", "--port", str(imap_port)],
                env={**os.environ, **env},
                cwd=Path(__file__).resolve().parents[1],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_port(dovecot_port)
        wait_port(imap_port)

        results: dict[str, dict[str, Any]] = {}
        changes = min(CHANGES, args.messages)
        for name, port in (("mailhub", imap_port), ("Dovecot", dovecot_port)):
            directory = work / f"client-{name}"
            config = mbsync_config(directory, port, email, PASSWORD, cert)
            profiler = (
                start_profile(args.profile, "full", processes[1]) if name == "mailhub" else None
            )
            full, full_cpu = await asyncio.to_thread(timed_mbsync, config)
            stop_profile(profiler)
            assert count_files(directory) == args.messages, (name, count_files(directory))
            if name == "mailhub":
                ids = [str(i["_id"]) for i in items[:changes]]
                await system.mailbox_changes.update_items(
                    viewer, ids, StateChange(read=True, starred=True)
                )
            else:
                subprocess.run(  # noqa: S603,S607
                    ["doveadm", "-c", str(conf), "flags", "add", "-u", email, "\\Seen \\Flagged",
                     "mailbox", "INBOX", "uid", f"1:{changes}"], check=True,
                )  # fmt: skip
            profiler = (
                start_profile(args.profile, "incremental", processes[1])
                if name == "mailhub"
                else None
            )
            incremental, _ = await asyncio.to_thread(timed_mbsync, config)
            stop_profile(profiler)
            flagged = sum(
                1 for f in (directory / "Maildir/INBOX/cur").glob("*") if f.name.endswith("FS")
            )
            assert flagged == changes, (name, flagged)

            if name == "mailhub":

                async def deliver_one(n: int) -> None:
                    await deliver(system, email, [sample_message(100_000 + n, email)], 1)

            else:

                async def deliver_one(n: int) -> None:
                    tmp = cur / "tmp" / f"{1800000000 + n}.idle.bench"
                    tmp.write_bytes(sample_message(100_000 + n, email))
                    os.chown(tmp, MAIL_UID, MAIL_GID)
                    tmp.rename(cur / "new" / tmp.name)

            latencies = await idle_latencies(port, email, PASSWORD, args.idle_rounds, deliver_one)
            results[name] = {
                "full": full,
                "mbsync CPU in full": full_cpu,
                "incremental": incremental,
                "idle": latencies,
            }
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            shown = {k: round(v, 2) for k, v in results[name].items() if k != "idle"}
            print(name, shown, f"load average {load}", flush=True)

        print(
            f"\n{args.messages} messages, mbsync {subprocess.run(['mbsync', '--version'], capture_output=True, text=True).stdout.strip()}, STARTTLS\n"
        )
        print("| | full sync | incremental (100 flag changes) | IDLE → EXISTS p50 | p99 |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            idle = sorted(r["idle"]) or [float("nan")]
            p99 = idle[min(len(idle) - 1, int(len(idle) * 0.99))]
            print(
                f"| {name} | {r['full']:.1f} s | {r['incremental']:.2f} s | "
                f"{statistics.median(idle) * 1000:.0f} ms | {p99 * 1000:.0f} ms |"
            )
        m, d = results["mailhub"], results["Dovecot"]
        print(
            f"\nratios mailhub/Dovecot: full {m['full'] / d['full']:.2f}×, incremental {m['incremental'] / d['incremental']:.2f}×"
        )
        await system.close()
    except BaseException:
        log = work / "dovecot" / "dovecot.log"
        if log.exists():
            print("dovecot.log:\n" + log.read_text()[-3000:])
        raise
    finally:
        for p in processes:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
