import base64
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.domain.addresses import Address
from app.domain.html_safety import sanitize_html
from app.domain.parsing import (
    HTML_PART_SEPARATOR,
    MAX_MIME_DEPTH,
    MAX_SELECTED_HEADER_CHARS,
    TEXT_PART_SEPARATOR,
    ParsedMessage,
    _canonical_base64,
    _payload_bytes,
    attachment_data,
    parse_message,
    parse_tree,
    safe_filename,
)

EML = Path(__file__).resolve().parent.parent / "data" / "eml"
SAMPLES = sorted(EML.glob("*.eml"))


def _parse(name: str) -> ParsedMessage:
    return parse_message((EML / name).read_bytes())


def test_there_are_samples():
    assert len(SAMPLES) >= 18


def test_multipart_alternative_gives_both_bodies_and_list_headers():
    msg = _parse("multipart_alternative.eml")
    assert msg.subject == "Your March statement"
    assert msg.from_ == Address("billing@example.com", "Example Billing")
    assert msg.to == (Address("anna@mailhub.test", "Anna Schmidt"),)
    assert msg.date == datetime(2024, 3, 4, 9, 15, tzinfo=UTC)
    assert msg.message_id == "<20240304091500.4711@mail.example.com>"
    assert msg.text_body.startswith("Hi Anna,\n\nYour March statement is ready. Total due: €42.10.")
    assert msg.text_body.endswith("-- \nExample Billing")
    assert "<b>&euro;42.10</b>" in msg.html_body
    assert msg.attachments == ()
    assert msg.headers["list-unsubscribe"] == (
        "<mailto:unsub-4711@mail.example.com>, <https://mail.example.com/u/4711?t=9f8e7d6c5b4a>"
    )
    assert msg.headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
    assert msg.headers["precedence"] == "bulk"
    assert msg.headers["return-path"] == "<bounce-4711@mail.example.com>"
    assert msg.headers["authentication-results"].startswith("mx.mailhub.test; spf=pass")
    assert "received" not in msg.headers


def test_every_inline_text_part_of_a_mixed_message_is_in_the_text_body():
    """RFC 2046 §5.1.1's sample: two plain parts, the first without any header."""
    msg = _parse("rfc2046_two_plain_parts.eml")
    assert msg.text_body == (
        "This is implicitly typed plain US-ASCII text.\nIt does NOT end with a linebreak."
        + TEXT_PART_SEPARATOR
        + "This is explicitly typed plain US-ASCII text.\nIt DOES end with a linebreak."
    )
    assert (msg.html_body, msg.attachments) == (None, ())


def test_a_disclaimer_part_first_does_not_hide_the_senders_text():
    msg = _parse("disclaimer_part_first.eml")
    assert msg.text_body == (
        "[Scanned by <GatewayAV> & found clean]"
        + TEXT_PART_SEPARATOR
        + "Hello Anna,\n\nour offer for the Q3 order is 1,200 units at 4.10 each."
    )
    # the plain part joins the HTML body escaped, the alternative contributes its HTML
    assert msg.html_body == (
        '<div style="white-space: pre-wrap">[Scanned by &lt;GatewayAV&gt; &amp; found clean]</div>'
        + HTML_PART_SEPARATOR
        + "<p>Hello Anna,</p><p>our offer for the Q3 order is <b>1,200 units</b> at 4.10 each.</p>"
    )
    assert "<GatewayAV>" not in sanitize_html(msg.html_body)
    assert msg.attachments == ()


def test_inline_text_parts_of_nested_multiparts_keep_their_order():
    msg = _parse("nested_multipart_parts.eml")
    assert msg.text_body == TEXT_PART_SEPARATOR.join(
        [
            "Part 1 of the outer message.",
            "Part 1 of the inner message.",
            "Part 2 of the inner message.",
            "Part 2 of the outer message.",
        ]
    )


def test_a_signature_part_inside_the_html_alternative_is_in_the_html_body():
    msg = _parse("html_alternative_signature.eml")
    assert msg.text_body == "Here is the best one.\n\n-- \nJonas Berg"  # the plain alternative
    assert msg.html_body == (
        "<html><body><p>Here is the best one.</p></body></html>"
        + HTML_PART_SEPARATOR
        + "<html><body><p>-- <br>Jonas Berg</p></body></html>"
    )
    assert [(a.filename, a.inline) for a in msg.attachments] == [("saturday.png", True)]


def test_a_mixed_html_and_plain_part_each_appear_in_both_bodies():
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html\r\n'
        b"\r\n<p>Intro</p>\r\n--b\r\nContent-Type: text/plain\r\n\r\nDetails\r\n--b--\r\n"
    )
    msg = parse_message(raw)
    assert msg.text_body == "Intro" + TEXT_PART_SEPARATOR + "Details"
    assert msg.html_body == (
        "<p>Intro</p>" + HTML_PART_SEPARATOR + '<div style="white-space: pre-wrap">Details</div>'
    )


def test_html_only_message_derives_text_and_keeps_raw_html():
    msg = _parse("html_only.eml")
    assert msg.text_body == (
        "Flash sale!\n\nUp to 70% off – today only.\n\n"
        "Claim now or shop the sale <https://shop.example.com/sale>\n\nLog in"
    )
    assert "<script>" in msg.html_body  # raw: sanitizing happens when it leaves the API
    assert "<script" not in sanitize_html(msg.html_body)
    assert msg.date == datetime(2024, 3, 5, 13, 0, tzinfo=UTC)


def test_iso_8859_1_body_and_encoded_words_are_decoded():
    msg = _parse("iso_8859_1.eml")
    assert msg.subject == "Unterlagen für das Gespräch"
    assert msg.from_ == Address("juergen.weiss@firma.example.de", "Jürgen Weiß")
    assert msg.to == (Address("andrea@mailhub.test", "Andrea Müller"),)
    assert "Sehr geehrte Frau Müller," in msg.text_body
    assert msg.text_body.endswith("Mit freundlichen Grüßen\nJürgen Weiß")
    assert msg.headers["x-mailer"] == "Microsoft Outlook 16.0"


def test_shift_jis_body_and_subject_are_decoded():
    msg = _parse("shift_jis.eml")
    assert msg.subject == "会議資料の送付"
    assert msg.from_.name == "佐藤 花子"
    assert msg.text_body.splitlines()[0] == "山田様"
    assert "来週の会議の資料を送ります。" in msg.text_body


def test_windows_1252_smart_punctuation_is_decoded():
    msg = _parse("windows_1252.eml")
    assert "Here’s the “final” budget – it’s €12,500 for Q2." in msg.text_body
    assert msg.text_body.endswith("Chloé")


def test_raw_utf8_headers_are_decoded():
    msg = _parse("utf8_raw_headers.eml")
    assert msg.subject == "Фото с выходных 📷"
    assert msg.from_ == Address("dmitri@почта.example", "Дмитрий Иванов")
    assert msg.to == (
        Address("olga@mailhub.test", "Ольга"),
        Address("用户@例子.example", "用户"),
    )
    assert msg.text_body.startswith("Привет!")


def test_encoded_words_references_and_format_flowed():
    msg = _parse("encoded_words.eml")
    assert msg.subject == "Re: Préparation du budget € 2024 (révisé) final"
    assert msg.from_ == Address("elodie@societe.example.fr", "Élodie Durand")
    assert msg.to == (
        Address("jose@mailhub.test", "García, José"),
        Address("kobayashi@mailhub.test", "小林 雅子"),
    )
    assert msg.cc == (Address("plain@mailhub.test"),)
    assert msg.in_reply_to == "<orig-2024-03-01@mailhub.test>"
    assert msg.references == (
        "<start-2024-02-20@societe.example.fr>",
        "<orig-2024-03-01@mailhub.test>",
    )
    assert msg.text_body == (
        "Bonjour José, voici la version révisée du budget avec les chiffres définitifs.\n\n"
        "Élodie\n\n> Pouvez-vous envoyer la version finale ?"
    )


def test_huge_headers_are_parsed_and_selected_values_capped():
    msg = _parse("huge_header.eml")
    assert len(msg.references) == 2000
    assert msg.references[0] == "<thread-00000." + "x" * 20 + "@lists.example.org>"
    assert msg.in_reply_to == "<thread-01999." + "x" * 20 + "@lists.example.org>"
    assert msg.subject == "[dev] Re: Long-running thread"
    assert msg.text_body == "Still here."
    raw = b"From: a@b.example\r\nList-Id: " + b"L" * 100_000 + b"\r\n\r\nx\r\n"
    assert len(parse_message(raw).headers["list-id"]) == MAX_SELECTED_HEADER_CHARS


def test_missing_closing_boundary_still_yields_body_and_attachment():
    msg = _parse("broken_missing_end_boundary.eml")
    assert msg.text_body == "The report is attached."
    [report] = msg.attachments
    assert report.filename == "report.pdf"
    assert report.data.startswith(b"%PDF-1.4")


def test_bad_base64_is_decoded_as_far_as_possible():
    msg = _parse("broken_bad_base64.eml")
    assert msg.text_body == "Scanned on device MFP-3."
    [scan] = msg.attachments
    assert (scan.filename, scan.content_type) == ("scan.png", "image/png")
    assert scan.data.startswith(b"\x89PNG")


def test_unknown_and_bogus_charsets_fall_back_to_utf8_then_latin1():
    msg = _parse("broken_unknown_charset.eml")
    assert msg.subject == "Status report"
    assert msg.text_body == "Status: all systems nominal — résumé attached."
    assert msg.html_body == "<p>Status: all systems nominal, déjà vu.</p>"


def test_broken_headers_are_salvaged():
    msg = _parse("broken_headers.eml")
    assert msg.from_ == Address("broken@sender.example")
    assert msg.to == (Address("good@mailhub.test"),)
    assert msg.cc[0].email == "cc@mailhub.test"
    assert msg.subject == "Hello World and =?utf-8?q?unterminated"
    assert msg.date is None
    assert msg.message_id == "<bare-id-123@sender.example>"
    assert msg.in_reply_to is None
    assert msg.text_body == "Body survives."


def test_multipart_without_boundary_is_read_as_text():
    msg = _parse("broken_no_boundary.eml")
    assert msg.text_body == "Plain words in a multipart body without any boundary."
    assert msg.attachments == ()


def test_attachments_inline_images_and_filenames():
    msg = _parse("attachments.eml")
    assert msg.text_body == "Please find the contract attached. Our logo is below."
    assert 'src="cid:logo.png@partner.example.in"' in msg.html_body
    logo, contract, sheet, passwd, invite = msg.attachments
    assert (logo.content_type, logo.content_id, logo.inline) == (
        "image/png",
        "logo.png@partner.example.in",
        True,
    )
    assert logo.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert contract.filename == "Verträge – 2024.pdf"  # RFC 2231
    assert contract.data == b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    assert sheet.filename == "отчёт.xlsx"  # RFC 2047 in a parameter, as Outlook sends it
    assert sheet.data == b"PK\x03\x04fake-xlsx"
    assert passwd.filename == "passwd"  # no directory traversal
    assert (invite.content_type, invite.filename) == ("text/calendar", "attachment-5.ics")
    assert invite.data.startswith(b"BEGIN:VCALENDAR")
    assert not any(a.inline for a in (contract, sheet, passwd, invite))


def test_nested_message_is_one_attachment_named_after_its_subject():
    msg = _parse("nested_rfc822.eml")
    assert msg.text_body == "See the original message below."
    [nested] = msg.attachments
    assert nested.filename == "Invoice № 1042 dispute.eml"
    assert nested.content_type == "message/rfc822"
    inner = parse_message(nested.data)
    assert inner.subject == "Invoice № 1042 dispute"
    assert inner.message_id == "<inv-1042@vendor.example>"
    assert inner.text_body == "We dispute your deduction on invoice 1042."
    assert [a.filename for a in inner.attachments] == ["invoice-1042.pdf"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("report\x00.pdf", "report.pdf"),
        ("..", None),
        ("  ", None),
        ("a" * 300 + ".pdf", "a" * 251 + ".pdf"),
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_sender_and_other_address_headers():
    raw = (
        b"From: Team <team@example.com>, Bob <bob@example.com>\r\n"
        b"Sender: Bob <bob@example.com>\r\nBcc: hidden@example.com\r\n"
        b"Reply-To: replies@example.com\r\nDate: Mon, 4 Mar 2024 09:15:00 -0000\r\n\r\nx"
    )
    msg = parse_message(raw)
    assert msg.from_ == Address("team@example.com", "Team")
    assert msg.sender == Address("bob@example.com", "Bob")
    assert msg.bcc == (Address("hidden@example.com"),)
    assert msg.reply_to == (Address("replies@example.com"),)
    assert msg.date == datetime(2024, 3, 4, 9, 15, tzinfo=UTC)


def test_empty_text_part_is_replaced_by_text_from_html():
    raw = (
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        b"<p>Only <i>here</i></p>\r\n--b--\r\n"
    )
    assert parse_message(raw).text_body == "Only here"


def test_html_without_charset_uses_its_meta_tag():
    body = '<meta charset="iso-8859-1"><p>Caf\u00e9</p>'.encode("latin-1")
    raw = b"Content-Type: text/html\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    assert parse_message(raw).html_body.endswith("<p>Café</p>")


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_truncated_samples_never_raise(sample):
    raw = sample.read_bytes()
    for cut in sorted({1, 7, len(raw) // 3, len(raw) // 2, len(raw) - 5}):
        msg = parse_message(raw[:cut])
        assert msg.size == cut


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_raise(seed):
    rng = random.Random(seed)
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
    assert parse_message(raw).size == len(raw)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_mangled_mime_parts_do_not_cost_the_headers(sample):
    """Garbage inside the body (boundaries, part headers, encodings) is contained per part."""
    rng = random.Random(sample.name)
    raw = sample.read_bytes()
    body_start = raw.find(b"\n\n") + 2 if b"\r\n\r\n" not in raw else raw.find(b"\r\n\r\n") + 4
    expected_subject = parse_message(raw).subject
    for _ in range(40):
        mutated = bytearray(raw)
        for _ in range(20):
            at = rng.randrange(body_start, len(mutated))
            mutated[at] = rng.choice(b'\r\n:;"=<>-?\x00\xff')
        assert parse_message(bytes(mutated)).subject == expected_subject


def test_absurdly_deep_nesting_is_cut_off():
    depth = MAX_MIME_DEPTH * 3
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    raw = head + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    msg = parse_message(raw)
    assert msg.text_body is None  # beyond MAX_MIME_DEPTH nothing is collected
    assert msg.attachments == ()


def test_empty_input_gives_an_empty_message():
    msg = parse_message(b"")
    assert (msg.subject, msg.from_, msg.attachments, msg.size) == ("", None, (), 0)


def test_attachment_without_name_gets_a_generated_one():
    data = base64.b64encode(b"\x00\x01")
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
        b"\r\nhi\r\n--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + data + b"\r\n--b--\r\n"
    )
    [attachment] = parse_message(raw).attachments
    assert (attachment.filename, attachment.data) == ("attachment-1.zip", b"\x00\x01")


def test_a_part_the_stdlib_cannot_decode_does_not_hide_the_others():
    # get_payload() raises ValueError for a NUL in the charset of an 8-bit part.
    raw = (
        b'Subject: Mixed\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: text/plain; charset="utf\x00-8"\r\n\r\ncaf\xc3\xa9\r\n'
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>fine</p>\r\n--b--\r\n"
    )
    msg = parse_message(raw)
    assert msg.subject == "Mixed"
    # multipart/mixed: both parts are shown, in order, in both bodies
    assert msg.text_body == "café" + TEXT_PART_SEPARATOR + "fine"
    assert msg.html_body.endswith(HTML_PART_SEPARATOR + "<p>fine</p>")


def test_shared_header_objects_parse_exactly_like_the_stdlib_default_policy(monkeypatch):
    from email import policy

    from app.domain import parsing

    data = Path(__file__).resolve().parent.parent / "data"
    raws = [p.read_bytes() for p in sorted(data.rglob("*.eml"))]
    long_type = "text/plain; charset=utf-8; x-note=" + "n" * 2000  # past the shared-value size
    raws.append(f"Subject: long\r\nContent-Type: {long_type}\r\n\r\nbody\r\n".encode())
    ours = [parse_message(raw) for raw in raws]
    again = [parse_message(raw) for raw in raws]  # now from the remembered header objects
    monkeypatch.setattr(parsing, "_PARSE_POLICY", policy.default)
    assert ours == again == [parse_message(raw) for raw in raws]


def test_a_subject_with_raw_latin1_bytes_inside_an_encoded_word_is_decoded():
    raw = b"Subject: =?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?=\r\n\r\nbody\r\n"
    assert parse_message(raw).subject == "Die Hasen und die Frösche"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_attachment_data_gives_each_parsed_attachment_back_from_the_raw(path):
    """A received message's attachments are read back from its raw MIME by index: every
    sample's attachments, nested messages and bad base64 included, come back byte for byte,
    and an index past the end (or before the start) is None, not another part."""
    raw = path.read_bytes()
    attachments = parse_message(raw).attachments
    for index, attachment in enumerate(attachments):
        assert attachment_data(raw, index) == attachment.data, index
    assert attachment_data(raw, len(attachments)) is None
    assert attachment_data(raw, -1) is None


def test_attachment_data_of_input_the_parser_cannot_read_is_none():
    assert attachment_data(b"", 0) is None
    assert attachment_data(b"\xff" * 100, 0) is None


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        ("", True),
        ("QQ==", True),  # one byte: padding
        ("QUI=", True),
        ("QUJD", True),
        ("QUJDRA==\r\nRUZH\r\n", False),  # padding inside once the lines are joined
        ("QUJDREVG\r\nR0g=\r\n", True),
        ("QUJD\nREVG\n", True),  # LF lines
        ("QUJD\rREVG\r", True),  # CR lines
        ("QR==", False),  # non-zero spare bits
        ("QQ==QUJD", False),  # padding inside
        ("QUJ", False),  # a length that is not a multiple of four
        ("QU*JD", False),  # a character outside the alphabet
        ("QUJD RA==", False),  # a space
        ("QUJDé===", False),  # not ASCII
        ("=QUJ", False),
    ],
)
def test_a_base64_attachment_decodes_as_the_email_package_decodes_it(
    body: str, canonical: bool
) -> None:
    from email import message_from_string
    from email import policy as email_policy

    raw = (
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\n" + body
    )
    part = message_from_string(raw, policy=email_policy.default)
    stock = message_from_string(raw, policy=email_policy.default)
    assert (_canonical_base64(part) is not None) is canonical
    assert _payload_bytes(part) == stock.get_payload(decode=True)
    if canonical:  # the email package found nothing to record either
        assert stock.defects == []


def test_a_large_canonical_base64_attachment_takes_the_fast_decoder() -> None:
    import os

    data = os.urandom(300_001)
    lines = base64.encodebytes(data).decode().replace("\n", "\r\n")
    raw = (
        "From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="d.bin"\r\n\r\n' + lines + "--b--\r\n"
    ).encode()
    parsed = parse_message(raw)
    assert [a.data for a in parsed.attachments] == [data]
    tree = parse_tree(raw)
    assert tree is not None
    part = list(tree.walk())[-1]
    assert _canonical_base64(part) == data  # not the email package's path
