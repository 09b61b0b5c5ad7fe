"""One IMAP connection: states, commands and the selected mailbox's numbering (RFC 3501).

The session turns commands into calls on ``ImapMailboxService`` (which owns UIDs, flags and
every change, through the same mailbox service GraphQL uses) and keeps only what IMAP says is
per connection: the selected mailbox's message sequence numbers, the MODSEQ up to which this
client has been told about changes, and the enabled extensions. Any error in a command is a
tagged NO or BAD; the connection carries on.

One module although over 400 lines: it is the IMAP command table (one small handler per
command of RFC 3501 and its extensions) around one piece of per-connection state; splitting the
handlers from the state they all read would only add indirection.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import re
import ssl
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import structlog
from bson import ObjectId

from app.domain.errors import AuthError, DomainError, NotFound, RateLimited, ValidationError
from app.domain.imap_flags import PERMANENT_FLAGS, SYSTEM_FLAGS, canonical_flag, flags_of
from app.domain.imap_names import (
    DELIMITER,
    MailboxRef,
    decode_mutf7,
    encode_mutf7,
    resolve,
)
from app.domain.viewer import Viewer
from app.imap import mime
from app.imap.protocol import (
    Atom,
    BadCommand,
    Command,
    Disconnect,
    TooBig,
    as_number,
    as_text,
    compact_ranges,
    in_ranges,
    literal,
    parse_command,
    parse_sequence_set,
    quote,
    read_command,
)
from app.imap.search import Candidate, parse_criteria
from app.services.accounts import AccountService
from app.services.imap.mailboxes import CannotDo, Entry, ImapMailboxService

log = structlog.get_logger(__name__)

FETCH_CHUNK = 250
READ_AHEAD = 256  # messages (128 took 1.5-2.5 s longer over 10,000 in the dev loop)
FLUSH_BYTES = 256 << 10  # answers queued beyond this are written at once
READ_AHEAD_MAX_MESSAGE = 1 << 20
READ_AHEAD_MAX_BYTES = 16 << 20
VIEW_AHEAD_SECONDS = 1.0  # a FETCH command may use views checked against the log this long ago
IDLE_TIMEOUT = 29 * 60  # RFC 2177: clients re-IDLE within 29 minutes
AUTOLOGOUT = 30 * 60
_SECTION = re.compile(
    r"^(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?$", re.S | re.I
)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_SIMPLE_ITEMS = {
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",
}


class EventSource(Protocol):
    """The per-user change events (the realtime pub/sub hub): IDLE waits on them."""

    def listen(
        self, user_id: str, *, coalesce: bool = False
    ) -> AbstractAsyncContextManager[Any]: ...


@dataclass
class ServerOptions:
    max_literal: int
    tls_context: ssl.SSLContext | None
    hostname: str


@dataclass
class Selected:
    ref: MailboxRef
    readonly: bool
    uidvalidity: int
    uids: list[int] = field(default_factory=list)  # message sequence number - 1 → UID
    items: dict[int, ObjectId] = field(default_factory=dict)  # UID → view id
    modseqs: dict[int, int] = field(default_factory=dict)  # UID → MODSEQ
    modseq: int = 0  # changes up to here have been reported to the client
    pending_gone: set[int] = field(default_factory=set)  # expunges not yet reportable

    def msn(self, uid: int) -> int:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def add(self, entry: Entry) -> None:
        if entry.uid not in self.items:
            bisect.insort(self.uids, entry.uid)
        self.items[entry.uid] = entry.item_id
        self.modseqs[entry.uid] = entry.modseq

    def remove(self, uid: int) -> int:
        msn = self.msn(uid)
        if msn:
            del self.uids[msn - 1]
            self.items.pop(uid, None)
            self.modseqs.pop(uid, None)
        return msn


class Respond(Exception):
    """End a command with this tagged status (NO/BAD) and text."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class ImapSession:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        accounts: AccountService,
        mailboxes: ImapMailboxService,
        hub: EventSource,
        options: ServerOptions,
        tls: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.hub = hub
        self.options = options
        self.tls = tls
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = str(peer[0])
        self.viewer: Viewer | None = None
        self.selected: Selected | None = None
        self.condstore = False
        self.qresync = False
        self.done = False
        self.out = bytearray()  # responses not yet written
        self.read_ahead: dict[ObjectId, bytes] = {}  # message id → raw bytes fetched ahead
        self.ahead_until = 0  # the last UID of the views_ahead window
        self.fresh_at = 0.0  # when this session's FETCHes last compared views with the log
        self.prefetch: asyncio.Future[None] | None = None  # the read-ahead under way
        self.prefetching: set[ObjectId] = set()  # the messages it reads
        self.views_ahead: dict[ObjectId, dict[str, Any]] = {}  # the views after the last FETCH

    # --- plumbing ------------------------------------------------------------------------

    def send(self, line: bytes | str) -> None:
        """Queue a response line; ``flush`` writes what is queued in one go (one TLS record
        and one send per command, not one per line)."""
        self.out += line.encode("utf-8") if isinstance(line, str) else line
        self.out += b"\r\n"

    async def flush(self) -> None:
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
        await self.writer.drain()

    @property
    def loopback(self) -> bool:
        return self.peer.startswith("127.") or self.peer in ("::1", "localhost")

    @property
    def may_login(self) -> bool:
        return self.tls or self.loopback

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if self.viewer is None:
            if self.options.tls_context is not None and not self.tls:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.may_login else "LOGINDISABLED")
        else:
            caps += [
                "UIDPLUS",
                "MOVE",
                "SPECIAL-USE",
                "CONDSTORE",
                "QRESYNC",
                "UNSELECT",
                "CHILDREN",
                f"APPENDLIMIT={self.options.max_literal}",
            ]
        return " ".join(caps)

    async def run(self) -> None:
        self.send(
            f"* OK [CAPABILITY {self.capabilities()}] {self.options.hostname} mailhub IMAP ready"
        )
        await self.flush()
        try:
            await self._serve()
        finally:
            if self.prefetch is not None and not self.prefetch.done():
                self.prefetch.cancel()

    async def _serve(self) -> None:
        while not self.done:
            try:
                parts = await self._next_command()
            except (Disconnect, TimeoutError, ConnectionError):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.flush()  # answers to the commands before the end of input
                return
            except TooBig as e:
                limit = self.options.max_literal
                self.send(f"{e.tag or '*'} NO [TOOBIG] literal larger than {limit} bytes")
                await self.flush()
                continue
            except BadCommand as e:
                self.send(f"{e.tag or '*'} BAD {e}")
                await self.flush()
                continue
            await self.execute(parts)
            if len(self.out) > FLUSH_BYTES:
                await self.flush()
        await self.flush()

    async def _next_command(self) -> list[bytes]:
        """The next command. Answers queued so far are written once no further command is
        already buffered: a pipelining client (mbsync sends 50 FETCHes at a time) gets them
        in a few large TLS records instead of one write per command."""

        async def command() -> list[bytes]:
            async with asyncio.timeout(AUTOLOGOUT):  # one task: done in one step if buffered
                return await read_command(self.reader, self._continue, self.options.max_literal)

        read = asyncio.ensure_future(command())
        try:
            if self.out:
                await asyncio.sleep(0)  # a command already buffered is parsed in this step
                if not read.done():
                    await self.flush()
            return await read
        finally:
            if not read.done():
                read.cancel()

    async def _continue(self) -> None:
        self.send("+ Ready for literal data")
        await self.flush()

    async def execute(self, parts: list[bytes]) -> None:
        tag = "*"
        try:
            command = parse_command(parts)
            tag = command.tag
            if not _is_fetch(command):
                self.fresh_at = 0.0  # the next FETCH compares the views with the log again
            text = await self.dispatch(command)
            self.send(f"{tag} OK {text}")
        except Respond as r:
            self.send(f"{tag} {r.status} {r.text}")
        except BadCommand as e:
            self.send(f"{e.tag or tag} BAD {e}")
        except RateLimited as e:
            self.send(f"{tag} NO [UNAVAILABLE] {e}")
        except AuthError as e:
            self.send(f"{tag} NO [AUTHENTICATIONFAILED] {e}")
        except NotFound as e:
            self.send(f"{tag} NO [NONEXISTENT] {e}")
        except (CannotDo, ValidationError) as e:
            self.send(f"{tag} NO [CANNOT] {_one_line(e)}")
        except DomainError as e:
            self.send(f"{tag} NO [UNAVAILABLE] {_one_line(e)}")
        except (Disconnect, ConnectionError):
            self.done = True
        except _StartTls:
            self.send(f"{tag} OK begin TLS negotiation now")
            await self.flush()  # in the clear, before the handshake
            assert self.options.tls_context is not None
            await self.writer.start_tls(self.options.tls_context)
            self.tls = True
        except Exception:  # a bug must cost one command, not the connection
            log.exception("imap command failed", tag=tag)
            self.send(f"{tag} NO [SERVERBUG] internal error; the command was not completed")

    async def dispatch(self, cmd: Command) -> str:
        name = cmd.name
        if name == "UID":
            if not cmd.args or not isinstance(cmd.args[0], Atom):
                raise BadCommand("UID needs a command")
            sub = cmd.args[0].upper()
            if sub not in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"):
                raise BadCommand(f"UID {sub} is not a command")
            self._require_selected()
            handler = getattr(self, f"cmd_{sub.lower()}")
            return await handler(cmd.args[1:], uid=True)  # type: ignore[no-any-return]
        any_state = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
        unauthenticated = {"LOGIN", "AUTHENTICATE", "STARTTLS"}
        authenticated = {
            "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
            "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "ENABLE", "IDLE",
        }  # fmt: skip
        selected = {
            "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
        }  # fmt: skip
        if name in any_state:
            pass
        elif name in unauthenticated:
            if self.viewer is not None:
                raise BadCommand(f"{name} is not allowed after login")
        elif name in authenticated:
            self._require_auth()
        elif name in selected:
            self._require_selected()
        else:
            raise BadCommand(f"unknown command {name}")
        handler = getattr(self, f"cmd_{name.lower()}")
        if name in ("SEARCH", "FETCH", "STORE", "COPY", "MOVE", "EXPUNGE"):
            return await handler(cmd.args, uid=False)  # type: ignore[no-any-return]
        if name == "IDLE":
            return await self.cmd_idle(cmd)
        return await handler(cmd.args)  # type: ignore[no-any-return]

    def _require_auth(self) -> Viewer:
        if self.viewer is None:
            raise BadCommand("log in first")
        return self.viewer

    def _require_selected(self) -> Selected:
        self._require_auth()
        if self.selected is None:
            raise BadCommand("select a mailbox first")
        return self.selected

    # --- any state -------------------------------------------------------------------------

    async def cmd_capability(self, args: list[Any]) -> str:
        self.send(f"* CAPABILITY {self.capabilities()}")
        return "CAPABILITY completed"

    async def cmd_noop(self, args: list[Any]) -> str:
        if self.selected is not None:
            await self.refresh()
        return "NOOP completed"

    async def cmd_check(self, args: list[Any]) -> str:
        await self.refresh()
        return "CHECK completed"

    async def cmd_logout(self, args: list[Any]) -> str:
        self.send("* BYE logging out")
        self.done = True
        return "LOGOUT completed"

    async def cmd_id(self, args: list[Any]) -> str:
        self.send('* ID ("name" "mailhub")')
        return "ID completed"

    # --- not authenticated ----------------------------------------------------------------

    async def cmd_starttls(self, args: list[Any]) -> str:
        if self.options.tls_context is None or self.tls:
            raise BadCommand("STARTTLS is not available")
        raise _StartTls

    async def cmd_login(self, args: list[Any]) -> str:
        if len(args) != 2:
            raise BadCommand("LOGIN needs a user name and a password")
        if not self.may_login:
            raise Respond("NO", "[PRIVACYREQUIRED] use STARTTLS before logging in")
        await self._login(as_text(args[0], "user"), as_text(args[1], "password"))
        return f"[CAPABILITY {self.capabilities()}] logged in"

    async def cmd_authenticate(self, args: list[Any]) -> str:
        if not args or as_text(args[0]).upper() != "PLAIN":
            raise Respond("NO", "only AUTHENTICATE PLAIN is supported")
        if not self.may_login:
            raise Respond("NO", "[PRIVACYREQUIRED] use STARTTLS before logging in")
        if len(args) > 1:
            response = as_text(args[1])
        else:
            self.send("+ ")
            await self.flush()
            line = await self.reader.readline()
            if not line:
                raise Disconnect
            response = line.decode("ascii", "replace").strip()
        if response == "*":
            raise BadCommand("authentication cancelled")
        try:
            decoded = base64.b64decode(response if response != "=" else "", validate=True)
            _authzid, user, password = decoded.split(b"\x00")
        except ValueError:
            raise BadCommand("invalid SASL PLAIN response") from None
        await self._login(user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))
        return f"[CAPABILITY {self.capabilities()}] authenticated"

    async def _login(self, user: str, password: str) -> None:
        doc = await self.accounts.verify_password(user, password, f"imap:{self.peer}")
        self.viewer = Viewer(doc["_id"], doc["email"], doc.get("name"), None)

    # --- mailboxes ------------------------------------------------------------------------

    def _mailbox(self, value: Any) -> MailboxRef:
        return resolve(decode_mutf7(as_text(value, "mailbox")))

    async def cmd_select(self, args: list[Any], readonly: bool = False) -> str:
        viewer = self._require_auth()
        if not args:
            raise BadCommand("SELECT needs a mailbox")
        self.selected = None
        self.views_ahead, self.ahead_until = {}, 0
        ref = self._mailbox(args[0])
        qresync: list[Any] | None = None
        if len(args) > 1:
            params = args[1]
            if not isinstance(params, list):
                raise BadCommand("invalid SELECT parameters")
            for i, p in enumerate(params):
                name = str(p).upper() if isinstance(p, str) else ""
                if name == "CONDSTORE":
                    self.condstore = True
                elif name == "QRESYNC":
                    if not self.qresync:
                        raise BadCommand("ENABLE QRESYNC first")
                    if i + 1 >= len(params) or not isinstance(params[i + 1], list):
                        raise BadCommand("QRESYNC needs (uidvalidity modseq [uids])")
                    qresync = params[i + 1]
        if not await self.mailboxes.exists(viewer, ref):
            raise NotFound("no such mailbox")
        state = await self.mailboxes.sync(viewer, ref)
        sel = Selected(ref, readonly, state.uidvalidity, modseq=state.modseq)
        for entry in await self.mailboxes.entries(viewer, ref, state=state):
            sel.add(entry)
        flags = " ".join(SYSTEM_FLAGS)
        self.send(f"* FLAGS ({flags})")
        self.send(f"* {len(sel.uids)} EXISTS")
        self.send("* 0 RECENT")
        self.send(f"* OK [UIDVALIDITY {sel.uidvalidity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {state.uidnext}] predicted next UID")
        self.send(f"* OK [HIGHESTMODSEQ {state.highestmodseq}] highest")
        permanent = "" if readonly else " ".join(PERMANENT_FLAGS)
        self.send(f"* OK [PERMANENTFLAGS ({permanent})] flags kept")
        self.selected = sel
        if qresync is not None:
            await self._qresync(sel, qresync)
        if readonly:
            return "[READ-ONLY] EXAMINE completed"
        return "[READ-WRITE] SELECT completed"

    async def cmd_examine(self, args: list[Any]) -> str:
        return await self.cmd_select(args, readonly=True)

    async def _qresync(self, sel: Selected, params: list[Any]) -> None:
        """RFC 7162 §3.2.5: what changed since the client's (uidvalidity, modseq)."""
        if len(params) < 2:
            raise BadCommand("QRESYNC needs (uidvalidity modseq ...)")
        uidvalidity, since = as_number(params[0]), as_number(params[1])
        if uidvalidity != sel.uidvalidity:
            return  # the client starts over: nothing to tell
        known = (
            parse_sequence_set(params[2], max(sel.uids, default=0))
            if len(params) > 2 and isinstance(params[2], Atom)
            else None
        )
        changed = await self.mailboxes.entries(self._require_auth(), sel.ref, changed_after=since)
        gone = [e.uid for e in changed if e.gone and (known is None or in_ranges(e.uid, known))]
        if gone:
            self.send(f"* VANISHED (EARLIER) {compact_ranges(gone)}")
        live = [e.uid for e in changed if not e.gone and e.uid in sel.items]
        if live:
            await self._send_fetch(sel, live, ["UID", "FLAGS", "MODSEQ"], set_seen=False)

    async def cmd_unselect(self, args: list[Any]) -> str:
        self.selected = None
        return "UNSELECT completed"

    async def cmd_close(self, args: list[Any]) -> str:
        sel = self._require_selected()
        if not sel.readonly:
            await self._expunge(sel, None, report=False)
        self.selected = None
        return "CLOSE completed"

    async def cmd_create(self, args: list[Any]) -> str:
        if not args:
            raise BadCommand("CREATE needs a mailbox name")
        name = decode_mutf7(as_text(args[0], "mailbox")).rstrip(DELIMITER)
        await self.mailboxes.create(self._require_auth(), resolve(name))
        return "CREATE completed"

    async def cmd_delete(self, args: list[Any]) -> str:
        if not args:
            raise BadCommand("DELETE needs a mailbox name")
        ref = self._mailbox(args[0])
        if self.selected is not None and self.selected.ref == ref:
            self.selected = None
        await self.mailboxes.delete(self._require_auth(), ref)
        return "DELETE completed"

    async def cmd_rename(self, args: list[Any]) -> str:
        raise Respond("NO", "[CANNOT] renaming mailboxes is not supported")

    async def cmd_subscribe(self, args: list[Any]) -> str:
        return "SUBSCRIBE completed (every mailbox is subscribed)"

    async def cmd_unsubscribe(self, args: list[Any]) -> str:
        return "UNSUBSCRIBE completed (every mailbox stays subscribed)"

    async def cmd_namespace(self, args: list[Any]) -> str:
        self.send(f'* NAMESPACE (("" "{DELIMITER}")) NIL NIL')
        return "NAMESPACE completed"

    async def cmd_enable(self, args: list[Any]) -> str:
        enabled = []
        for a in args:
            name = as_text(a).upper()
            if name in ("CONDSTORE", "QRESYNC"):
                self.condstore = True
                if name == "QRESYNC":
                    self.qresync = True
                enabled.append(name)
        self.send("* ENABLED" + "".join(f" {n}" for n in enabled))
        return "ENABLE completed"

    async def cmd_list(self, args: list[Any], lsub: bool = False) -> str:
        viewer = self._require_auth()
        args = list(args)
        if args and isinstance(args[0], list):
            args.pop(0)  # LIST-EXTENDED selection options: every mailbox is subscribed anyway
        if len(args) < 2:
            raise BadCommand("LIST needs a reference and a pattern")
        reference = decode_mutf7(as_text(args[0], "reference"))
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        word = "LSUB" if lsub else "LIST"
        if len(patterns) == 1 and as_text(patterns[0]) == "":
            self.send(f'* {word} (\\Noselect) "{DELIMITER}" ""')
            return f"{word} completed"
        regexes = [_pattern(reference + decode_mutf7(as_text(p, "pattern"))) for p in patterns]
        for listed in await self.mailboxes.list_mailboxes(viewer):
            name = listed.ref.imap_name()
            if not any(r.match(name) for r in regexes):
                continue
            attrs = ["\\HasNoChildren"] + ([listed.special_use] if listed.special_use else [])
            if lsub:
                attrs = attrs[:1]
            self.send(
                f'* {word} ({" ".join(attrs)}) "{DELIMITER}" ' + quote(encode_mutf7(name)).decode()
            )
        return f"{word} completed"

    async def cmd_lsub(self, args: list[Any]) -> str:
        return await self.cmd_list(args, lsub=True)

    async def cmd_status(self, args: list[Any]) -> str:
        viewer = self._require_auth()
        if len(args) != 2 or not isinstance(args[1], list):
            raise BadCommand("STATUS needs a mailbox and a list of items")
        ref = self._mailbox(args[0])
        if not await self.mailboxes.exists(viewer, ref):
            raise NotFound("no such mailbox")
        wanted = [as_text(a).upper() for a in args[1]]
        state = await self.mailboxes.sync(viewer, ref)
        total, unseen = await self.mailboxes.counts(viewer, ref)
        values = {
            "MESSAGES": total,
            "RECENT": 0,
            "UIDNEXT": state.uidnext,
            "UIDVALIDITY": state.uidvalidity,
            "UNSEEN": unseen,
            "HIGHESTMODSEQ": state.highestmodseq,
        }
        out = []
        for w in wanted:
            if w not in values:
                raise BadCommand(f"unknown STATUS item {w}")
            out.append(f"{w} {values[w]}")
        self.send(f"* STATUS {quote(encode_mutf7(ref.imap_name())).decode()} ({' '.join(out)})")
        return "STATUS completed"

    async def cmd_append(self, args: list[Any]) -> str:
        viewer = self._require_auth()
        if len(args) < 2:
            raise BadCommand("APPEND needs a mailbox and a message")
        ref = self._mailbox(args[0])
        rest = list(args[1:])
        flags: list[str] = []
        when: datetime | None = None
        if rest and isinstance(rest[0], list):
            flags = [canonical_flag(as_text(f)) for f in rest.pop(0)]
        if rest and isinstance(rest[0], str) and not isinstance(rest[0], bytes) and len(rest) > 1:
            when = _parse_datetime(as_text(rest.pop(0)))
        if len(rest) != 1 or not isinstance(rest[0], bytes):
            raise BadCommand("APPEND needs the message as a literal")
        if not rest[0]:
            raise BadCommand("empty message")
        if not await self.mailboxes.exists(viewer, ref):
            raise Respond("NO", "[TRYCREATE] no such mailbox")
        item_id = await self.mailboxes.append(viewer, ref, rest[0], flags, when)
        state = await self.mailboxes.sync(viewer, ref)
        uid = (await self.mailboxes.uids_of(viewer, ref, [item_id])).get(item_id)
        if self.selected is not None:
            await self.refresh()
        if uid is None:
            return "APPEND completed"
        return f"[APPENDUID {state.uidvalidity} {uid}] APPEND completed"

    # --- selected state -----------------------------------------------------------------------

    def _resolve_set(self, sel: Selected, value: Any, uid: bool) -> list[int]:
        """The UIDs a sequence set (or UID set) names, in mailbox order. Unknown UIDs are
        ignored (RFC 3501 §6.4.8); a message number beyond the mailbox is an error."""
        if uid:
            ranges = parse_sequence_set(value, sel.uids[-1] if sel.uids else 0)
            if len(ranges) == 1:
                lo, hi = ranges[0]
                a, b = bisect.bisect_left(sel.uids, lo), bisect.bisect_right(sel.uids, hi)
                return sel.uids[a:b]
            return [u for u in sel.uids if in_ranges(u, ranges)]
        ranges = parse_sequence_set(value, len(sel.uids))
        out: set[int] = set()
        for lo, hi in ranges:
            if lo < 1 or hi > len(sel.uids):
                raise BadCommand("message sequence number out of range")
            out.update(range(lo, hi + 1))
        return [sel.uids[n - 1] for n in sorted(out)]

    async def cmd_fetch(self, args: list[Any], uid: bool) -> str:
        sel = self._require_selected()
        if len(args) < 2:
            raise BadCommand("FETCH needs a sequence set and items")
        uids = self._resolve_set(sel, args[0], uid)
        raw_items = args[1] if isinstance(args[1], list) else [args[1]]
        items: list[str] = []
        for it in raw_items:
            if not isinstance(it, Atom):
                raise BadCommand("invalid FETCH item")
            up = it.upper()
            if up in _MACROS and len(raw_items) == 1:
                items += _MACROS[up]
            elif up in _SIMPLE_ITEMS or _SECTION.match(it):
                items.append(str(it))
            else:
                raise BadCommand(f"unknown FETCH item {it}")
        changed_since: int | None = None
        vanished = False
        if len(args) > 2:
            modifiers = args[2]
            if not isinstance(modifiers, list):
                raise BadCommand("invalid FETCH modifiers")
            i = 0
            while i < len(modifiers):
                m = as_text(modifiers[i]).upper()
                if m == "CHANGEDSINCE" and i + 1 < len(modifiers):
                    changed_since = as_number(modifiers[i + 1], "CHANGEDSINCE")
                    i += 2
                elif m == "VANISHED" and uid and self.qresync:
                    vanished = True
                    i += 1
                else:
                    raise BadCommand(f"unknown FETCH modifier {m}")
            self.condstore = True
        if uid and "UID" not in (i.upper() for i in items):
            items.insert(0, "UID")
        if self.condstore and changed_since is not None and "MODSEQ" not in items:
            items.append("MODSEQ")
        if changed_since is not None:
            if vanished:
                ranges = parse_sequence_set(args[0], sel.uids[-1] if sel.uids else 0)
                changed = await self.mailboxes.entries(
                    self._require_auth(), sel.ref, changed_after=changed_since
                )
                gone = [e.uid for e in changed if e.gone and in_ranges(e.uid, ranges)]
                if gone:
                    self.send(f"* VANISHED (EARLIER) {compact_ranges(gone)}")
            uids = [u for u in uids if sel.modseqs.get(u, 0) > changed_since]
        # A run of FETCHes may use views checked by its first FETCH for VIEW_AHEAD_SECONDS;
        # the first FETCH after any other command (a new session's too) checks now.
        now = time.monotonic()
        max_age = VIEW_AHEAD_SECONDS if now - self.fresh_at < VIEW_AHEAD_SECONDS else 0.0
        if not max_age:
            self.fresh_at = now
        await self._send_fetch(sel, uids, items, set_seen=not sel.readonly, max_age=max_age)
        # no refresh here: a client syncing thousands of messages one UID FETCH at a time
        # hears about changes at its next NOOP/IDLE/SELECT or any command that changes state
        return "FETCH completed"

    async def _send_fetch(
        self,
        sel: Selected,
        uids: list[int],
        items: list[str],
        *,
        set_seen: bool,
        max_age: float = 0.0,
    ) -> None:
        viewer = self._require_auth()
        upper = [i.upper() for i in items]
        needs_raw = any(
            u not in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ") for u in upper
        )
        needs_size = "RFC822.SIZE" in upper
        marks_seen = set_seen and any(
            u == "RFC822" or u == "RFC822.TEXT" or (u.startswith(("BODY[", "BINARY[")))
            for u in upper
        )
        if len(uids) > FETCH_CHUNK:  # all the views first, in as few reads as the cache needs
            await self.mailboxes.views(
                viewer, [sel.items[u] for u in uids], max_age=max_age, within=sel.ref
            )
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = [u for u in uids[start : start + FETCH_CHUNK] if u in sel.items]
            views = await self._views_with_read_ahead(sel, chunk, max_age)
            present = [u for u in chunk if sel.items[u] in views]
            if marks_seen:
                unseen = [
                    views[sel.items[u]] for u in present if not views[sel.items[u]].get("read")
                ]
                if unseen:
                    await self.mailboxes.store_flags(viewer, unseen, ["\\Seen"], "add")
                    for v in unseen:  # a copy: the views may be the service's cached ones
                        views[v["_id"]] = {**v, "read": True}
                    if "FLAGS" not in upper:
                        items, upper = [*items, "FLAGS"], [*upper, "FLAGS"]
            messages: dict[ObjectId, dict[str, Any]] = {}
            raws: dict[ObjectId, bytes] = {}
            sizes: dict[ObjectId, int] = {}
            if needs_raw or needs_size:
                wanted = [views[sel.items[u]]["message_id"] for u in present]
                if needs_raw:
                    raws = await self._raw_with_read_ahead(sel, present, wanted)
                    sizes = {k: len(v) for k, v in raws.items()}
                else:
                    messages = await self.mailboxes.messages(list(views.values()))
                    sizes = await self.mailboxes.raw_sizes(list(messages.values()))
            for u in present:
                view = views[sel.items[u]]
                raw = raws.get(view["message_id"], b"")
                parts = [
                    self._fetch_item(item, up, u, sel, view, raw, sizes.get(view["message_id"], 0))
                    for item, up in zip(items, upper, strict=True)
                ]
                self.send(b"* %d FETCH (" % sel.msn(u) + b" ".join(parts) + b")")
            if len(self.out) > 1 << 20:
                await self.flush()

    async def _views_with_read_ahead(
        self, sel: Selected, uids: list[int], max_age: float
    ) -> dict[ObjectId, dict[str, Any]]:
        """The views of a FETCH, from the mailbox service's cache when it was compared with
        the change log less than ``max_age`` ago (a FETCH command: VIEW_AHEAD_SECONDS; flags
        another client changes meanwhile show that much later — as they would at the next
        NOOP anyway; everything else: checked now). On a small
        FETCH the next READ_AHEAD views come along (in the same query when not cached): their
        message ids tell ``_raw_with_read_ahead`` what to read ahead."""
        wanted = [sel.items[u] for u in uids]
        for item_id in wanted:
            self.views_ahead.pop(item_id, None)  # served: no longer ahead
        ahead: list[ObjectId] = []
        if 0 < len(uids) < 16:
            i = bisect.bisect_right(sel.uids, uids[-1])
            covered = bisect.bisect_right(sel.uids, self.ahead_until) - i
            if covered < READ_AHEAD // 2:  # the window runs out: move it (not every command)
                upto = sel.uids[i : i + READ_AHEAD]
                ahead = [sel.items[u] for u in upto]
                self.ahead_until = upto[-1] if upto else 0
        loaded = await self.mailboxes.views(
            self._require_auth(), wanted + ahead, max_age=max_age, within=sel.ref
        )
        if ahead:
            self.views_ahead = {i: loaded[i] for i in ahead if i in loaded}
        return {i: loaded[i] for i in wanted if i in loaded}

    async def _raw_with_read_ahead(
        self, sel: Selected, uids: list[int], message_ids: list[ObjectId]
    ) -> dict[ObjectId, bytes]:
        """Raw messages for a FETCH. A client that downloads one UID per command (mbsync,
        pipelined) asks next for the following UIDs: on a small FETCH, the messages of the
        next READ_AHEAD views (immutable bytes) are read in the background while the
        commands already received are answered from memory, so the database's work and ours
        overlap (two processes, two cores) instead of taking turns."""
        if self.prefetch is not None and any(
            m in self.prefetching and m not in self.read_ahead for m in message_ids
        ):
            await asyncio.wait({self.prefetch})  # its errors are its own: read again below
        out = {m: self.read_ahead.pop(m) for m in message_ids if m in self.read_ahead}
        missing = [m for m in message_ids if m not in out]
        if missing:
            raws = await self.mailboxes.raw_by_message(missing)
            out.update({m: raws.get(m, b"") for m in missing})
        if len(uids) < 16 and uids and (self.prefetch is None or self.prefetch.done()):
            upcoming = [
                v["message_id"]
                for v in self.views_ahead.values()
                if (v.get("size") or 0) < READ_AHEAD_MAX_MESSAGE
                and v["message_id"] not in out
                and v["message_id"] not in self.read_ahead
            ]
            if len(upcoming) >= READ_AHEAD // 2 or (upcoming and not self.read_ahead):
                if sum(len(v) for v in self.read_ahead.values()) > READ_AHEAD_MAX_BYTES:
                    self.read_ahead.clear()
                self.prefetching = set(upcoming)
                self.prefetch = asyncio.ensure_future(self._prefetch(upcoming))
        return out

    async def _prefetch(self, message_ids: list[ObjectId]) -> None:
        try:
            raws = await self.mailboxes.raw_by_message(message_ids)
        except Exception:  # the FETCH that needs them reads them itself
            log.warning("imap read-ahead failed", exc_info=True)
            return
        finally:
            self.prefetching = set()
        self.read_ahead.update(raws)

    def _fetch_item(
        self,
        item: str,
        up: str,
        uid: int,
        sel: Selected,
        view: dict[str, Any],
        raw: bytes,
        size: int,
    ) -> bytes:
        if up == "UID":
            return b"UID %d" % uid
        if up == "FLAGS":
            return b"FLAGS (" + " ".join(flags_of(view)).encode() + b")"
        if up == "MODSEQ":
            return b"MODSEQ (%d)" % sel.modseqs.get(uid, 1)
        if up == "INTERNALDATE":
            return b'INTERNALDATE "' + _imap_date(view.get("received_at")).encode() + b'"'
        if up == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % size
        if up == "ENVELOPE":
            return b"ENVELOPE " + mime.envelope(mime.parse(raw).headers)
        if up == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + mime.bodystructure(mime.parse(raw))
        if up == "BODY":
            return b"BODY " + mime.bodystructure(mime.parse(raw), extended=False)
        if up == "RFC822":
            return b"RFC822 " + literal(raw)
        if up == "RFC822.HEADER":
            return b"RFC822.HEADER " + literal(mime.split_header(raw)[0])
        if up == "RFC822.TEXT":
            return b"RFC822.TEXT " + literal(mime.split_header(raw)[1])
        match = _SECTION.match(item)
        assert match is not None  # checked when the command was parsed
        kind, section, origin, length = match.groups()
        data = mime.section_bytes(raw, section) or b""
        name = f"{kind.upper().replace('.PEEK', '')}[{section.upper()}]"
        if origin is not None:
            start = int(origin)
            data = data[start : start + int(length)] if length is not None else data[start:]
            name += f"<{start}>"
        return name.encode() + b" " + literal(data)

    async def cmd_store(self, args: list[Any], uid: bool) -> str:
        sel = self._require_selected()
        if sel.readonly:
            raise Respond("NO", "[READ-ONLY] the mailbox is selected read-only")
        if len(args) < 3:
            raise BadCommand("STORE needs a sequence set, an action and flags")
        uids = self._resolve_set(sel, args[0], uid)
        rest = list(args[1:])
        unchanged_since: int | None = None
        if isinstance(rest[0], list):
            modifier = rest.pop(0)
            if len(modifier) != 2 or as_text(modifier[0]).upper() != "UNCHANGEDSINCE":
                raise BadCommand("invalid STORE modifier")
            unchanged_since = as_number(modifier[1], "UNCHANGEDSINCE")
            self.condstore = True
        if len(rest) < 2:
            raise BadCommand("STORE needs an action and flags")
        action = as_text(rest[0]).upper()
        silent = action.endswith(".SILENT")
        action = action.removesuffix(".SILENT")
        modes = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
        if action not in modes:
            raise BadCommand(f"unknown STORE action {action}")
        flag_values = rest[1] if isinstance(rest[1], list) else rest[1:]
        flags = [canonical_flag(as_text(f)) for f in flag_values]
        modified: list[int] = []
        if unchanged_since is not None:
            modified = [u for u in uids if sel.modseqs.get(u, 0) > unchanged_since]
            uids = [u for u in uids if u not in set(modified)]
        viewer = self._require_auth()
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            views = await self.mailboxes.views(viewer, [sel.items[u] for u in chunk])
            await self.mailboxes.store_flags(viewer, list(views.values()), flags, modes[action])
        await self.refresh(expunges=uid, report_flags=not silent)
        if not silent and uids:
            # RFC 3501 §6.4.6: a FETCH with the new flags for every message named
            await self._send_fetch(
                sel,
                uids,
                (["UID"] if uid else []) + ["FLAGS"] + (["MODSEQ"] if self.condstore else []),
                set_seen=False,
            )
        if modified:
            label = compact_ranges(modified if uid else [sel.msn(u) for u in modified])
            return f"[MODIFIED {label}] conditional STORE failed for some messages"
        return "STORE completed"

    async def cmd_search(self, args: list[Any], uid: bool) -> str:
        sel = self._require_selected()
        viewer = self._require_auth()
        args = list(args)
        if args and isinstance(args[0], Atom) and args[0].upper() == "RETURN":
            raise BadCommand("SEARCH RETURN (ESEARCH) is not supported")
        if args and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            if len(args) < 2 or as_text(args[1]).upper() not in ("UTF-8", "US-ASCII"):
                raise Respond("NO", "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
            args = args[2:]
        criteria = parse_criteria(args, len(sel.uids), sel.uids[-1] if sel.uids else 0)
        hits: list[int] = []
        highest = 0
        uids = list(sel.uids)
        for start in range(0, len(uids), 1000):
            chunk = uids[start : start + 1000]
            views = await self.mailboxes.views(viewer, [sel.items[u] for u in chunk])
            messages: dict[ObjectId, dict[str, Any]] = {}
            sizes: dict[ObjectId, int] = {}
            if criteria.needs_message or True:
                messages = await self.mailboxes.messages(
                    list(views.values()),
                    {
                        "raw_blob_id": 1,
                        "subject": 1,
                        "from": 1,
                        "to": 1,
                        "cc": 1,
                        "bcc": 1,
                        "text_body": 1,
                        "headers": 1,
                        "date": 1,
                        "size": 1,
                    },
                )
            for u in chunk:
                view = views.get(sel.items[u])
                if view is None:
                    continue
                message = messages.get(view["message_id"], {})
                size = sizes.get(view["message_id"], message.get("size") or 0)
                candidate = Candidate(sel.msn(u), u, sel.modseqs.get(u, 1), view, message, size)
                if criteria.test(candidate):
                    hits.append(u if uid else candidate.msn)
                    highest = max(highest, candidate.modseq)
        line = "* SEARCH" + "".join(f" {h}" for h in hits)
        if criteria.modseq and hits:
            line += f" (MODSEQ {highest})"
        self.send(line)
        return "SEARCH completed"

    async def cmd_copy(self, args: list[Any], uid: bool, move: bool = False) -> str:
        sel = self._require_selected()
        viewer = self._require_auth()
        if len(args) != 2:
            raise BadCommand("COPY/MOVE needs a sequence set and a mailbox")
        uids = self._resolve_set(sel, args[0], uid)
        target = self._mailbox(args[1])
        if not await self.mailboxes.exists(viewer, target):
            raise Respond("NO", "[TRYCREATE] no such mailbox")
        if move and sel.readonly:
            raise Respond("NO", "[READ-ONLY] the mailbox is selected read-only")
        if not uids:
            return "nothing to do"
        views = await self.mailboxes.views(viewer, [sel.items[u] for u in uids])
        ordered = [views[sel.items[u]] for u in uids if sel.items[u] in views]
        if move:
            await self.mailboxes.move(viewer, sel.ref, target, ordered)
        else:
            await self.mailboxes.copy(viewer, sel.ref, target, ordered)
        state = await self.mailboxes.sync(viewer, target)
        new = await self.mailboxes.uids_of(viewer, target, [v["_id"] for v in ordered])
        pairs = [(u, new[sel.items[u]]) for u in uids if sel.items.get(u) in new]
        code = ""
        if pairs:
            sources = ",".join(str(a) for a, _ in pairs)
            targets = ",".join(str(b) for _, b in pairs)
            code = f"[COPYUID {state.uidvalidity} {sources} {targets}] "
        if move:
            if code:
                self.send(f"* OK {code}moved")
            await self.refresh()
            return "MOVE completed"
        await self.refresh(expunges=uid)
        return f"{code}COPY completed"

    async def cmd_move(self, args: list[Any], uid: bool) -> str:
        return await self.cmd_copy(args, uid, move=True)

    async def cmd_expunge(self, args: list[Any], uid: bool) -> str:
        sel = self._require_selected()
        if sel.readonly:
            raise Respond("NO", "[READ-ONLY] the mailbox is selected read-only")
        only = None
        if uid:
            if len(args) != 1:
                raise BadCommand("UID EXPUNGE needs a UID set")
            only = set(self._resolve_set(sel, args[0], True))
        await self._expunge(sel, only, report=True)
        return "EXPUNGE completed"

    async def _expunge(self, sel: Selected, only: set[int] | None, *, report: bool) -> None:
        viewer = self._require_auth()
        uids = [u for u in sel.uids if only is None or u in only]
        for start in range(0, len(uids), 1000):
            chunk = uids[start : start + 1000]
            views = await self.mailboxes.views(viewer, [sel.items[u] for u in chunk])
            await self.mailboxes.expunge(viewer, sel.ref, list(views.values()))
        if report:
            await self.refresh()

    async def cmd_idle(self, cmd: Command) -> str:
        viewer = self._require_auth()
        self.send("+ idling")
        await self.flush()
        async with self.hub.listen(str(viewer.user_id), coalesce=True) as listener:
            if self.selected is not None:
                await self.refresh()  # what happened between the last command and now
                await self.flush()
            line_task = asyncio.ensure_future(self.reader.readline())
            try:
                while True:
                    event_task = asyncio.ensure_future(listener.queue.get())
                    done, _ = await asyncio.wait(
                        {line_task, event_task},
                        timeout=IDLE_TIMEOUT,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if event_task not in done:
                        event_task.cancel()
                    if line_task in done:
                        line = line_task.result()
                        if not line:
                            raise Disconnect
                        if line.strip().upper() != b"DONE":
                            raise BadCommand("expected DONE")
                        return "IDLE terminated"
                    if not done:
                        raise Disconnect  # RFC 2177: the server may drop a client idle too long
                    while not listener.queue.empty():
                        listener.queue.get_nowait()  # one refresh covers them all
                    if self.selected is not None:
                        await self.refresh()
                        await self.flush()
            finally:
                if not line_task.done():
                    line_task.cancel()
                    with contextlib.suppress(BaseException):
                        await line_task

    # --- reporting changes ---------------------------------------------------------------------

    async def refresh(self, *, expunges: bool = True, report_flags: bool = True) -> None:
        """Tell the client what changed in the selected mailbox since it was last told:
        expunges (unless the command forbids them), new messages, changed flags."""
        sel = self.selected
        viewer = self.viewer
        if sel is None or viewer is None:
            return
        state = await self.mailboxes.sync(viewer, sel.ref)
        if state.modseq > sel.modseq:
            changed = await self.mailboxes.entries(viewer, sel.ref, changed_after=sel.modseq)
            sel.modseq = state.modseq
            flags_changed = []
            new = 0
            for entry in changed:
                if entry.gone:
                    if entry.uid in sel.items:
                        sel.pending_gone.add(entry.uid)
                elif entry.uid in sel.items:
                    sel.modseqs[entry.uid] = entry.modseq
                    flags_changed.append(entry.uid)
                else:
                    sel.add(entry)
                    new += 1
            if flags_changed and report_flags:
                items = ["UID", "FLAGS"] + (["MODSEQ"] if self.condstore else [])
                await self._send_fetch(
                    sel,
                    [u for u in flags_changed if u not in sel.pending_gone],
                    items,
                    set_seen=False,
                )
            if new:
                self.send(f"* {len(sel.uids)} EXISTS")
        if expunges and sel.pending_gone:
            gone = sorted(sel.pending_gone)
            sel.pending_gone.clear()
            if self.qresync:
                for u in gone:
                    sel.remove(u)
                self.send(f"* VANISHED {compact_ranges(gone)}")
            else:
                for u in reversed(gone):
                    msn = sel.remove(u)
                    if msn:
                        self.send(f"* {msn} EXPUNGE")


def _is_fetch(command: Command) -> bool:
    if command.name == "FETCH":
        return True
    return (
        command.name == "UID"
        and bool(command.args)
        and isinstance(command.args[0], str)
        and command.args[0].upper() == "FETCH"
    )


class _StartTls(Exception):
    """Raised by STARTTLS: the server answers OK, then upgrades the connection."""


def _pattern(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    regex = "".join(out)
    # INBOX is case-insensitive
    if pattern.upper().startswith("INBOX"):
        regex = "(?i:" + regex[:5] + ")" + regex[5:]
    return re.compile(f"^{regex}$")


def _imap_date(value: Any) -> str:
    if not isinstance(value, datetime):
        value = datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.strftime("%d-%b-%Y %H:%M:%S %z")


def _parse_datetime(text: str) -> datetime:
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise BadCommand(f"invalid date-time {text!r}") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
