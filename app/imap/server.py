"""The IMAP and POP3 listeners: `mailhub imap`, `mailhub pop3`, and inside `mailhub dev`.

Plain connections (with STARTTLS/STLS when a certificate is configured) on ``imap_port`` /
``pop3_port``, and implicit TLS on ``imap_tls_port`` (993 in production). One session object
per connection; an error in one session is logged and closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any

import structlog

from app.config import Settings
from app.imap.pop3 import Pop3Session
from app.imap.protocol import MAX_LINE
from app.imap.session import ImapSession, ServerOptions
from app.services.imap.mailboxes import ImapMailboxService

log = structlog.get_logger(__name__)


@dataclass
class MailClientServers:
    servers: list[asyncio.Server]
    imap_port: int
    pop3_port: int | None
    imaps_port: int | None

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.imap_tls_cert and settings.imap_tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.imap_tls_cert), str(settings.imap_tls_key))
    return context


def imap_service(system: Any) -> ImapMailboxService:
    return ImapMailboxService(system.mongo, system.blobs, system.mailbox_changes, system.notifier)


async def start_mail_clients(
    system: Any,
    settings: Settings,
    *,
    imap_port: int | None = None,
    pop3_port: int | None = None,
    imap: bool = True,
    pop3: bool = True,
) -> MailClientServers:
    """Listen for IMAP (and POP3); port 0 picks a free one (tests)."""
    context = tls_context(settings)
    mailboxes = imap_service(system)
    options = ServerOptions(settings.imap_max_literal, context, settings.hostname)
    host = settings.imap_host

    def imap_handler(tls: bool) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = ImapSession(
                reader,
                writer,
                accounts=system.accounts,
                mailboxes=mailboxes,
                hub=system.hub,
                options=options,
                tls=tls,
            )
            await _serve(session.run(), writer, "imap")

        return handle

    async def pop3_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Pop3Session(
            reader, writer, accounts=system.accounts, mailboxes=mailboxes, options=options
        )
        await _serve(session.run(), writer, "pop3")

    servers: list[asyncio.Server] = []
    ports: dict[str, int | None] = {"imap": None, "pop3": None, "imaps": None}
    try:
        if imap:
            port = settings.imap_port if imap_port is None else imap_port
            server = await asyncio.start_server(imap_handler(False), host, port, limit=MAX_LINE)
            servers.append(server)
            ports["imap"] = server.sockets[0].getsockname()[1]
            if context is not None and settings.imap_tls_port is not None:
                server = await asyncio.start_server(
                    imap_handler(True), host, settings.imap_tls_port, ssl=context, limit=MAX_LINE
                )
                servers.append(server)
                ports["imaps"] = server.sockets[0].getsockname()[1]
        if pop3:
            port = settings.pop3_port if pop3_port is None else pop3_port
            server = await asyncio.start_server(pop3_handler, host, port, limit=MAX_LINE)
            servers.append(server)
            ports["pop3"] = server.sockets[0].getsockname()[1]
    except BaseException:
        for s in servers:
            s.close()
        raise
    return MailClientServers(servers, ports["imap"] or 0, ports["pop3"], ports["imaps"])


async def _serve(run: Any, writer: asyncio.StreamWriter, protocol: str) -> None:
    try:
        await run
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    except Exception:
        log.exception(f"{protocol} session failed")
    finally:
        with contextlib.suppress(Exception):
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)


async def run_mail_clients(settings: Settings, *, imap: bool, pop3: bool) -> None:
    """`mailhub imap` / `mailhub pop3`: serve until cancelled (Ctrl-C)."""
    from app.bootstrap import build_system

    system = await build_system(settings)
    servers = await start_mail_clients(system, settings, imap=imap, pop3=pop3)
    if imap:
        print(f"mailhub IMAP listening on {settings.imap_host}:{servers.imap_port}", flush=True)
    if servers.imaps_port:
        print(f"mailhub IMAPS listening on {settings.imap_host}:{servers.imaps_port}", flush=True)
    if pop3:
        print(f"mailhub POP3 listening on {settings.imap_host}:{servers.pop3_port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await servers.close()
        await system.close()
