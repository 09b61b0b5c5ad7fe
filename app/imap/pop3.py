"""POP3 (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS) on the INBOX.

The maildrop is the INBOX as it is at login, oldest first. UIDL is the view id, so it is stable
across sessions. Messages are left on the server: RETR does not change anything, and DELE only
marks; at QUIT the marked messages move to Trash (through the mailbox service, like a delete in
the webmail), so nothing is destroyed by a POP3 client and the webmail's Trash can undo it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.domain.errors import AuthError, DomainError, RateLimited
from app.domain.folders import Folder
from app.domain.imap_names import folder_ref
from app.domain.viewer import Viewer
from app.imap.protocol import MAX_LINE
from app.imap.session import ServerOptions
from app.services.accounts import AccountService
from app.services.imap.mailboxes import ImapMailboxService

AUTOLOGOUT = 10 * 60


class Pop3Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        accounts: AccountService,
        mailboxes: ImapMailboxService,
        options: ServerOptions,
        tls: bool = False,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.options = options
        self.tls = tls
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = str(peer[0])
        self.user: str | None = None
        self.viewer: Viewer | None = None
        self.drop: list[dict[str, Any]] = []  # views, oldest first, with "size"
        self.deleted: set[int] = set()

    def send(self, line: str) -> None:
        self.writer.write(line.encode("utf-8") + b"\r\n")

    def send_multiline(self, data: bytes) -> None:
        # RFC 1939 §3: byte-stuff lines starting with "." and end with CRLF.CRLF
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        out = bytearray()
        for line in lines:
            line = line.rstrip(b"\r")
            out += (b"." + line if line.startswith(b".") else line) + b"\r\n"
        out += b".\r\n"
        self.writer.write(bytes(out))

    @property
    def may_login(self) -> bool:
        return self.tls or self.peer.startswith("127.") or self.peer == "::1"

    async def run(self) -> None:
        self.send(f"+OK {self.options.hostname} mailhub POP3 ready")
        await self.writer.drain()
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readuntil(b"\n"), AUTOLOGOUT)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                self.send("-ERR line too long")
                await self.writer.drain()
                return
            if len(line) > MAX_LINE:
                self.send("-ERR line too long")
                continue
            text = line.decode("utf-8", "replace").strip()
            name, _, arg = text.partition(" ")
            try:
                keep_going = await self.command(name.upper(), arg.strip())
            except (RateLimited, AuthError) as e:
                self.send(f"-ERR [AUTH] {e}")
                keep_going = True
            except DomainError as e:
                self.send(f"-ERR {' '.join(str(e).split())}")
                keep_going = True
            await self.writer.drain()
            if not keep_going:
                return

    async def command(self, name: str, arg: str) -> bool:
        if name == "CAPA":
            caps = ["USER", "UIDL", "TOP", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"]
            if self.options.tls_context is not None and not self.tls:
                caps.append("STLS")
            self.send("+OK capability list follows")
            for c in caps:
                self.send(c)
            self.send(".")
            return True
        if name == "QUIT":
            if self.viewer is not None and self.deleted:
                await self._move_deleted_to_trash()
            self.send("+OK bye")
            return False
        if name == "NOOP":
            self.send("+OK")
            return True
        if self.viewer is None:
            return await self._authorization(name, arg)
        return await self._transaction(name, arg)

    async def _authorization(self, name: str, arg: str) -> bool:
        if name == "STLS":
            if self.options.tls_context is None or self.tls:
                self.send("-ERR STLS not available")
                return True
            self.send("+OK begin TLS negotiation")
            await self.writer.drain()
            await self.writer.start_tls(self.options.tls_context)
            self.tls = True
            return True
        if name == "USER":
            if not self.may_login:
                self.send("-ERR [AUTH] use STLS before logging in")
                return True
            self.user = arg
            self.send("+OK send PASS")
            return True
        if name == "PASS":
            if self.user is None:
                self.send("-ERR USER first")
                return True
            user = await self.accounts.verify_password(self.user, arg, f"pop3:{self.peer}")
            self.viewer = Viewer(user["_id"], user["email"], user.get("name"))
            await self._load_drop()
            self.send(f"+OK {len(self.drop)} messages")
            return True
        self.send("-ERR log in with USER and PASS first")
        return True

    async def _load_drop(self) -> None:
        assert self.viewer is not None
        ref = folder_ref(Folder.INBOX)
        await self.mailboxes.sync(self.viewer, ref)
        entries = await self.mailboxes.entries(self.viewer, ref)
        views = await self.mailboxes.views(self.viewer, [e.item_id for e in entries])
        ordered = [views[e.item_id] for e in entries if e.item_id in views]
        messages = await self.mailboxes.messages(ordered)
        sizes = await self.mailboxes.raw_sizes(list(messages.values()))
        for view in ordered:
            view["size"] = sizes.get(view["message_id"], 0)
        self.drop = ordered

    def _message(self, arg: str) -> tuple[int, dict[str, Any]] | None:
        if not arg.isdigit() or not 1 <= int(arg) <= len(self.drop):
            self.send("-ERR no such message")
            return None
        n = int(arg)
        if n in self.deleted:
            self.send("-ERR message is deleted")
            return None
        return n, self.drop[n - 1]

    async def _raw(self, view: dict[str, Any]) -> bytes:
        messages = await self.mailboxes.messages([view])
        raws = await self.mailboxes.raw(list(messages.values()))
        return raws.get(view["message_id"], b"")

    async def _transaction(self, name: str, arg: str) -> bool:
        live = [(i + 1, v) for i, v in enumerate(self.drop) if i + 1 not in self.deleted]
        if name == "STAT":
            self.send(f"+OK {len(live)} {sum(v['size'] for _, v in live)}")
        elif name in ("LIST", "UIDL"):
            value = (lambda v: v["size"]) if name == "LIST" else (lambda v: str(v["_id"]))
            if arg:
                found = self._message(arg)
                if found:
                    self.send(f"+OK {found[0]} {value(found[1])}")
                return True
            self.send(f"+OK {len(live)} messages")
            for n, v in live:
                self.send(f"{n} {value(v)}")
            self.send(".")
        elif name == "RETR":
            found = self._message(arg)
            if found:
                raw = await self._raw(found[1])
                self.send(f"+OK {len(raw)} octets")
                self.send_multiline(raw)
        elif name == "TOP":
            number, _, lines = arg.partition(" ")
            if not lines.strip().isdigit():
                self.send("-ERR TOP needs a message number and a line count")
                return True
            found = self._message(number)
            if found:
                raw = await self._raw(found[1])
                head, sep, body = _split(raw)
                kept = b"".join(body.splitlines(keepends=True)[: int(lines)])
                self.send("+OK top of message follows")
                self.send_multiline(head + sep + kept)
        elif name == "DELE":
            found = self._message(arg)
            if found:
                self.deleted.add(found[0])
                self.send(f"+OK message {found[0]} marked (moves to Trash at QUIT)")
        elif name == "RSET":
            self.deleted.clear()
            self.send(f"+OK {len(self.drop)} messages")
        elif name in ("USER", "PASS", "STLS"):
            self.send("-ERR already logged in")
        else:
            self.send(f"-ERR unknown command {name[:20]}")
        return True

    async def _move_deleted_to_trash(self) -> None:
        assert self.viewer is not None
        views = [self.drop[n - 1] for n in sorted(self.deleted)]
        await self.mailboxes.move(
            self.viewer, folder_ref(Folder.INBOX), folder_ref(Folder.TRASH), views
        )


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return raw[:i], sep, raw[i + len(sep) :]
    return raw, b"", b""
