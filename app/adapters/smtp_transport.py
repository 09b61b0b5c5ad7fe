"""Outbound SMTP (aiosmtplib): sessions to MX hosts or a relay, per-recipient replies, a pool.

Only this module imports aiosmtplib; its exceptions become ``SmtpOutcome`` replies here, so the
delivery service sees one vocabulary for "the server said 451", "the connection dropped" and
"nobody answered". A session carries many transactions (one per VERP envelope) and goes back
to a short-lived pool keyed by host and port, so the next message to the same MX skips the
TCP, EHLO and TLS handshakes (Postfix's connection cache does the same).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiosmtplib
import structlog

from app.domain.bounces import NO_REPLY, SmtpOutcome, parse_reply

log = structlog.get_logger(__name__)

POOL_IDLE_SECONDS = (
    10.0  # an idle session lives this long (RFC 5321 §4.5.3.2.7: servers wait 5 min)
)
POOL_MAX_AGE_SECONDS = 120.0  # then it is closed even when busy: spreads load over MX changes
POOL_MAX_IDLE_PER_HOST = 8
MAX_TRANSACTIONS_PER_SESSION = 1000


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes  # RFC 5322 bytes, CRLF line endings; dot-stuffing is done on the wire


@dataclass(frozen=True)
class TransactionResult:
    replies: dict[str, SmtpOutcome]  # one per envelope recipient
    broken: bool = False  # the session cannot carry another transaction
    retryable: bool = False  # it broke before MAIL FROM was answered: nothing can have been sent


class ConnectFailed(Exception):
    """No session could be set up; ``outcome`` says why (code 0 when nobody answered)."""

    def __init__(self, outcome: SmtpOutcome) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome


def no_reply(text: str) -> SmtpOutcome:
    return SmtpOutcome(NO_REPLY, None, text)


def _needs_smtputf8(envelope: Envelope) -> bool:
    return not (envelope.mail_from.isascii() and all(r.isascii() for r in envelope.recipients))


@dataclass
class SmtpSession:
    """One open SMTP connection, EHLO done, TLS negotiated when possible."""

    client: aiosmtplib.SMTP
    host: str  # the MX (or relay) host name
    address: str
    port: int
    tls: bool
    opened_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    transactions: int = 0
    broken: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def send(self, envelope: Envelope) -> TransactionResult:
        """MAIL, one RCPT per recipient, DATA once; a reply for every recipient.

        A RCPT refusal is that recipient's reply; the DATA reply applies to every recipient the
        server accepted (RFC 5321 §3.3). If the connection is lost after the final dot and
        before the reply, the message may or may not have been taken: it counts as a temporary
        failure and is retried (RFC 5321 §6.1 accepts the duplicate this can cause).
        """
        self.transactions += 1
        self.last_used = time.monotonic()
        replies: dict[str, SmtpOutcome] = {}
        stage = "MAIL FROM"
        utf8 = _needs_smtputf8(envelope)
        try:
            options = []
            if utf8:
                if not self.client.supports_extension("smtputf8"):
                    # RFC 6531 §3.2: never downgrade an internationalized address.
                    refusal = SmtpOutcome(553, "5.6.7", "the server does not support SMTPUTF8")
                    return TransactionResult({r: refusal for r in envelope.recipients})
                options.append("SMTPUTF8")
            if self.client.supports_extension("size"):
                options.append(f"SIZE={len(envelope.data)}")
            encoding = "utf-8" if utf8 else "ascii"
            try:
                await self.client.mail(envelope.mail_from, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as e:
                refusal = parse_reply(e.code, e.message)
                await self._reset()
                return TransactionResult({r: refusal for r in envelope.recipients}, self.broken)
            stage = "RCPT TO"
            accepted = []
            for rcpt in envelope.recipients:
                try:
                    await self.client.rcpt(rcpt, encoding=encoding)
                    accepted.append(rcpt)
                except aiosmtplib.SMTPRecipientRefused as e:
                    replies[rcpt] = parse_reply(e.code, e.message)
            if not accepted:
                await self._reset()
                return TransactionResult(replies, self.broken)
            stage = "DATA"
            try:
                response = await self.client.data(envelope.data)
                reply = parse_reply(response.code, response.message)
            except aiosmtplib.SMTPDataError as e:
                reply = parse_reply(e.code, e.message)
                await self._reset()
            for rcpt in accepted:
                replies[rcpt] = reply
            return TransactionResult(replies, self.broken)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
            self.broken = True
            self.close()
            lost = no_reply(f"{self.host}[{self.address}]: {_describe(e)} during {stage}")
            for rcpt in envelope.recipients:
                replies.setdefault(rcpt, lost)
            return TransactionResult(replies, True, retryable=stage == "MAIL FROM")

    async def _reset(self) -> None:
        try:
            await self.client.rset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self.broken = True
            self.close()

    async def quit(self) -> None:
        if not self.broken and self.client.is_connected:
            try:
                await asyncio.wait_for(self.client.quit(), 2)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                pass
        self.close()

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead transport must never fail the caller
            pass


def _describe(e: BaseException) -> str:
    if isinstance(e, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, aiosmtplib.SMTPServerDisconnected):
        return "lost connection"
    if isinstance(e, aiosmtplib.SMTPResponseException):
        return f"{e.code} {e.message}"
    return str(e) or e.__class__.__name__


class SmtpTransport:
    """Opens, pools and closes SMTP sessions. ``tls`` is MAILHUB_DELIVERY_TLS."""

    def __init__(
        self,
        *,
        local_hostname: str,
        port: int,
        tls: str = "opportunistic",
        timeout: float = 60.0,
        relay: Relay | None = None,
    ) -> None:
        self.local_hostname = local_hostname
        self.port = port
        self.tls = tls
        self.timeout = timeout
        self.relay = relay
        self._idle: dict[tuple[str, int], list[SmtpSession]] = defaultdict(list)
        self._plaintext_only: dict[str, float] = {}  # hosts whose TLS handshake failed

    async def session(self, host: str, address: str) -> SmtpSession:
        """A pooled session to ``host`` if one is idle, else a new one (or ConnectFailed)."""
        port = self.relay.port if self.relay else self.port
        reused = self._checkout((host, port))
        if reused is not None:
            return reused
        return await self._open(host, address, port)

    def release(self, session: SmtpSession) -> None:
        """Give a session back; it stays open for POOL_IDLE_SECONDS unless it is worn out."""
        now = time.monotonic()
        idle = self._idle[session.key]
        if (
            session.broken
            or not session.client.is_connected
            or now - session.opened_at > POOL_MAX_AGE_SECONDS
            or session.transactions >= MAX_TRANSACTIONS_PER_SESSION
            or len(idle) >= POOL_MAX_IDLE_PER_HOST
        ):
            asyncio.get_running_loop().create_task(session.quit())
            return
        session.last_used = now
        idle.append(session)

    def _checkout(self, key: tuple[str, int]) -> SmtpSession | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            session = idle.pop()
            if (
                session.client.is_connected
                and now - session.last_used < POOL_IDLE_SECONDS
                and now - session.opened_at < POOL_MAX_AGE_SECONDS
            ):
                return session
            asyncio.get_running_loop().create_task(session.quit())
        return None

    async def close(self) -> None:
        sessions = [s for idle in self._idle.values() for s in idle]
        self._idle.clear()
        await asyncio.gather(*(s.quit() for s in sessions), return_exceptions=True)

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        if verify:
            return ssl.create_default_context()
        context = ssl.create_default_context()
        # Opportunistic TLS (RFC 7435): encrypt against passive listeners even when the
        # certificate cannot be checked, as most MTAs do by default.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    async def _open(self, host: str, address: str, port: int) -> SmtpSession:
        verify = self.tls == "verify"
        implicit_tls = bool(self.relay and port == 465)
        must_encrypt = bool(self.relay) or verify
        try_tls = must_encrypt or time.monotonic() > self._plaintext_only.get(host, 0.0)
        client = aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            start_tls=False,
            use_tls=implicit_tls,
            validate_certs=verify,
            tls_context=self._tls_context(verify) if implicit_tls else None,
        )
        where = f"{host}[{address}]:{port}"
        stage = "connect"
        try:
            await client.connect()
            stage = "EHLO"
            await client.ehlo()
            tls = implicit_tls
            if not tls and try_tls and client.supports_extension("starttls"):
                stage = "STARTTLS"
                try:
                    await client.starttls(
                        server_hostname=host, tls_context=self._tls_context(verify)
                    )
                    await client.ehlo()
                    tls = True
                except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as e:
                    if must_encrypt:
                        raise
                    # RFC 7435 §4: fall back to plaintext rather than not delivering at all.
                    log.warning("STARTTLS failed, retrying in plaintext", host=where, error=str(e))
                    client.close()
                    self._plaintext_only[host] = time.monotonic() + 3600
                    return await self._open(host, address, port)
            if must_encrypt and not tls:
                client.close()
                raise ConnectFailed(no_reply(f"{where}: STARTTLS is required but not offered"))
            if self.relay and self.relay.username:
                stage = "AUTH"
                await client.login(self.relay.username, self.relay.password or "")
        except ConnectFailed:
            raise
        except aiosmtplib.SMTPResponseException as e:
            client.close()
            if stage == "AUTH" or not 400 <= e.code < 600:
                # Our relay credentials are wrong: a problem of ours, never a bounce.
                raise ConnectFailed(
                    no_reply(f"{where}: {e.code} {e.message} during {stage}")
                ) from e
            # A refusal at greeting or EHLO is the server's answer for this whole attempt.
            raise ConnectFailed(parse_reply(e.code, e.message)) from e
        except (TimeoutError, aiosmtplib.SMTPException, ssl.SSLError, OSError) as e:
            client.close()
            raise ConnectFailed(no_reply(f"{where}: {_describe(e)} during {stage}")) from e
        return SmtpSession(client, host, address, port, tls)
