"""A whole outbound world on loopback: dnsmasq with MX/A/DKIM records, aiosmtpd sinks, a System.

Destination domains (MAILHUB_DELIVERY_PORT is one port; each MX host is its own 127.0.0.x):

    ok.test        MX mx.ok.test → 127.0.0.2            sink "ok" (per-recipient replies settable)
    mixed.test     MX mx.mixed.test → 127.0.0.3         sink "mixed"
    implicit.test  no MX, A → 127.0.0.4                 sink "implicit" (RFC 5321 §5.1 implicit MX)
    backup.test    MX 10 → 127.0.0.5 (nothing listens), MX 20 → 127.0.0.6   sink "backup"
    silent.test    MX → 127.0.0.7                       sink "silent": never answers after DATA
    null.test      MX 0 "." (RFC 7505 null MX)
    nowhere.test   NXDOMAIN
    d0..dN.test    MX → 127.0.1.k                       sinks "d0".. (``extra_domains``)

The sender domain example.test is hosted with a DKIM key whose public half dnsmasq publishes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.adapters.dns_resolver import sync_resolver
from app.bootstrap import System, build_system
from app.domain.viewer import Viewer
from app.embedded import free_port
from app.services.sending.compose import Composition
from tests.support.cleanup import drop_database
from tests.support.dnsmasq import DnsServer
from tests.support.smtp_sinks import Sink

SENDER_DOMAIN = "example.test"
SELECTOR = "mh2026"
FIXED = {
    "ok": ("ok.test", "127.0.0.2"),
    "mixed": ("mixed.test", "127.0.0.3"),
    "implicit": ("implicit.test", "127.0.0.4"),
    "backup": ("backup.test", "127.0.0.6"),
    "silent": ("silent.test", "127.0.0.7"),
}


def _dkim_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


@dataclass
class Outbound:
    system: System
    settings: Any
    dns: DnsServer
    sinks: dict[str, Sink]
    sender: Viewer
    dkim_txt: str
    stops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.system.mongo.db

    async def send(
        self,
        to: list[str],
        *,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        subject: str = "Hello",
        text: str = "Hi there.\n",
        send_at: datetime | None = None,
        transactional: bool = False,
    ) -> dict[str, Any]:
        """Send as the sender user through the real SendingService; returns the Sent view."""
        return await self.system.sending.send_email(
            self.sender,
            Composition(
                to=to,
                cc=cc or [],
                bcc=bcc or [],
                subject=subject,
                text=text,
                send_at=send_at,
                transactional=transactional,
            ),
        )

    def accepted_by_sinks(self) -> Counter[str]:
        """Every address any sink accepted, with how many times (a crash test's duplicates)."""
        return Counter(a for sink in self.sinks.values() for r in sink.received for a in r.rcpt_tos)

    async def sent_addresses(self) -> set[str]:
        """The recipients recorded as sent (a crash test's window: accepted by a sink, not these)."""
        docs = await self.db.recipients.find({"delivery_status": "sent"}, {"address": 1}).to_list()
        return {d["address"] for d in docs}

    async def outlive_leases(self) -> None:
        """Sleep until the leases of recipients a dead worker was sending have run out."""
        docs = await self.db.recipients.find(
            {"delivery_status": "sending"}, {"lease_until": 1}
        ).to_list()
        if docs:
            latest = max(d["lease_until"] for d in docs)
            await asyncio.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.2)

    async def recipients(self, message_id: Any) -> dict[str, dict[str, Any]]:
        docs = await self.db.recipients.find({"message_id": message_id}).to_list()
        return {d["address"]: d for d in docs}

    async def wait_statuses(
        self, message_id: Any, want: dict[str, str], within: float = 45.0
    ) -> dict[str, dict[str, Any]]:
        """Poll until each listed recipient has the wanted status; returns the recipient docs."""
        deadline = time.monotonic() + within
        while True:
            docs = await self.recipients(message_id)
            if all(docs.get(a, {}).get("delivery_status") == s for a, s in want.items()):
                return docs
            if time.monotonic() > deadline:
                got = {a: docs.get(a, {}).get("delivery_status") for a in want}
                raise AssertionError(f"statuses {got}, wanted {want}")
            await asyncio.sleep(0.05)

    def verify_dkim(self, data: bytes) -> bool:
        """dkimpy's verdict, looking the key up in our dnsmasq."""
        resolver = sync_resolver([self.dns.address])

        def txt(name: bytes, timeout: int = 5) -> bytes:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
            return b"".join(b"".join(r.strings) for r in answer)

        return bool(dkim.verify(data, dnsfunc=txt))

    async def start_worker(self) -> None:
        from jobs.worker import start_embedded_worker

        self.stops.append(await start_embedded_worker(self.settings, self.system))


@contextlib.asynccontextmanager
async def outbound_world(
    settings: Any,
    *,
    extra_domains: int = 0,
    worker: bool = True,
    sink_options: dict[str, dict[str, Any]] | None = None,
    extra_txt: dict[str, list[str]] | None = None,
    **overrides: Any,
) -> AsyncIterator[Outbound]:
    sink_options = sink_options or {}
    port = free_port()
    hosts = dict(FIXED)
    for n in range(extra_domains):
        hosts[f"d{n}"] = (f"d{n}.test", f"127.0.1.{n + 1}")
    sinks: dict[str, Sink] = {}
    for name, (_, ip) in hosts.items():
        options = dict(sink_options.get(name, {}))
        if name == "silent":
            options.setdefault("silent_after_data", True)
        sinks[name] = await Sink.start(ip, port, **options)
    pem, txt = _dkim_key()
    mx: dict[str, list[tuple[int, str]]] = {
        "null.test": [(0, ".")],
        "backup.test": [(10, "mx1.backup.test"), (20, "mx2.backup.test")],
    }
    a: dict[str, str | list[str]] = {
        "implicit.test": "127.0.0.4",
        "mx1.backup.test": "127.0.0.5",
        "mx2.backup.test": "127.0.0.6",
    }
    for name, (domain, ip) in hosts.items():
        if name in ("implicit", "backup"):
            continue
        mx[domain] = [(10, f"mx.{domain}")]
        a[f"mx.{domain}"] = ip
    dns = DnsServer(
        mx=mx, a=a, txt={f"{SELECTOR}._domainkey.{SENDER_DOMAIN}": [txt], **(extra_txt or {})}
    ).start()
    world_settings = settings.model_copy(
        update={
            "dns_servers": [dns.address],
            "delivery_port": port,
            "delivery_timeout_seconds": 2.0,
            "retry_schedule": [1, 2, 3],
            **overrides,
        }
    )
    system = await build_system(world_settings)
    world: Outbound | None = None
    try:
        await system.mongo.db.domains.insert_one(
            {
                "_id": SENDER_DOMAIN,
                "created_at": datetime.now(UTC),
                "dkim": {"selector": SELECTOR, "private_key": pem},
            }
        )
        user = await system.accounts.create_user(
            f"alice@{SENDER_DOMAIN}", "correct horse battery", "Alice"
        )
        viewer = Viewer(user["_id"], user["email"], "Alice")
        world = Outbound(system, world_settings, dns, sinks, viewer, txt)
        if worker:
            await world.start_worker()
        yield world
    finally:
        if world is not None:
            for stop in world.stops:
                with warnings.catch_warnings():  # arq 0.28 calls redis-py's deprecated close()
                    warnings.simplefilter("ignore", DeprecationWarning)
                    await stop()
        await drop_database(system.mongo.client, world_settings.mongodb_database)
        await system.close()
        dns.stop()
        for sink in sinks.values():
            await sink.stop()
