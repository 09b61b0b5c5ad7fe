"""The MX under test: a real system, a real aiosmtpd listener, a real DNS zone, real clients.

``mail_zone()`` starts dnsmasq with the SPF/DKIM/DMARC records of the sender domains the tests
use; ``running_mx(settings, zone)`` builds a System on the per-test database, hosts
``example.test`` and listens on a free port. Clients (smtplib in a thread, swaks as a process)
must not block the event loop the MX runs on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import smtplib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import dkim
from bson import ObjectId
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.bootstrap import build_system
from app.config import Settings
from app.mx.server import MxServer, start_mx
from tests.support.cleanup import drop_database
from tests.support.dnsmasq import DnsServer

DOMAIN = "example.test"
_CLIENTS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="smtp-client")


@dataclass
class SenderDomain:
    name: str
    spf: str | None
    dmarc: str | None
    selector: str = "s1"
    private_pem: bytes = b""

    def sign(self, raw: bytes) -> bytes:
        """DKIM-sign ``raw`` (relaxed/relaxed) with this domain's key; returns signed bytes."""
        signature = dkim.sign(
            raw,
            self.selector.encode(),
            self.name.encode(),
            self.private_pem,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return signature + raw


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(public).decode()


@dataclass
class MailZone:
    dns: DnsServer
    domains: dict[str, SenderDomain] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.dns.address


# Sender domains and what they publish. 127.0.0.1 is where every test client connects from.
ZONE = {
    "pass.test": ("v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=reject"),
    "spffail.test": ("v=spf1 ip4:192.0.2.10 -all", "v=DMARC1; p=reject"),
    "softfail.test": ("v=spf1 ip4:192.0.2.10 ~all", "v=DMARC1; p=quarantine"),
    "nopolicy.test": ("v=spf1 ip4:192.0.2.10 -all", None),
    "none.test": (None, None),
    "monitor.test": ("v=spf1 ip4:192.0.2.10 -all", "v=DMARC1; p=none"),
}


def mail_zone() -> MailZone:
    """Start dnsmasq publishing ZONE (SPF TXT, DKIM keys at s1._domainkey, DMARC)."""
    domains: dict[str, SenderDomain] = {}
    txt: dict[str, list[str]] = {}
    for name, (spf, dmarc) in ZONE.items():
        pem, public = _key()
        domains[name] = SenderDomain(name, spf, dmarc, private_pem=pem)
        if spf:
            txt[name] = [spf]
        if dmarc:
            txt[f"_dmarc.{name}"] = [dmarc]
        txt[f"s1._domainkey.{name}"] = [f"v=DKIM1; k=rsa; p={public}"]
    a = {name: "192.0.2.10" for name in ZONE}
    return MailZone(DnsServer(txt=txt, a=a).start(), domains)


@dataclass
class MxHarness:
    system: Any
    mx: MxServer
    settings: Settings

    @property
    def port(self) -> int:
        return self.mx.port

    async def user(self, local: str, name: str | None = None) -> tuple[str, ObjectId]:
        email = f"{local}@{DOMAIN}"
        user = await self.system.accounts.create_user(
            email, "correct horse battery", name or local.title()
        )
        return email, user["_id"]

    async def items(self, user_id: ObjectId, folder: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"user_id": user_id}
        if folder:
            query["folder"] = folder
        return await self.system.mongo.db.mailbox_items.find(query).sort("received_at", 1).to_list()


@contextlib.asynccontextmanager
async def running_mx(
    settings: Settings, zone: MailZone, **overrides: Any
) -> AsyncIterator[MxHarness]:
    settings = settings.model_copy(
        update={"dns_servers": [zone.address], "smtp_port": 0, **overrides}
    )
    system = await build_system(settings)
    await system.accounts.add_domain(DOMAIN)
    mx = await start_mx(settings, system)
    try:
        yield MxHarness(system, mx, settings)
    finally:
        await mx.stop(grace=2)
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


def message(
    *,
    sender: str = "alice@pass.test",
    to: str = f"bob@{DOMAIN}",
    subject: str = "Hello",
    body: str = "Hi Bob,\nsee you tomorrow.\n",
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(body)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _smtp_send(
    port: int, mail_from: str, rcpts: list[str], raw: bytes, helo: str
) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=30) as client:
        client.ehlo(helo)
        code, reply = client.mail(mail_from)
        if code != 250:
            return {"mail": (code, reply.decode())}
        replies = [(r, *client.rcpt(r)) for r in rcpts]
        accepted = [r for r, c, _ in replies if c == 250]
        out: dict[str, Any] = {
            "rcpt": {r: (c, t.decode()) for r, c, t in replies},
            "rcpt_codes": [c for _, c, _ in replies],
        }
        if not accepted:
            client.rset()
            return out
        code, reply = client.data(raw)
        out["data"] = (code, reply.decode())
        return out


async def smtp_send(
    port: int,
    raw: bytes,
    *,
    mail_from: str = "alice@pass.test",
    rcpts: list[str] | None = None,
    helo: str = "client.pass.test",
) -> dict[str, Any]:
    """One SMTP transaction with smtplib (in a thread: the MX shares our event loop)."""
    return await asyncio.get_running_loop().run_in_executor(
        _CLIENTS, _smtp_send, port, mail_from, rcpts or [f"bob@{DOMAIN}"], raw, helo
    )


async def swaks(*args: str, limit: float = 60) -> tuple[int, str]:
    """Run swaks; returns (exit code, its transcript)."""
    binary = shutil.which("swaks") or "/usr/bin/swaks"
    process = await asyncio.create_subprocess_exec(
        binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), limit)
    return process.returncode or 0, out.decode("utf-8", "replace")
