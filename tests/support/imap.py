"""IMAP/POP3 under test: the real listeners on free loopback ports over a real system, and a
fast way to fill a mailbox through the inbound service (the MX's own path, minus SMTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from typing import Any

from app.imap.server import MailClientServers, start_mail_clients
from app.services.inbound.pipeline import Envelope, LocalRecipient

PASSWORD = "correct horse battery"


@dataclass
class MailClients:
    system: Any
    servers: MailClientServers

    @property
    def imap_port(self) -> int:
        return self.servers.imap_port

    @property
    def pop3_port(self) -> int:
        assert self.servers.pop3_port is not None
        return self.servers.pop3_port


async def running_mail_clients(system: Any, settings: Any) -> AsyncIterator[MailClients]:
    servers = await start_mail_clients(system, settings, imap_port=0, pop3_port=0)
    try:
        yield MailClients(system, servers)
    finally:
        await servers.close()


def sample_message(
    n: int, to: str, *, subject: str | None = None, body: str | None = None
) -> bytes:
    """A small message with varied structure (every fifth is multipart with an attachment)."""
    subject = subject or f"Message number {n}"
    body = body or f"Hello, this is message {n}.\r\nSecond line.\r\n"
    head = (
        f"From: Sender {n % 7} <sender{n % 7}@remote.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: {make_msgid(domain='remote.test')}\r\n"
        "MIME-Version: 1.0\r\n"
    )
    if n % 5 == 4:
        return (
            head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="data.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b1--\r\n"
        ).encode()
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


async def deliver(system: Any, to: str, raws: list[bytes], concurrency: int = 32) -> None:
    """Store messages for ``to`` through the inbound service (group commit, filing, change log,
    realtime events), ``concurrency`` at a time."""
    recipient = await system.inbound.resolve_recipient(to)
    envelope = Envelope("127.0.0.1", "remote.test", "sender@remote.test", (recipient,))
    gate = asyncio.Semaphore(concurrency)

    async def one(raw: bytes) -> None:
        async with gate:
            await system.inbound.receive(envelope, raw)

    await asyncio.gather(*(one(r) for r in raws))


__all__ = ["LocalRecipient", "MailClients", "deliver", "running_mail_clients", "sample_message"]
