"""IMAP with a real client (imaplib) against the real listener over the real servers."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN
from tests.support.imap import PASSWORD, MailClients, deliver, running_mail_clients, sample_message

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def clients(settings, system) -> AsyncIterator[MailClients]:  # type: ignore[no-untyped-def]
    async for running in running_mail_clients(system, settings):
        yield running


async def make_user(system: Any, local: str) -> str:
    email = f"{local}@{DOMAIN}"
    await system.accounts.create_user(email, PASSWORD, local.title())
    return email


def connect(port: int, email: str | None = None) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    if email:
        imap.login(email, PASSWORD)
    return imap


def ok(result: tuple[str, Any]) -> Any:
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


async def test_login_list_select_fetch_byte_exact(clients: MailClients) -> None:
    system = clients.system
    email = await make_user(system, "ann")
    raws = [sample_message(n, email) for n in range(12)]
    await deliver(system, email, raws)

    def session() -> dict[str, Any]:
        imap = connect(clients.imap_port, email)
        out: dict[str, Any] = {}
        out["list"] = ok(imap.list())
        out["select"] = ok(imap.select("INBOX"))
        out["fetch"] = ok(imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])"))
        out["flags_after_peek"] = ok(imap.fetch("1:*", "(FLAGS)"))
        out["header"] = ok(imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"))
        out["structure"] = ok(imap.fetch("1:*", "(BODYSTRUCTURE ENVELOPE INTERNALDATE)"))
        imap.logout()
        return out

    out = await asyncio.to_thread(session)
    names = b"\n".join(out["list"])
    for name, attr in [
        (b'"INBOX"', b""),
        (b'"Sent"', b"\\Sent"),
        (b'"Drafts"', b"\\Drafts"),
        (b'"Trash"', b"\\Trash"),
        (b'"Junk"', b"\\Junk"),
        (b'"Archive"', b"\\Archive"),
    ]:
        assert name in names and attr in names
    assert out["select"] == [b"12"]
    stored = await stored_raws(system, email)
    fetched = [part[1] for part in out["fetch"] if isinstance(part, tuple)]
    assert len(fetched) == 12
    assert sorted(fetched) == sorted(stored)  # byte for byte what the MX stored
    for part in out["fetch"]:
        if isinstance(part, tuple):
            size = int(part[0].split(b"RFC822.SIZE ")[1].split()[0])
            assert size == len(part[1])
    assert all(b"\\Seen" not in line for line in out["flags_after_peek"])
    header = out["header"][0][1]
    assert header.startswith((b"From:", b"Subject:")) and header.endswith(b"\r\n\r\n")
    assert b"Date:" not in header
    structures = b"\n".join(p if isinstance(p, bytes) else p[0] for p in out["structure"])
    assert b'BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8")' in structures  # multipart
    assert b'"APPLICATION" "OCTET-STREAM"' in structures and b'"MIXED"' in structures
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN"' in structures  # single part
    assert b'ENVELOPE ("' in structures and b'"Message number 4"' in structures


async def stored_raws(system: Any, email: str) -> list[bytes]:
    user = await system.mongo.db.users.find_one({"email": email})
    items = await system.mongo.db.mailbox_items.find({"user_id": user["_id"]}).to_list()
    out = []
    for item in items:
        message = await system.mongo.db.messages.find_one({"_id": item["message_id"]})
        out.append(await system.blobs.get(message["raw_blob_id"]))
    return out
