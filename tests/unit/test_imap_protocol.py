"""The IMAP wire layer and the pure name/flag mappings (no servers needed)."""

from __future__ import annotations

import asyncio

import pytest

from app.domain.errors import ValidationError
from app.domain.imap_flags import flag_change, flags_of
from app.domain.imap_names import MailboxRef, decode_mutf7, encode_mutf7, resolve
from app.imap import mime
from app.imap.protocol import (
    Atom,
    BadCommand,
    TooBig,
    compact_ranges,
    parse_command,
    parse_sequence_set,
    quote,
    read_command,
)


def test_commands_tokenize_into_atoms_strings_lists_and_sections() -> None:
    cmd = parse_command(
        [b'a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>) "x y"']
    )
    assert cmd.tag == "a1" and cmd.name == "UID"
    assert cmd.args == [
        "FETCH",
        "1:*",
        ["FLAGS", "BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>"],
        "x y",
    ]
    assert isinstance(cmd.args[0], Atom) and not isinstance(cmd.args[3], Atom)
    flags = parse_command([b"b STORE 1 +FLAGS (\\Seen $Work)"]).args[2]
    assert flags == ["\\Seen", "$Work"]


def test_literals_are_bytes_in_place() -> None:
    cmd = parse_command([b"c APPEND INBOX (\\Seen) ", b"raw\r\nbytes", b""])
    assert cmd.args == ["INBOX", ["\\Seen"], b"raw\r\nbytes"]


@pytest.mark.parametrize(
    "line",
    [b"", b"(", b"a FETCH (1", b"a FETCH 1)", b'a LOGIN "open', b"a FETCH BODY[", b"*bad tag"],
)
def test_malformed_commands_raise_bad(line: bytes) -> None:
    with pytest.raises(BadCommand):
        parse_command([line])


def test_sequence_sets() -> None:
    assert parse_sequence_set(Atom("1:3,7,*"), 10) == [(1, 3), (7, 7), (10, 10)]
    assert parse_sequence_set(Atom("5:2"), 10) == [(2, 5)]
    for bad in ("0", "a", "1::2", "", "4294967296", "1,"):
        with pytest.raises(BadCommand):
            parse_sequence_set(Atom(bad), 10)
    assert compact_ranges([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"


async def read(data: bytes, limit: int = 100) -> tuple[list[bytes], int]:
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(data)
    reader.feed_eof()
    continuations = 0

    async def more() -> None:
        nonlocal continuations
        continuations += 1

    return await read_command(reader, more, limit), continuations


async def test_synchronizing_and_non_synchronizing_literals() -> None:
    parts, asked = await read(b"a APPEND INBOX {3}\r\nabc\r\n")
    assert parts == [b"a APPEND INBOX ", b"abc", b""] and asked == 1
    parts, asked = await read(b"a APPEND INBOX {3+}\r\nabc\r\n")
    assert parts == [b"a APPEND INBOX ", b"abc", b""] and asked == 0


async def test_oversized_literals_are_refused_with_the_tag() -> None:
    with pytest.raises(TooBig) as refused:
        await read(b"t1 APPEND INBOX {1000}\r\n")
    assert refused.value.tag == "t1"
    with pytest.raises(TooBig):  # LITERAL+: read and dropped, then refused
        await read(b"t2 APPEND INBOX {200+}\r\n" + b"x" * 200 + b"\r\n")


def test_quoting() -> None:
    assert quote(None) == b"NIL"
    assert quote('say "hi"') == b'"say \\"hi\\""'
    assert quote("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert quote("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"


def test_mailbox_names() -> None:
    assert resolve("inbox") == MailboxRef("folder", "INBOX")
    assert resolve("Junk") == MailboxRef("folder", "SPAM")
    assert resolve("Work") == MailboxRef("label", "Work")
    assert resolve("Labels/Junk").imap_name() == "Labels/Junk"
    assert MailboxRef("folder", "SPAM").imap_name() == "Junk"
    with pytest.raises(ValidationError):
        resolve("")
    for name in ("Entw\u00fcrfe", "&", "\u65e5\u672c\u8a9e", "a&b"):
        assert decode_mutf7(encode_mutf7(name)) == name
    assert encode_mutf7("Entw\u00fcrfe") == "Entw&APw-rfe"  # RFC 3501 §5.1.3's style


def test_flags_map_to_view_state() -> None:
    view = {"read": True, "starred": False, "role": "draft", "keywords": ["$Work"]}
    assert flags_of(view) == ["\\Seen", "\\Draft", "$Work"]
    assert flag_change(flags_of(view), ["\\Flagged", "\\answered"], "add") == {
        "starred": True,
        "answered": True,
    }
    assert flag_change(flags_of(view), [], "set") == {
        "read": False,
        "remove_keywords": ("$Work",),
    }  # \Draft is not a permanent flag: a set without it leaves the draft a draft
    assert flag_change([], ["\\Deleted"], "add") == {"add_keywords": ("\\Deleted",)}
    with pytest.raises(ValidationError):
        flag_change([], ["\\Recent2"], "add")


RAW = (
    b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject: hi\r\n"
    b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
    b"preamble\r\n--zz\r\nContent-Type: text/plain\r\n\r\nbody one\r\n"
    b"--zz\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--zz--\r\n"
)


def test_sections_are_slices_of_the_stored_bytes() -> None:
    assert mime.section_bytes(RAW, "") == RAW
    assert mime.section_bytes(RAW, "HEADER") == RAW[: RAW.index(b"\r\n\r\n") + 4]
    assert mime.section_bytes(RAW, "1") == b"body one"
    assert mime.section_bytes(RAW, "1.MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert mime.section_bytes(RAW, "2.HEADER") == b"Subject: inner\r\n\r\n"
    assert mime.section_bytes(RAW, "2.TEXT") == b"inner body"
    assert mime.section_bytes(RAW, "HEADER.FIELDS (SUBJECT)") == b"Subject: hi\r\n\r\n"
    assert mime.section_bytes(RAW, "3") is None
    structure = mime.bodystructure(mime.parse(RAW))
    assert structure.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 8 0')
    assert b'"MESSAGE" "RFC822"' in structure and structure.endswith(
        b' "MIXED" ("BOUNDARY" "zz") NIL NIL NIL)'
    )


class _Writer:
    """Collects what a session writes (a pure unit test of the no-TLS login refusal)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.data = bytearray()

    def get_extra_info(self, name: str) -> object:
        return (self.peer, 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None


async def run_session(peer: str, script: bytes) -> bytes:
    from app.imap.session import ImapSession, ServerOptions

    reader = asyncio.StreamReader()
    reader.feed_data(script)
    reader.feed_eof()
    writer = _Writer(peer)
    session = ImapSession(
        reader,
        writer,  # type: ignore[arg-type]
        accounts=None,  # type: ignore[arg-type]  # never reached: the login is refused first
        mailboxes=None,  # type: ignore[arg-type]
        hub=None,  # type: ignore[arg-type]
        options=ServerOptions(1 << 20, None, "mx.test"),
        tls=False,
    )
    await session.run()
    return bytes(writer.data)


async def test_login_without_tls_is_refused_unless_on_loopback() -> None:
    out = await run_session(
        "192.0.2.7",
        b"a CAPABILITY\r\nb LOGIN u@x.test secret\r\nc AUTHENTICATE PLAIN AHVAeC50ZXN0AHM=\r\n",
    )
    assert b"LOGINDISABLED" in out and b"AUTH=PLAIN" not in out
    assert b"b NO [PRIVACYREQUIRED]" in out and b"c NO [PRIVACYREQUIRED]" in out
    loopback = await run_session("127.0.0.1", b"a CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in loopback and b"LOGINDISABLED" not in loopback
