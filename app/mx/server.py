"""The MX server: aiosmtpd's SMTP protocol on our event loop, with per-client limits.

``start_mx`` runs it inside a caller's loop (`mailhub dev`, tests); ``run_mx`` is `mailhub mx`:
one process per ``MAILHUB_MX_PROCESSES`` sharing the port (SO_REUSEPORT), each stopping
gracefully on SIGTERM/SIGINT — no new connections, in-flight DATA finishes, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import signal
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, syntax

from app import loops
from app.config import Settings
from app.mx.data import DataOutcome, read_data
from app.mx.handler import MxHandler
from app.mx.limits import ClientLimits, ErrorBudget
from app.services.inbound.analysis import default_helpers

log = structlog.get_logger(__name__)

# aiosmtpd ends every session's task by cancelling it, QUIT included, and logs each cancellation
# as "Connection lost during _handle_client()": noise for the ordinary end of every session.
# The flag lives in the session task's own context (each connection's task has a copy), so the
# filter drops that line only for the session that said QUIT; a client that hangs up without
# QUIT, or a connection reset, is still logged.
_session_quit = contextvars.ContextVar("mx_session_quit", default=False)


class _QuitIsNotALostConnection(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            _session_quit.get()
            and str(record.msg).endswith("Connection lost during _handle_client()")
        )


logging.getLogger("mail.log").addFilter(_QuitIsNotALostConnection())

GRACE_SECONDS = 30.0
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")
# A MAIL/RCPT path of the plain form nearly all mail uses: <local@domain>, both dot-atoms of
# RFC 5322 atext (MxSMTP._getaddr). The closing ">" must follow at once.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@{_ATEXT}+(?:\.{_ATEXT}+)*)>")
# RFC 2034 §3: with ENHANCEDSTATUSCODES every reply but the greeting, EHLO and 354 carries one.
_DEFAULT_ENHANCED = {
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "421": "4.7.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
_REWRITES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
}


def with_enhanced_code(reply: str) -> str:
    """Add the RFC 3463 code aiosmtpd's own replies lack (only to final, single-line replies)."""
    if reply in _REWRITES:
        return _REWRITES[reply]
    code = reply[:3]
    if (
        reply[3:4] != " "
        or _HAS_ENHANCED.match(reply)
        or code not in _DEFAULT_ENHANCED
        or code == "250"
    ):
        return reply
    return f"{code} {_DEFAULT_ENHANCED[code]} {reply[4:]}"


class MxEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.local_recipients: list[Any] = []


class MxSMTP(SMTP):
    """aiosmtpd's protocol plus connection limits, an error budget and enhanced codes."""

    def __init__(
        self,
        handler: MxHandler,
        settings: Settings,
        limits: ClientLimits,
        sessions: set[MxSMTP],
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.line_length_limit = (
            settings.smtp_max_line_bytes
        )  # read by SMTP.__init__ for its reader
        super().__init__(
            handler,
            data_size_limit=settings.smtp_max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="mailhub ESMTP",
            tls_context=tls_context,
            timeout=settings.smtp_timeout_seconds,
            auth_require_tls=True,
        )
        self.limits = limits
        self.budget = ErrorBudget(settings.smtp_max_errors)
        self.sessions = sessions
        self.counted_ip: str | None = None

    def _create_envelope(self) -> Envelope:
        return MxEnvelope()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's ``_getaddr`` (the address of a MAIL or RCPT argument, and what follows
        it), with one regex for the plain ``<local@domain>`` path instead of the email
        package's header parser (``get_angle_addr``: 60 µs a call, twice a message).

        Exact: for such a path ``get_angle_addr`` reads the two dot-atoms as they are (its
        ``addr_spec`` quotes nothing made of atext), stops at the ">" and then skips CFWS (any
        whitespace, when the next character is a space or a tab, and comments); so a comment
        after the ">", and any other form of path (quoted local parts, source routes, spaces
        or comments inside, non-ASCII, ``<>``), go to aiosmtpd's own code.
        tests/unit/test_mx_paths.py compares both on crafted and random arguments.
        """
        match = _PLAIN_PATH.match(arg)
        if match is None:
            return super()._getaddr(arg)
        rest = arg[match.end() :]
        if rest and rest[0] in " \t(":
            rest = rest.lstrip()
            if rest.startswith("("):
                return super()._getaddr(arg)
        address = match[1]
        local_part = address.rpartition("@")[0]
        if self.local_part_limit and len(local_part) > self.local_part_limit:
            return None, None
        return address, rest

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.limits.open_connection(ip):
            await super().push(f"421 4.7.0 {self.hostname} Too many connections from your address")
            if self.transport is not None:
                self.transport.close()
            return
        self.counted_ip = ip
        self.sessions.add(self)
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self.counted_ip is not None:
            self.limits.close_connection(self.counted_ip)
            self.counted_ip = None
        self.sessions.discard(self)
        super().connection_lost(error)

    @syntax("QUIT")  # HELP lists only commands that carry their syntax
    async def smtp_QUIT(self, arg: str) -> None:
        if not arg:  # "QUIT x" is a 501 and the session goes on
            _session_quit.set(True)
        await super().smtp_QUIT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA command with the message read in chunks (``app.mx.data``), not lines.

        Same checks, replies and limits as aiosmtpd 1.4's: 503 without recipients, 501 with an
        argument, 354, then 500 for a line over ``smtp_max_line_bytes`` or 552 past
        ``smtp_max_message_bytes`` — both told once the end marker has arrived (RFC 5321
        §4.2.5) — else the handler's reply.
        """
        if self._decode_data:  # not how the MX runs: keep aiosmtpd's own path for it
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            outcome, content = await read_data(
                self._reader, size_limit=self.data_size_limit, line_limit=self.line_length_limit
            )
        except asyncio.CancelledError:  # the connection went away during DATA
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if outcome is not DataOutcome.OK:
            if outcome is DataOutcome.TOO_LONG:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            else:
                await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def push(self, status: str) -> None:  # type: ignore[override]
        status = with_enhanced_code(status)
        await super().push(status)
        if status.startswith("421"):
            self._hang_up()
        elif self.budget.record(status):
            await super().push("421 4.7.0 Too many errors, closing connection")
            self._hang_up()

    def _hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class MxServer:
    server: asyncio.Server
    port: int
    handler: MxHandler
    sessions: set[MxSMTP] = field(default_factory=set)

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Stop accepting, let DATA in flight finish (bounded), then close every session."""
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.handler.in_flight and loop.time() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                if session.transport is not None:
                    session.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.smtp_tls_cert and settings.smtp_tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.smtp_tls_cert), str(settings.smtp_tls_key))
    return context


async def start_mx(settings: Settings, system: Any, *, reuse_port: bool = False) -> MxServer:
    """Listen on ``smtp_host:smtp_port`` (0 = a free port) in the running loop."""
    system.inbound.load_spam_model()  # a missing or bad model stops the MX here, loudly
    limits = ClientLimits(
        settings.smtp_connections_per_ip,
        settings.smtp_messages_per_minute_per_ip,
        list(settings.smtp_limit_exempt),
    )
    handler = MxHandler(system.inbound, limits, max_recipients=settings.smtp_max_recipients)
    sessions: set[MxSMTP] = set()
    context = tls_context(settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MxSMTP(handler, settings, limits, sessions, context),
        host=settings.smtp_host,
        port=settings.smtp_port,
        reuse_port=reuse_port or None,
        backlog=512,
    )
    port = int(server.sockets[0].getsockname()[1])
    return MxServer(server, port, handler, sessions)


async def _serve(settings: Settings, reuse_port: bool, metrics_port: int | None) -> int:
    from app.bootstrap import build_system
    from app.services import monitoring

    if metrics_port:  # this process's MX metrics: /metrics
        monitoring.serve(metrics_port, settings.http_host)
    system = await build_system(settings)
    helpers = settings.mx_helpers
    if helpers is None:
        helpers = default_helpers(os.cpu_count(), settings.mx_processes)
    # Parsing and scoring in helper processes (app/services/inbound/analysis.py); they load
    # the model before the MX listens. Our own copy first: a bad model is reported as itself.
    system.inbound.load_spam_model()
    await system.inbound.analysis.start_helpers(helpers)
    mx = await start_mx(settings, system, reuse_port=reuse_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    event_loop = loops.name_of(loop)
    log.info(
        "mx listening",
        host=settings.smtp_host,
        port=mx.port,
        pid=os.getpid(),
        helpers=helpers,
        event_loop=event_loop,
    )
    print(
        f"mailhub mx listening on {settings.smtp_host}:{mx.port}"
        f" (pid {os.getpid()}, event loop {event_loop})",
        flush=True,
    )
    await stopping.wait()
    await mx.stop()
    await system.inbound.analysis.stop_helpers()
    await system.close()
    return 0


def run_mx(settings: Settings) -> int:
    """`mailhub mx`: serve until SIGTERM/SIGINT; several processes with MAILHUB_MX_PROCESSES."""
    from app.logs import configure_logging

    configure_logging(settings)
    workers = settings.mx_processes
    if workers == 1:
        return loops.run(
            _serve(settings, reuse_port=False, metrics_port=settings.metrics_port),
            settings.event_loop,
        )
    if settings.smtp_port == 0:
        print(
            "mailhub mx: MAILHUB_MX_PROCESSES > 1 needs a fixed MAILHUB_SMTP_PORT", file=sys.stderr
        )
        return 2
    children = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # child: its own event loop and database connections
            code = 1
            # Each process counts its own transactions: MAILHUB_METRICS_PORT + its index.
            port = settings.metrics_port + index if settings.metrics_port else None
            try:
                code = loops.run(
                    _serve(settings, reuse_port=True, metrics_port=port), settings.event_loop
                )
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                status = status or os.waitstatus_to_exitcode(code)
                break
            except InterruptedError:
                continue
    return status
