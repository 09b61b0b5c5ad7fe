"""Real SMTP servers (aiosmtpd) for delivery tests, with scripted misbehaviour.

    sink = await Sink.start("127.0.0.2", port, rcpt={"full@d.test": "452 4.2.2 Mailbox full"})
    ...  # deliver
    assert sink.received[0].rcpt_tos == ["bob@d.test"]

Per recipient a RCPT reply (anything not listed gets 250). After DATA the sink answers
``data_reply`` (default 250), or with ``silent_after_data`` never answers, or with
``drop_at`` ("RCPT" or "DATA") closes the connection without a word. ``tls`` offers STARTTLS with
a throwaway self-signed certificate; ``auth`` ({user: password}) offers AUTH PLAIN/LOGIN after TLS.
Every accepted message is recorded with its envelope and the exact bytes received.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float
    tls: bool
    peer_user: str | None = None


def self_signed_context(host: str = "sink.test") -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for ``host``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="sink-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        self.sink.rcpt_attempts.append(address)
        if self.sink.drop_at == "RCPT":
            server.transport.close()
            return "421 dropping"  # never reaches the client
        reply = self.sink.rcpt.get(address.lower())
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        return reply or "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        sink = self.sink
        sink.data_attempts += 1
        if sink.drop_at == "DATA":
            server.transport.close()
            return "421 dropping"
        if sink.silent_after_data:
            await asyncio.sleep(3600)
        if sink.data_delay:
            await asyncio.sleep(sink.data_delay)
        if sink.data_reply.startswith("2"):
            sink.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or b""),
                    time.time(),
                    session.ssl is not None,
                    session.auth_data,
                )
            )
        return sink.data_reply


@dataclass
class Sink:
    host: str
    port: int
    rcpt: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 queued"
    silent_after_data: bool = False
    drop_at: str | None = None
    data_delay: float = 0.0
    tls: bool = False
    auth: dict[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    rcpt_attempts: list[str] = field(default_factory=list)
    data_attempts: int = 0
    connections: int = 0
    server: asyncio.base_events.Server | None = None

    @classmethod
    async def start(cls, host: str, port: int, **options: Any) -> Sink:
        sink = cls(host, port, **options)
        sink.rcpt = {k.lower(): v for k, v in sink.rcpt.items()}
        context = self_signed_context() if sink.tls or sink.auth else None
        handler = _Handler(sink)

        def authenticate(
            server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and sink.auth is not None
                and sink.auth.get(data.login.decode()) == data.password.decode()
            )
            return AuthResult(
                success=ok, handled=False, auth_data=data.login.decode() if ok else None
            )

        def factory() -> SMTP:
            sink.connections += 1
            return SMTP(
                handler,
                hostname=f"sink-{host}",
                tls_context=context,
                require_starttls=bool(sink.auth),
                auth_require_tls=True,
                authenticator=authenticate if sink.auth else None,
                auth_required=bool(sink.auth),
                data_size_limit=64 * 2**20,
            )

        sink.server = await asyncio.get_running_loop().create_server(factory, host, port)
        return sink

    def messages_to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
