import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser

import pytest

from app.domain.addresses import Address
from app.domain.errors import ValidationError
from app.domain.mime import (
    OutgoingAttachment,
    OutgoingMessage,
    build_mime,
    check_header_value,
    make_message_id,
    needs_smtputf8,
)
from app.domain.parsing import parse_message

DATE = datetime(2024, 3, 4, 9, 15, 0, tzinfo=UTC)


def _message(**overrides) -> OutgoingMessage:
    base = OutgoingMessage(
        from_=Address("alice@mailhub.test", "Alice Example"),
        to=(Address("bob@example.com", "Bob"),),
        subject="Plan",
        text="Hello Bob",
        message_id="<m1@mailhub.test>",
        date=DATE,
    )
    return replace(base, **overrides)


def _headers(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def _stdlib(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


def _assert_clean_mime(raw: bytes) -> None:
    """An independent parser finds no defects anywhere, every line ends in CRLF, ≤ 998 octets."""
    parsed = _stdlib(raw)
    for part in parsed.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_text_only_message_is_a_single_text_plain_part():
    raw = build_mime(_message())
    parsed = _stdlib(raw)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content().replace("\r\n", "\n").rstrip("\n") == "Hello Bob"
    _assert_clean_mime(raw)


def test_text_and_html_become_multipart_alternative_with_text_first():
    raw = build_mime(_message(html="<p>Hello <b>Bob</b></p>"))
    parsed = _stdlib(raw)
    assert parsed.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in parsed.iter_parts()]
    assert types == ["text/plain", "text/html"]
    _assert_clean_mime(raw)


def test_attachments_wrap_the_alternative_in_multipart_mixed():
    attachment = OutgoingAttachment("report.pdf", "application/pdf", b"%PDF-1.4 data")
    raw = build_mime(_message(html="<p>Hi</p>", attachments=(attachment,)))
    parsed = _stdlib(raw)
    assert parsed.get_content_type() == "multipart/mixed"
    first, second = list(parsed.iter_parts())
    assert first.get_content_type() == "multipart/alternative"
    assert second.get_content_type() == "application/pdf"
    assert second.get_content_disposition() == "attachment"
    assert second.get_filename() == "report.pdf"
    assert second.get_content() == b"%PDF-1.4 data"
    _assert_clean_mime(raw)


def test_html_only_gets_a_derived_text_alternative():
    raw = build_mime(_message(text=None, html="<h1>Title</h1><p>Body &amp; more</p>"))
    parsed = _stdlib(raw)
    text_part, html_part = list(parsed.iter_parts())
    assert text_part.get_content().replace("\r\n", "\n") == "Title\n\nBody & more\n"
    assert html_part.get_content_type() == "text/html"


def test_html_part_is_sanitized():
    raw = build_mime(_message(html='<p onclick="x()">Hi<script>alert(1)</script></p>'))
    html = parse_message(raw).html_body
    assert html == "<p>Hi</p>"


def test_bcc_never_appears_in_headers():
    raw = build_mime(_message(bcc=(Address("secret@hidden.example", "Secret Person"),)))
    assert b"secret@hidden.example" not in raw
    assert b"Secret Person" not in raw
    assert not re.search(rb"^bcc:", raw, re.IGNORECASE | re.MULTILINE)


def test_bcc_only_message_shows_undisclosed_recipients():
    raw = build_mime(_message(to=(), bcc=(Address("secret@hidden.example"),)))
    assert b"To: undisclosed-recipients:;\r\n" in _headers(raw)
    assert b"secret@hidden.example" not in raw


def test_required_headers_are_present_in_order():
    raw = build_mime(
        _message(
            cc=(Address("carol@example.com"),),
            reply_to=(Address("replies@mailhub.test"),),
            in_reply_to="<parent@example.com>",
            references=("<root@example.com>", "<parent@example.com>"),
        )
    )
    names = [line.split(b":", 1)[0] for line in _headers(raw).split(b"\r\n") if line[:1] != b" "]
    assert names[:10] == [
        b"From", b"To", b"Cc", b"Reply-To", b"Subject", b"Date", b"Message-ID",
        b"In-Reply-To", b"References", b"MIME-Version",
    ]  # fmt: skip
    assert b"Date: Mon, 04 Mar 2024 09:15:00 +0000\r\n" in raw


def test_optional_headers_are_absent_when_empty():
    headers = _headers(build_mime(_message()))
    for name in (b"Cc:", b"Reply-To:", b"In-Reply-To:", b"References:"):
        assert name not in headers


def test_sub_parts_do_not_repeat_mime_version():
    raw = build_mime(_message(html="<p>x</p>", attachments=(OutgoingAttachment("a", "a/b", b"x"),)))
    assert raw.count(b"MIME-Version:") == 1


def test_date_is_converted_to_utc_and_naive_dates_are_refused():
    cet = timezone(timedelta(hours=1))
    raw = build_mime(_message(date=datetime(2024, 3, 4, 10, 15, tzinfo=cet)))
    assert b"Date: Mon, 04 Mar 2024 09:15:00 +0000" in raw
    with pytest.raises(ValidationError):
        build_mime(_message(date=datetime(2024, 3, 4, 10, 15)))


def test_missing_message_id_and_date_are_generated():
    raw = build_mime(_message(message_id="", date=None))
    parsed = parse_message(raw)
    assert re.fullmatch(r"<[0-9a-f]{32}@mailhub\.test>", parsed.message_id)
    assert abs(parsed.date - datetime.now(UTC)) < timedelta(minutes=1)


def test_non_ascii_subject_and_names_are_rfc_2047_encoded():
    raw = build_mime(
        _message(subject="Grüße — 日本語", from_=Address("alice@mailhub.test", "Zoë Ämmerle"))
    )
    headers = _headers(raw)
    assert headers.isascii()
    assert b"Subject: =?utf-8?b?" in headers
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße — 日本語"
    assert parsed.from_ == Address("alice@mailhub.test", "Zoë Ämmerle")


def test_non_ascii_attachment_filename_uses_rfc_2231():
    attachment = OutgoingAttachment("Verträge 2024.pdf", "application/pdf", b"x")
    raw = build_mime(_message(attachments=(attachment,)))
    assert b"filename*=utf-8''Vertr%C3%A4ge%202024.pdf" in raw


def test_unicode_domains_are_written_in_idna_form():
    raw = build_mime(_message(to=(Address("bob@bücher.example"),)))
    assert b"To: bob@xn--bcher-kva.example\r\n" in raw
    assert not needs_smtputf8(_message(to=(Address("bob@bücher.example"),)))


def test_utf8_local_parts_need_smtputf8_and_are_written_raw():
    msg = _message(to=(Address("zoë@bücher.example", "Zoë"),))
    assert needs_smtputf8(msg)
    raw = build_mime(msg)
    assert "zoë@bücher.example".encode() in raw
    assert parse_message(raw).to == (Address("zoë@bücher.example", "Zoë"),)


def test_bodies_are_7bit_safe_and_long_lines_are_encoded():
    text = "Grüße " + "x" * 5000 + "\nplain line"
    raw = build_mime(_message(text=text, html="<p>" + "y" * 3000 + "</p>"))
    assert raw.isascii()
    for part in _stdlib(raw).walk():
        if not part.is_multipart():
            assert part["Content-Transfer-Encoding"] in ("7bit", "quoted-printable", "base64")
    _assert_clean_mime(raw)
    assert parse_message(raw).text_body == text


def test_long_headers_are_folded_without_corrupting_ids():
    refs = tuple(f"<{i:04d}.{'r' * 60}@lists.example.org>" for i in range(30))
    long_id = "<" + "a" * 120 + "@example.com>"
    raw = build_mime(
        _message(subject="word " * 60, references=refs, in_reply_to=long_id, message_id=long_id)
    )
    headers = _headers(raw)
    assert b"=?" not in headers
    assert max(len(line) for line in headers.split(b"\r\n")) <= 998
    assert max(len(line) for line in headers.split(b"\r\n") if b"@" not in line) <= 78
    parsed = parse_message(raw)
    assert parsed.references == refs
    assert parsed.in_reply_to == long_id and parsed.message_id == long_id
    assert parsed.subject == ("word " * 60).strip()
    _assert_clean_mime(raw)


def test_extra_headers_are_written_and_may_not_override_ours():
    raw = build_mime(
        _message(
            extra_headers=(
                ("List-Unsubscribe", "<https://mailhub.test/u/" + "t" * 100 + ">"),
                ("X-Campaign", "Frühling"),
            )
        )
    )
    parsed = parse_message(raw)
    assert parsed.headers["list-unsubscribe"] == "<https://mailhub.test/u/" + "t" * 100 + ">"
    assert _stdlib(raw)["X-Campaign"] == "Frühling"
    for name in ("Bcc", "From", "content-type", "Bad Name", "Bad:Name", ""):
        with pytest.raises(ValidationError):
            build_mime(_message(extra_headers=((name, "x"),)))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "Hi\nX-Evil: 1"}, "subject"),
        ({"subject": "Hi\x00"}, "subject"),
        ({"from_": Address("alice@mailhub.test", "Alice\r\nBcc: v@e.com")}, "from.name"),
        ({"to": (Address("b@example.com"), Address("c@example.com", "C\nX: y"))}, "to[1].name"),
        ({"cc": (Address("c@example.com\r\nBcc: v@e.com"),)}, "cc[0]"),
        ({"reply_to": (Address("r@example.com", "R\r"),)}, "reply_to[0].name"),
        ({"message_id": "<a@b>\r\nBcc: v@e.com"}, "message_id"),
        ({"in_reply_to": "<a@b>\nX: y"}, "in_reply_to"),
        ({"references": ("<a@b>", "<c@d>\r\nX: y")}, "references[1]"),
        ({"extra_headers": (("X-Tag", "a\r\nBcc: v@e.com"),)}, "extra_headers[0]"),
        ({"extra_headers": (("X-Tag\r\nBcc", "v@e.com"),)}, "extra_headers[0]"),
        (
            {"attachments": (OutgoingAttachment('a.pdf"\r\nX-Evil: 1', "application/pdf", b""),)},
            "attachments[0].filename",
        ),
        (
            {"attachments": (OutgoingAttachment("a.pdf", "text/html\r\nX: 1", b""),)},
            "attachments[0].content_type",
        ),
    ],
)
def test_header_injection_is_refused(overrides, field):
    with pytest.raises(ValidationError) as excinfo:
        build_mime(_message(**overrides))
    assert excinfo.value.fields[0].field == field


@pytest.mark.parametrize(
    "bad_id", ["no-brackets-or-at", "a@b.org", "<>", "<ü@x.org>", "<a b@x>", "<no-at-sign>"]
)
def test_malformed_own_message_ids_are_refused(bad_id):
    with pytest.raises(ValidationError) as excinfo:
        build_mime(_message(message_id=bad_id))
    assert excinfo.value.fields[0].field == "message_id"


def test_unusable_parent_ids_are_left_out_and_odd_ones_kept():
    raw = build_mime(
        _message(in_reply_to="<ü@x.org>", references=("junk", "<1234.5678>", "p@x.org"))
    )
    headers = _headers(raw)
    assert b"In-Reply-To" not in headers
    assert b"References: <1234.5678> <p@x.org>\r\n" in headers


def test_attachment_needs_a_mime_type_and_a_name():
    with pytest.raises(ValidationError):
        build_mime(_message(attachments=(OutgoingAttachment("a.bin", "not a type", b"x"),)))
    with pytest.raises(ValidationError):
        build_mime(_message(attachments=(OutgoingAttachment("  ", "application/pdf", b"x"),)))


def test_forwarded_7bit_message_is_attached_as_message_rfc822():
    inner = b"From: v@vendor.example\r\nSubject: Invoice 1042\r\n\r\nPlease pay.\r\n"
    attachment = OutgoingAttachment("invoice.eml", "message/rfc822", inner)
    raw = build_mime(_message(attachments=(attachment,)))
    part = list(_stdlib(raw).iter_parts())[1]
    assert part.get_content_type() == "message/rfc822"
    assert part.get_content()["Subject"] == "Invoice 1042"
    parsed = parse_message(raw).attachments[0]
    assert (parsed.filename, parsed.content_type) == ("invoice.eml", "message/rfc822")
    assert parse_message(parsed.data).subject == "Invoice 1042"
    _assert_clean_mime(raw)


def test_8bit_message_attachment_is_sent_as_opaque_bytes():
    inner = "Subject: Grüße\r\n\r\nÜ\r\n".encode()
    raw = build_mime(_message(attachments=(OutgoingAttachment("f.eml", "message/rfc822", inner),)))
    parsed = parse_message(raw).attachments[0]
    assert parsed.content_type == "application/octet-stream"
    assert parsed.data == inner
    assert raw.isascii()


def test_make_message_id_is_random_128_bits_at_the_host():
    first, second = make_message_id("mx.mailhub.test"), make_message_id("mx.mailhub.test")
    assert re.fullmatch(r"<[0-9a-f]{32}@mx\.mailhub\.test>", first)
    assert first != second


def test_check_header_value_refuses_line_breaks_and_control_characters():
    check_header_value("Tabs\tand ünïcode are fine", "subject")
    for bad in (
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\x0bb",
        "a\x0cb",
        "a\x1cb",
        "a\x7fb",
        "a\x85b",
        "a\u2028b",
    ):
        with pytest.raises(ValidationError) as excinfo:
            check_header_value(bad, "subject")
        assert excinfo.value.fields[0].field == "subject"


ALL_BYTES = bytes(range(256)) * 4


def test_round_trip_keeps_everything_including_non_ascii():
    msg = OutgoingMessage(
        from_=Address("zoë@bücher.example", "Zoë Ämmerle"),
        to=(Address("bob@example.com", "Doe, Bob"), Address("yuki@例え.example", "山田 由紀")),
        cc=(Address("carol@example.org", 'Carol "CJ" Jones'),),
        bcc=(Address("hidden@example.net"),),
        reply_to=(Address("replies@bücher.example", "Réponses"),),
        subject="Re: Grüße aus Köln — 会議の資料 📎 " + "long " * 20 + "end",
        text="Hallo Bob,\n\nanbei die Unterlagen — 資料です。\n> quoted line\n\nZoë",
        html='<p>Hallo <b>Bob</b>, <a href="https://x.example/ü">Link</a></p>'
        "<script>alert(1)</script><p>資料です。</p>",
        attachments=(
            OutgoingAttachment("Verträge – 2024.pdf", "application/pdf", b"%PDF-1.4\n" + ALL_BYTES),
            OutgoingAttachment("notes.txt", "text/plain", "plain ü text\r\nline 2\n".encode()),
            OutgoingAttachment("写真.png", "image/png", b"\x89PNG\r\n\x1a\n" + ALL_BYTES[::-1]),
            OutgoingAttachment("empty.bin", "application/octet-stream", b""),
        ),
        message_id="<20240304.abcdef@mailhub.test>",
        date=DATE,
        in_reply_to="<parent.1@example.com>",
        references=("<root.0@example.com>", "<parent.1@example.com>"),
    )
    raw = build_mime(msg)
    _assert_clean_mime(raw)
    parsed = parse_message(raw)

    assert parsed.subject == msg.subject
    assert parsed.from_ == msg.from_
    assert parsed.to == msg.to
    assert parsed.cc == msg.cc
    assert parsed.bcc == ()
    assert parsed.reply_to == msg.reply_to
    assert parsed.text_body == msg.text
    assert parsed.html_body == (
        '<p>Hallo <b>Bob</b>, <a href="https://x.example/ü" target="_blank" '
        'rel="noopener noreferrer nofollow">Link</a></p><p>資料です。</p>'
    )
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        (a.filename, a.content_type, a.data) for a in msg.attachments
    ]
    assert not any(a.inline for a in parsed.attachments)
    assert parsed.message_id == msg.message_id
    assert parsed.in_reply_to == msg.in_reply_to
    assert parsed.references == msg.references
    assert parsed.date == DATE
    assert parsed.size == len(raw)


BODIES = [
    "",
    "Hello Bob",
    "short lines\nonly ascii\n",
    "trailing space \nand tab\t\nend",
    "x" * 79,
    "a long ascii line " * 40,
    "café, naïve, Grüße\n",
    "Привет, мир! " * 30,
    "数据 " * 100,
    "=?utf-8?q?not a header?= and ==== lines\n==============================\n",
    "=_ looks like our boundary prefix\n",
    ".\n.leading dot\nFrom the start\n",
    "crlf\r\nand lone\rcarriage returns\r\n",
    "emoji 🎉 " * 10,
    "bad surrogate \udcff here",
]


@pytest.mark.parametrize("text", BODIES)
@pytest.mark.parametrize("with_html", [False, True])
def test_bodies_without_attachments_match_what_the_email_package_writes(text, with_html):
    """build_mime writes text/HTML-only bodies itself (campaign speed); what an independent
    parser reads back — structure, headers of each part, decoded content — is what the email
    package's content manager gives for the same message."""
    from app.domain.mime import _POLICY, _body, _header_block

    markup = text.replace("\udcff", "?")  # sanitize_html refuses lone surrogates (both paths)
    html = f"<p>{markup}</p><a href='https://shop.test/?a=1&b=2'>x</a>" if with_html else None
    msg = _message(text=text, html=html)
    raw = build_mime(msg)
    _assert_clean_mime(raw)
    ours = _stdlib(raw)
    reference = _stdlib(_header_block(msg) + _body(msg).as_bytes(policy=_POLICY))
    ours_parts, reference_parts = list(ours.walk()), list(reference.walk())
    assert [p.get_content_type() for p in ours_parts] == [
        p.get_content_type() for p in reference_parts
    ]
    for mine, theirs in zip(ours_parts, reference_parts, strict=True):
        if mine.is_multipart():
            continue
        assert mine.get_content() == theirs.get_content()
        assert mine.get_content_charset() == theirs.get_content_charset() == "utf-8"
        assert mine["Content-Transfer-Encoding"] == theirs["Content-Transfer-Encoding"]


def test_a_boundary_never_occurs_in_the_parts():
    from app.domain import mime

    taken = b"=_" + b"0" * 32
    tokens = iter(["0" * 32, "1" * 32])
    original = mime.secrets.token_hex
    mime.secrets.token_hex = lambda n: next(tokens)  # type: ignore[assignment]
    try:
        assert mime._boundary(b"text with " + taken, b"html") == b"=_" + b"1" * 32
    finally:
        mime.secrets.token_hex = original


def test_the_base64_length_is_that_of_the_encoded_lines() -> None:
    from app.domain.mime import _base64_length, _base64_lines

    for size in range(0, 400):
        assert _base64_length(size) == len(_base64_lines(b"x" * size)), size


@pytest.mark.parametrize("value", ["", "a", "a  b", " lead", "x" * 68, "x" * 69, "w " * 40])
def test_a_header_that_fits_is_one_line_and_every_header_unfolds_to_its_value(value: str) -> None:
    from app.domain.mime import _fold

    line = _fold("Subject", value)
    if value and len(value) <= 78 - len("Subject: "):
        assert line == f"Subject: {value}\r\n"
    assert line.endswith("\r\n") and all(len(x) <= 78 for x in line[:-2].split("\r\n"))
    assert line[: -len("\r\n")].replace("\r\n", "") == f"Subject:{' ' if value else ''}{value}"
