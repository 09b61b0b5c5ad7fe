"""mbsync (Debian isync) against `mailhub imap` over STARTTLS: a real client's full sync of
1,000 messages, two-way flag changes, and a move on the server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from app.domain.viewer import Viewer
from app.services.mailbox.changes import StateChange
from tests.e2e.conftest import DOMAIN
from tests.support.imap import PASSWORD, MailClients, deliver, running_mail_clients, sample_message

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        shutil.which("mbsync") is None, reason="needs mbsync (apt-get install isync)"
    ),
]
MESSAGES = int(os.environ.get("MAILHUB_TEST_MBSYNC_MESSAGES", "1000"))


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_clients(settings, system, tmp_path) -> AsyncIterator[tuple[MailClients, Path]]:  # type: ignore[no-untyped-def]
    cert, key = self_signed(tmp_path)
    tls = settings.model_copy(update={"imap_tls_cert": cert, "imap_tls_key": key})
    async for running in running_mail_clients(system, tls):
        yield running, cert


def mbsync_config(directory: Path, port: int, email: str, cert: Path) -> Path:
    local = directory / "Maildir"
    local.mkdir(exist_ok=True)
    config = directory / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount mailhub
Host 127.0.0.1
Port {port}
User {email}
Pass "{PASSWORD}"
SSLType STARTTLS
CertificateFile {cert}
AuthMechs PLAIN
PipelineDepth 50

IMAPStore remote
Account mailhub

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mailhub
Far :remote:
Near :local:
Patterns INBOX Archive
Create Near
Sync All
Expunge Both
SyncState *
"""
    )
    return config


def run_mbsync(config: Path) -> str:
    done = subprocess.run(
        ["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def maildir_files(root: Path, box: str) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (root / box / sub).glob("*") if p.is_file())


async def stored(system: Any, user_id: ObjectId, folder: str) -> dict[str, dict[str, Any]]:
    """sha256 of the stored raw message → its view, for one folder."""
    db = system.mongo.db
    items = await db.mailbox_items.find({"user_id": user_id, "folder": folder}).to_list()
    out = {}
    for item in items:
        message = await db.messages.find_one({"_id": item["message_id"]})
        raw = await system.blobs.get(message["raw_blob_id"])
        out[hashlib.sha256(raw).hexdigest()] = item
    return out


def digest(path: Path) -> str:
    """sha256 of a Maildir message as the server sent it. mbsync stores messages with LF line
    ends and adds an ``X-TUID`` header line (its own bookkeeping, on every message it stores);
    undoing exactly those two changes gives back the bytes it received."""
    data = path.read_bytes()
    head, _, body = data.partition(b"\n\n")
    lines = (head + b"\n").splitlines(keepends=True)
    head = b"".join(line for line in lines if not line.startswith(b"X-TUID: "))
    return hashlib.sha256((head + b"\n" + body).replace(b"\n", b"\r\n")).hexdigest()


def maildir_flags(path: Path) -> str:
    return path.name.rsplit(":2,", 1)[1] if ":2," in path.name else ""


async def test_mbsync_full_sync_flags_both_ways_and_a_server_move(
    tls_clients: tuple[MailClients, Path], tmp_path: Path
) -> None:
    clients, cert = tls_clients
    system = clients.system
    email = f"mia@{DOMAIN}"
    user = await system.accounts.create_user(email, PASSWORD, "Mia")
    viewer = Viewer(user["_id"], email)
    started = time.monotonic()
    await deliver(system, email, [sample_message(n, email) for n in range(MESSAGES)])
    print(f"delivered {MESSAGES} in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    config = mbsync_config(tmp_path, clients.imap_port, email, cert)
    maildir = tmp_path / "Maildir"

    # 1. full sync: every message, byte for byte
    await asyncio.to_thread(run_mbsync, config)
    print(f"full sync in {time.monotonic() - started:.1f} s")
    inbox = await stored(system, user["_id"], "INBOX")
    files = maildir_files(maildir, "INBOX")
    assert len(files) == MESSAGES
    assert {digest(f) for f in files} == set(inbox)

    # 2. flags on both sides: star one locally, read another on the server (as GraphQL does)
    by_digest = {digest(f): f for f in files}
    local_pick, server_pick = sorted(by_digest)[:2]
    local_file = by_digest[local_pick]
    local_file.rename(local_file.with_name(local_file.name.split(":2,")[0] + ":2,F"))
    await system.mailbox_changes.update_items(
        viewer, [str(inbox[server_pick]["_id"])], StateChange(read=True)
    )
    await asyncio.to_thread(run_mbsync, config)
    after = await stored(system, user["_id"], "INBOX")
    assert after[local_pick]["starred"] is True  # the local flag reached the server
    local_now = {digest(f): f for f in maildir_files(maildir, "INBOX")}
    assert "S" in maildir_flags(local_now[server_pick])  # the server flag reached the Maildir
    assert sum(1 for v in after.values() if v.get("starred")) == 1

    # 3. a move on the server (INBOX → Archive) moves the message locally
    moved = sorted(after)[10]
    await system.mailbox_changes.update_items(
        viewer, [str(after[moved]["_id"])], StateChange(folder="ARCHIVE")
    )
    await asyncio.to_thread(run_mbsync, config)
    assert moved not in {digest(f) for f in maildir_files(maildir, "INBOX")}
    assert [digest(f) for f in maildir_files(maildir, "Archive")] == [moved]
    assert len(maildir_files(maildir, "INBOX")) == MESSAGES - 1

    # 4. nothing changed: a further sync changes nothing on either side
    before = sorted(p.name for p in maildir_files(maildir, "INBOX"))
    await asyncio.to_thread(run_mbsync, config)
    assert sorted(p.name for p in maildir_files(maildir, "INBOX")) == before
