"""IMAP with a real client (imaplib) against the real listener over the real servers."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.errors import NotFound
from app.domain.parsing import parse_message
from app.domain.viewer import Viewer
from tests.e2e.conftest import DOMAIN
from tests.support.imap import PASSWORD, MailClients, deliver, running_mail_clients, sample_message

pytestmark = pytest.mark.timeout(300)

DATA = Path(__file__).resolve().parent.parent / "data"


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


async def user_id_of(system: Any, email: str) -> Any:
    return (await system.mongo.db.users.find_one({"email": email}))["_id"]


async def test_flags_both_ways_fire_the_same_events(clients: MailClients) -> None:
    system = clients.system
    email = await make_user(system, "bea")
    await deliver(system, email, [sample_message(n, email) for n in range(3)])
    user_id = await user_id_of(system, email)
    events: list[dict[str, Any]] = []

    async def listen(ready: asyncio.Event) -> None:
        async with system.hub.listen(str(user_id)) as listener:
            ready.set()
            while True:
                events.append(await listener.queue.get())

    ready = asyncio.Event()
    listening = asyncio.create_task(listen(ready))
    await ready.wait()
    imap = await asyncio.to_thread(connect, clients.imap_port, email)
    ok(await asyncio.to_thread(imap.select, "INBOX"))
    stored = ok(await asyncio.to_thread(imap.store, "1", "+FLAGS", "(\\Seen \\Flagged $Work)"))
    assert b"\\Seen" in stored[0] and b"$Work" in stored[0]
    ok(await asyncio.to_thread(imap.store, "2", "+FLAGS", "(\\Answered)"))
    items = await system.mongo.db.mailbox_items.find({"user_id": user_id}).to_list()
    flagged = [i for i in items if i.get("starred")]
    assert len(flagged) == 1 and flagged[0]["read"] and flagged[0]["keywords"] == ["$Work"]
    assert sum(1 for i in items if i.get("answered")) == 1
    for _ in range(100):
        if len(events) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [e["kind"] for e in events[:2]] == ["updated", "updated"]  # what mailboxEvents reads
    counter = await system.mongo.db.mailbox_counters.find_one(
        {"user_id": user_id, "kind": "folder", "name": "INBOX"}
    )
    assert counter["unread"] == 2  # unreadCounts moved with the IMAP change
    listening.cancel()

    # the other way: a change through the mailbox service (what GraphQL calls) reaches IMAP
    from app.domain.viewer import Viewer
    from app.services.mailbox.changes import StateChange

    third = next(i for i in items if not i.get("read") and not i.get("answered"))
    # every view in the IMAP process's view cache first: the change must still show
    before = ok(await asyncio.to_thread(imap.fetch, "1:*", "(FLAGS)"))
    assert sum(b"\\Flagged" in line for line in before) == 1
    await system.mailbox_changes.update_items(
        Viewer(user_id, email), [str(third["_id"])], StateChange(read=True, starred=True)
    )

    def fresh_session_flags() -> list[Any]:  # within a second of the cache's last check
        other = connect(clients.imap_port, email)
        ok(other.select("INBOX"))
        flags = ok(other.fetch("1:*", "(FLAGS)"))
        other.logout()
        return flags  # type: ignore[no-any-return]

    seen = await asyncio.to_thread(fresh_session_flags)
    assert sum(b"\\Flagged" in line for line in seen) == 2, seen
    typ, data = await asyncio.to_thread(imap.noop)
    assert typ == "OK"
    untagged = imap.untagged_responses.get("FETCH", [])
    assert any(b"\\Seen" in line and b"\\Flagged" in line for line in untagged), untagged
    imap.untagged_responses.clear()  # imaplib keeps the NOOP's FETCH lines otherwise
    after = ok(await asyncio.to_thread(imap.fetch, "1:*", "(FLAGS)"))
    assert sum(b"\\Flagged" in line for line in after) == 2, after
    # and a change made by another IMAP session of the same process
    other = await asyncio.to_thread(connect, clients.imap_port, email)
    ok(await asyncio.to_thread(other.select, "INBOX"))
    ok(await asyncio.to_thread(other.store, "1:*", "-FLAGS", "(\\Flagged)"))
    await asyncio.to_thread(other.logout)
    imap.untagged_responses.clear()  # imaplib keeps the NOOP's FETCH lines otherwise
    after = ok(await asyncio.to_thread(imap.fetch, "1:*", "(FLAGS)"))
    assert not any(b"\\Flagged" in line for line in after), after
    await asyncio.to_thread(imap.logout)


async def test_move_copy_expunge_with_uidplus(clients: MailClients) -> None:
    system = clients.system
    email = await make_user(system, "cid")
    await deliver(system, email, [sample_message(n, email) for n in range(6)])
    user_id = await user_id_of(system, email)

    def session() -> dict[str, Any]:
        imap = connect(clients.imap_port, email)
        out: dict[str, Any] = {}
        ok(imap.select("INBOX"))
        typ, data = imap.uid("MOVE", "1", "Archive")
        out["move"] = (typ, data, imap.untagged_responses.pop("OK", []))
        out["expunge_seen"] = imap.untagged_responses.pop("EXPUNGE", [])
        out["copy_label"] = imap.uid("COPY", "2", "Work")  # creates nothing: TRYCREATE
        out["create"] = imap.create("Work")
        imap.untagged_responses.pop("COPYUID", None)
        out["copy_label2"] = imap.uid("COPY", "2", "Work")
        out["copyuid"] = imap.untagged_responses.pop("COPYUID", None)
        out["copy_folder"] = imap.uid("COPY", "2", "Trash")
        ok(imap.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)"))
        out["expunge"] = imap.expunge()
        out["work"] = imap.select("Work")
        out["work_fetch"] = imap.fetch("1:*", "(UID FLAGS)")
        ok(imap.select("Trash"))
        out["trash"] = imap.fetch("1:*", "(UID)")
        ok(imap.store("1", "+FLAGS", "(\\Deleted)"))
        out["trash_expunge"] = imap.expunge()
        imap.logout()
        return out

    out = await asyncio.to_thread(session)
    typ, _data, untagged_ok = out["move"]
    assert typ == "OK"
    assert any(b"COPYUID" in line for line in untagged_ok), untagged_ok
    assert out["expunge_seen"] == [b"1"]
    assert out["copy_label"][0] == "NO" and b"TRYCREATE" in out["copy_label"][1][0]
    assert out["create"][0] == "OK"
    assert out["copy_label2"][0] == "OK" and out["copyuid"] and out["copyuid"][0].endswith(b" 2 1")
    assert out["copy_folder"][0] == "NO" and b"CANNOT" in out["copy_folder"][1][0]
    assert out["expunge"][0] == "OK" and out["expunge"][1] != [None]
    assert out["work"][1] == [b"1"]
    assert out["trash"][0] == "OK" and len(out["trash"][1]) == 1
    items = await system.mongo.db.mailbox_items.find({"user_id": user_id}).to_list()
    folders = sorted(i["folder"] for i in items)
    # 6 delivered: one archived, one trashed and then deleted for good, four in the inbox
    assert folders == ["ARCHIVE", "INBOX", "INBOX", "INBOX", "INBOX"]
    assert sum(1 for i in items if "Work" in i.get("labels", [])) == 1
    assert not any(i.get("keywords") for i in items)


async def test_condstore_and_qresync_report_only_changes(clients: MailClients) -> None:
    system = clients.system
    email = await make_user(system, "dan")
    await deliver(system, email, [sample_message(n, email) for n in range(5)])

    def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        imap = connect(clients.imap_port, email)
        ok(imap._simple_command("ENABLE", "QRESYNC"))
        imap.select("INBOX")
        modseq = int(imap.untagged_responses["HIGHESTMODSEQ"][-1])
        uidvalidity = int(imap.untagged_responses["UIDVALIDITY"][-1])
        out["modseq"] = modseq
        ok(imap.uid("STORE", "2", "+FLAGS", "(\\Flagged)"))
        imap.untagged_responses.pop("FETCH", None)
        out["changed"] = ok(imap.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {modseq})"))
        out["unchanged"] = imap.uid("STORE", "3", "(UNCHANGEDSINCE 1) +FLAGS", "(\\Seen)")
        out["modified"] = imap.untagged_responses.pop("MODIFIED", None)
        ok(imap.uid("STORE", "4", "+FLAGS.SILENT", "(\\Deleted)"))
        ok(imap.expunge())
        imap.logout()
        again = connect(clients.imap_port, email)
        ok(again._simple_command("ENABLE", "QRESYNC"))
        typ, data = again._simple_command("SELECT", "INBOX", f"(QRESYNC ({uidvalidity} {modseq}))")
        out["qresync"] = (
            typ,
            again.untagged_responses.get("VANISHED"),
            again.untagged_responses.get("FETCH"),
        )
        again.logout()
        return out

    out = await asyncio.to_thread(session)
    changed = [line for line in out["changed"] if line]
    assert len(changed) == 1 and changed[0].startswith(b"2 (") and b"MODSEQ (" in changed[0]
    assert out["unchanged"][0] == "OK" and out["modified"] == [b"3"]
    typ, vanished, fetched = out["qresync"]
    assert typ == "OK"
    assert vanished == [b"(EARLIER) 4"]
    assert fetched and any(b"UID 2" in f for f in fetched)


async def test_append_to_sent_and_drafts(clients: MailClients) -> None:
    system = clients.system
    email = await make_user(system, "eve")
    raw = sample_message(1, "friend@remote.test", subject="Sent from my mail client")
    raw = raw.replace(b"From: Sender 1 <sender1@remote.test>", f"From: Eve <{email}>".encode())

    def session() -> dict[str, Any]:
        imap = connect(clients.imap_port, email)
        out = {"append": imap.append("Sent", "(\\Seen)", None, raw)}
        out["appenduid"] = imap.untagged_responses.pop("APPENDUID", None)
        out["draft"] = imap.append("Drafts", "(\\Draft)", None, raw)
        out["nowhere"] = imap.append("NoSuchBox", None, None, raw)
        ok(imap.select("Sent"))
        out["fetch"] = ok(imap.fetch("1", "(FLAGS BODY.PEEK[])"))
        ok(imap.select("Drafts"))
        out["draft_flags"] = ok(imap.fetch("1", "(FLAGS)"))
        imap.logout()
        return out

    out = await asyncio.to_thread(session)
    assert out["append"][0] == "OK" and out["appenduid"] and out["appenduid"][0].endswith(b" 1")
    assert out["nowhere"][0] == "NO" and b"TRYCREATE" in out["nowhere"][1][0]
    assert out["fetch"][0][1] == raw
    assert b"\\Seen" in out["fetch"][0][0]
    assert b"\\Draft" in out["draft_flags"][0]
    user_id = await user_id_of(system, email)
    sent = await system.mongo.db.mailbox_items.find_one({"user_id": user_id, "folder": "SENT"})
    assert sent["role"] == "sent" and sent["read"] and sent["subject"] == "Sent from my mail client"


async def test_an_appended_messages_attachments_are_listed_and_download(
    clients: MailClients,
) -> None:
    """A message a mail client APPENDs keeps its attachments in its raw MIME, listed on the
    message and downloadable like a received message's (before, it listed none)."""
    system = clients.system
    email = await make_user(system, "fay")
    raw = (DATA / "eml" / "attachments.eml").read_bytes().replace(b"\r\n", b"\n")
    raw = raw.replace(b"\n", b"\r\n")

    def session() -> Any:
        imap = connect(clients.imap_port, email)
        out = imap.append("Archive", None, None, raw)
        imap.logout()
        return out

    assert (await asyncio.to_thread(session))[0] == "OK"
    user_id = await user_id_of(system, email)
    item = await system.mongo.db.mailbox_items.find_one({"user_id": user_id})
    message = await system.mongo.db.messages.find_one({"_id": item["message_id"]})
    expected = parse_message(raw).attachments
    assert [(a["filename"], a["size"]) for a in message["attachments"]] == [
        (a.filename, len(a.data)) for a in expected
    ]
    viewer = Viewer(user_id, email)
    for ref, original in zip(message["attachments"], expected, strict=True):
        doc = await system.attachments.for_download(viewer, str(ref["id"]))
        data = b"".join([chunk async for chunk in await system.attachments.content(doc)])
        assert data == original.data, ref["filename"]
    other = Viewer(
        (await system.accounts.create_user(f"gus@{DOMAIN}", PASSWORD, "Gus"))["_id"],
        f"gus@{DOMAIN}",
    )
    with pytest.raises(NotFound):
        await system.attachments.for_download(other, str(message["attachments"][0]["id"]))


class RawClient:
    """A line-level IMAP client for what imaplib cannot do (IDLE, malformed input)."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, data: bytes) -> list[bytes]:
        """Send one command line (tag first); read until its tagged answer."""
        tag = data.split(b" ", 1)[0]
        self.send(data + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def zone():  # type: ignore[no-untyped-def]
    from tests.support.mx import mail_zone

    z = mail_zone()
    yield z
    z.dns.stop()


async def test_idle_gets_exists_for_mail_through_the_mx(settings, zone) -> None:  # type: ignore[no-untyped-def]
    from tests.support.mx import message, running_mx, smtp_send

    async with running_mx(settings, zone) as harness:
        email, _ = await harness.user("bob")
        async for clients in running_mail_clients(harness.system, harness.settings):
            client = await asyncio.to_thread(RawClient, clients.imap_port)
            login = f'a LOGIN {email} "{PASSWORD}"'.encode()
            assert (await asyncio.to_thread(client.command, login))[-1].startswith(b"a OK")
            assert (await asyncio.to_thread(client.command, b"b SELECT INBOX"))[-1].startswith(
                b"b OK"
            )
            client.send(b"c IDLE\r\n")
            assert (await asyncio.to_thread(client.line)).startswith(b"+ ")
            reply = await smtp_send(harness.port, message(subject="while idling"))
            assert reply["data"][0] == 250

            def until_exists(client: RawClient = client) -> bytes:
                while True:
                    line = client.line()
                    if line.endswith(b"EXISTS\r\n") or not line:
                        return line

            assert await asyncio.to_thread(until_exists) == b"* 1 EXISTS\r\n"
            client.send(b"DONE\r\n")
            assert (await asyncio.to_thread(client.line)).startswith(b"c OK")
            await asyncio.to_thread(client.close)


async def test_error_paths_answer_no_or_bad_and_keep_serving(settings, system) -> None:  # type: ignore[no-untyped-def]
    email = await make_user(system, "fay")
    await deliver(system, email, [sample_message(n, email) for n in range(3)])
    small = settings.model_copy(update={"imap_max_literal": 2048})

    def session(port: int) -> dict[str, list[bytes]]:
        c = RawClient(port)
        out = {
            "fetch_unauth": c.command(b"a1 FETCH 1 FLAGS"),
            "select_unauth": c.command(b"a2 SELECT INBOX"),
            "bad_login": c.command(f'a3 LOGIN {email} "wrong"'.encode()),
            "login": c.command(f'a4 LOGIN {email} "{PASSWORD}"'.encode()),
            "login_again": c.command(f'a5 LOGIN {email} "{PASSWORD}"'.encode()),
            "fetch_unselected": c.command(b"a6 FETCH 1 FLAGS"),
            "select_missing": c.command(b"a7 SELECT NoSuchBox"),
            "select": c.command(b"a8 SELECT INBOX"),
            "bad_set": c.command(b"a9 UID FETCH abc FLAGS"),
            "zero_set": c.command(b"b1 FETCH 0 FLAGS"),
            "beyond": c.command(b"b2 FETCH 1:10000 FLAGS"),
            "uid_beyond": c.command(b"b3 UID FETCH 1:10000 (FLAGS)"),
            "unknown_item": c.command(b"b4 FETCH 1 (FLAGS NONSENSE)"),
            "unknown_cmd": c.command(b"b5 FROBNICATE"),
            "bad_flag": c.command(b"b6 STORE 1 +FLAGS (\\Bogus)"),
            "bad_search": c.command(b"b7 SEARCH FROB 1"),
            "huge_literal": c.command(b"b8 APPEND INBOX {999999999}"),
            # LITERAL+: the bytes come anyway; the server reads and drops them, then says NO
            "huge_nonsync": c.command(b"b9 APPEND INBOX {4096+}\r\n" + b"x" * 4096),
            "long_line": c.command(b"c0 NOOP " + b"y" * 100_000),
        }
        out["after"] = c.command(b"c1 NOOP")
        out["search"] = c.command(b"c2 UID SEARCH UNSEEN SINCE 1-Jan-2000 NOT DELETED")
        c.close()
        return out

    async for clients in running_mail_clients(system, small):
        out = await asyncio.to_thread(session, clients.imap_port)

    def status(name: str) -> bytes:
        return out[name][-1].split(b" ", 2)[1]

    assert status("fetch_unauth") == b"BAD"
    assert status("select_unauth") == b"BAD"
    assert status("bad_login") == b"NO" and b"AUTHENTICATIONFAILED" in out["bad_login"][-1]
    assert status("login") == b"OK"
    assert status("login_again") == b"BAD"
    assert status("fetch_unselected") == b"BAD"
    assert status("select_missing") == b"NO"
    assert status("select") == b"OK"
    for name in ("bad_set", "zero_set", "beyond", "unknown_item", "unknown_cmd", "bad_search"):
        assert status(name) == b"BAD", (name, out[name])
    assert status("uid_beyond") == b"OK" and len(out["uid_beyond"]) == 4  # 3 FETCH + tagged
    assert status("bad_flag") == b"NO"
    assert status("huge_literal") == b"NO" and b"TOOBIG" in out["huge_literal"][-1]
    assert status("huge_nonsync") == b"NO" and b"TOOBIG" in out["huge_nonsync"][-1]
    assert status("long_line") == b"BAD"
    assert status("after") == b"OK"
    assert status("search") == b"OK" and out["search"][0].startswith(b"* SEARCH 1 2 3")


async def test_fuzzed_commands_get_bad_and_other_clients_keep_working(clients: MailClients) -> None:
    import random

    system = clients.system
    email = await make_user(system, "gus")
    await deliver(system, email, [sample_message(n, email) for n in range(3)])
    rng = random.Random(16)
    pieces = [
        b"a", b"FETCH", b"UID", b"(", b")", b"[", b"]", b"<", b">", b"{", b"}", b"{5}", b"{3+}",
        b'"', b"\\", b"*", b"%", b":", b",", b"1", b"0", b"4294967296", b"-1", b"BODY[",
        b"BODY.PEEK[HEADER.FIELDS (", b"SEARCH", b"STORE", b"+FLAGS", b"\\Seen", b"NIL",
        b"\x00", b"\xff", b"\xc3\xa9", b"SELECT", b"INBOX", b"IDLE", b"APPEND", b"LOGIN",
        b"AUTHENTICATE", b"PLAIN", b"=", b" ", b"  ", b"\t", b"CHANGEDSINCE", b"(QRESYNC",
    ]  # fmt: skip

    def fuzz() -> tuple[int, int]:
        c = RawClient(clients.imap_port)
        c.command(f'z0 LOGIN {email} "{PASSWORD}"'.encode())
        c.command(b"z1 SELECT INBOX")
        answered = 0
        for n in range(300):
            junk = b" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            junk = junk.replace(b"{", b"").replace(b"\r", b"").replace(b"\n", b"")
            junk = junk.replace(b"IDLE", b"IDEL")  # IDLE would (rightly) wait for DONE
            tag = b"f%d" % n
            lines = c.command(tag + b" " + junk)
            status = lines[-1].split(b" ", 2)[1]
            assert status in (b"OK", b"NO", b"BAD"), lines
            answered += 1
        final = c.command(b"z2 NOOP")
        c.close()
        return answered, len(final)

    def well_behaved() -> list[Any]:
        imap = connect(clients.imap_port, email)
        results = []
        for _ in range(20):
            ok(imap.select("INBOX"))
            results.append(ok(imap.fetch("1:*", "(FLAGS)")))
        imap.logout()
        return results

    (answered, _), results = await asyncio.gather(
        asyncio.to_thread(fuzz), asyncio.to_thread(well_behaved)
    )
    assert answered == 300
    assert all(len(r) == 3 for r in results)


async def test_pop3_session_leaves_mail_on_the_server(clients: MailClients) -> None:
    import poplib

    system = clients.system
    email = await make_user(system, "hal")
    raws = [sample_message(n, email) for n in range(4)]
    await deliver(system, email, raws)
    stored = sorted(await stored_raws(system, email))

    def session() -> dict[str, Any]:
        pop = poplib.POP3("127.0.0.1", clients.pop3_port, timeout=30)
        out: dict[str, Any] = {"capa": pop.capa()}
        pop.user(email)
        pop.pass_(PASSWORD)
        out["stat"] = pop.stat()
        out["uidl"] = pop.uidl()[1]
        out["list"] = pop.list()[1]
        out["retr"] = [b"\r\n".join(pop.retr(n)[1]) + b"\r\n" for n in range(1, 5)]
        out["top"] = pop.top(1, 0)[1]
        pop.quit()
        again = poplib.POP3("127.0.0.1", clients.pop3_port, timeout=30)
        again.user(email)
        again.pass_(PASSWORD)
        out["stat_again"] = again.stat()
        out["uidl_again"] = again.uidl()[1]
        again.dele(1)
        out["rset_stat"] = again.stat()
        again.quit()
        return out

    out = await asyncio.to_thread(session)
    assert "UIDL" in out["capa"] and "TOP" in out["capa"]
    assert out["stat"] == (4, sum(len(r) for r in stored))
    assert sorted(out["retr"]) == stored  # byte for byte (poplib strips and we re-join CRLFs)
    assert b"" in out["top"] and not any(b"Hello, this is" in line for line in out["top"])
    assert out["stat_again"] == out["stat"]  # RETR left everything on the server
    assert out["uidl_again"] == out["uidl"]  # stable UIDL
    user_id = await user_id_of(system, email)
    folders = sorted(
        i["folder"]
        for i in await system.mongo.db.mailbox_items.find({"user_id": user_id}).to_list()
    )
    assert folders == ["INBOX", "INBOX", "INBOX", "TRASH"]  # DELE + QUIT moved one to Trash


async def test_imap_logins_share_the_api_rate_limits(settings, system) -> None:  # type: ignore[no-untyped-def]
    email = await make_user(system, "ivy")
    limit = system.settings.login_attempts_per_address
    async for clients in running_mail_clients(system, settings):

        def attempts(port: int = clients.imap_port) -> list[tuple[str, Any]]:
            imap = connect(port)
            out = []
            for password in [f"wrong{n}" for n in range(limit)] + [PASSWORD]:
                try:
                    out.append(("OK", imap.login(email, password)))
                except imaplib.IMAP4.error as e:
                    out.append(("NO", str(e)))
            imap.shutdown()
            return out

        results = await asyncio.to_thread(attempts)
    assert [r[0] for r in results] == ["NO"] * (limit + 1)
    assert "AUTHENTICATIONFAILED" in results[0][1]
    assert "UNAVAILABLE" in results[-1][1]  # the right password, but the address is locked


async def test_select_again_sees_what_changed_elsewhere(clients: MailClients) -> None:
    """SELECT reads only the numbering's changes since this process last read it: a view moved
    away by GraphQL and a new delivery both show in the next SELECT."""
    from app.domain.folders import Folder
    from app.domain.viewer import Viewer
    from app.services.mailbox.changes import StateChange

    system = clients.system
    email = await make_user(system, "gil")
    await deliver(system, email, [sample_message(n, email) for n in range(4)], 1)
    user_id = await user_id_of(system, email)

    def uids() -> list[int]:
        imap = connect(clients.imap_port, email)
        ok(imap.select("INBOX"))
        data = ok(imap.uid("SEARCH", "ALL"))
        imap.logout()
        return [int(u) for u in data[0].split()]

    assert await asyncio.to_thread(uids) == [1, 2, 3, 4]
    items = (
        await system.mongo.db.mailbox_items.find({"user_id": user_id})
        .sort("received_at", 1)
        .to_list()
    )
    await system.mailbox_changes.update_items(
        Viewer(user_id, email), [str(items[1]["_id"])], StateChange(folder=Folder.TRASH.value)
    )
    await deliver(system, email, [sample_message(9, email)])
    assert await asyncio.to_thread(uids) == [1, 3, 4, 5]


async def test_numbering_blocks_agree_across_processes(system, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The numbering is kept UID_BLOCK entries a document (3 here): arrivals that fill a block
    and start the next, flag changes and a departure in two blocks, written by a process with
    a copy of the numbering and read back by one without it, agree; a mailbox numbered in the
    older layout starts again under a new UIDVALIDITY."""
    from app.domain.folders import Folder
    from app.domain.imap_names import folder_ref
    from app.domain.viewer import Viewer
    from app.imap.server import imap_service
    from app.services.imap import mailboxes
    from app.services.mailbox.changes import StateChange

    monkeypatch.setattr(mailboxes, "UID_BLOCK", 3)
    email = await make_user(system, "hal")
    user_id = await user_id_of(system, email)
    viewer, inbox = Viewer(user_id, email), folder_ref(Folder.INBOX)
    one, two = imap_service(system), imap_service(system)

    async def uids(service: Any) -> list[int]:
        state = await service.sync(viewer, inbox)
        return [e.uid for e in await service.entries(viewer, inbox, state=state)]

    await deliver(system, email, [sample_message(n, email) for n in range(4)], 1)
    assert await uids(one) == [1, 2, 3, 4]
    await deliver(system, email, [sample_message(n, email) for n in range(4, 7)], 1)
    assert await uids(one) == [1, 2, 3, 4, 5, 6, 7]  # from its copy: 5, 6 appended, 7 a block
    state = await one.sync(viewer, inbox)
    item = {e.uid: str(e.item_id) for e in await one.entries(viewer, inbox, state=state)}
    await system.mailbox_changes.update_items(viewer, [item[2], item[6]], StateChange(starred=True))
    await system.mailbox_changes.update_items(
        viewer, [item[4]], StateChange(folder=Folder.TRASH.value)
    )
    assert await uids(two) == [1, 2, 3, 5, 6, 7]  # no copy: the blocks read and written
    changed = await two.entries(viewer, inbox, changed_after=state.modseq)
    assert [(e.uid, e.gone) for e in changed] == [(2, False), (4, True), (6, False)]
    assert await uids(one) == [1, 2, 3, 5, 6, 7]  # its copy brought up to date
    blocks = await system.mongo.db.imap_uid_blocks.find({"user_id": user_id}).to_list()
    layout = sorted([e["u"] for e in b["entries"]] for b in blocks)
    assert layout == [[1, 2, 3], [4, 5, 6], [7]]

    await system.mongo.db.imap_mailboxes.update_one(
        {"user_id": user_id, "key": inbox.key}, {"$unset": {"layout": ""}}
    )
    renumbered = await two.sync(viewer, inbox)
    assert renumbered.uidvalidity > state.uidvalidity and renumbered.uidnext == 7
    assert await uids(two) == [1, 2, 3, 4, 5, 6]
