"""RFC 3464 delivery status notifications: parsing real bounces, building our own."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

from app.domain.dsn import ParsedDsn, RecipientReport, parse_dsn
from app.domain.errors import ValidationError
from app.domain.outgoing_dsn import build_dsn

REPORTS = Path(__file__).parents[1] / "data" / "reports"
VERP_1 = "bounces+mzprykvt4tk7nj5yzhigmxy4fkz6jvpwu64mtuoij7xppn6umql4aiq@mail.mailhub.example"


def sample(name: str) -> bytes:
    return (REPORTS / name).read_bytes()


def parse_sample(name: str) -> ParsedDsn:
    parsed = parse_dsn(sample(name))
    assert parsed is not None
    return parsed


# ------------------------------------------------------------------ parsing real samples


def test_postfix_dsn_reports_each_recipient():
    parsed = parse_sample("postfix_dsn.eml")
    assert parsed.reporting_mta == "mx1.example.org"
    assert parsed.original_message_id == "<665f1c2ab3e4d5f6a7b8c9d0@mailhub.example>"
    assert parsed.recipients == (
        RecipientReport(
            final_recipient="nobody@example.org",
            action="failed",
            status="5.1.1",
            diagnostic_code="550 5.1.1 <nobody@example.org>: Recipient address rejected: "
            "User unknown in virtual mailbox table",
            remote_mta="mailstore.example.org",
            original_recipient="nobody@example.org",
        ),
        RecipientReport(
            final_recipient="full@example.org",
            action="failed",
            status="5.2.2",
            diagnostic_code="552 5.2.2 <full@example.org>: Quota exceeded (mailbox for user "
            "is full)",
            remote_mta="mailstore.example.org",
            original_recipient="full@example.org",
        ),
    )


def test_postfix_dsn_keeps_the_original_headers_with_our_return_path():
    headers = parse_sample("postfix_dsn.eml").original_headers
    assert headers is not None
    assert headers.startswith(f"Return-Path: <{VERP_1}>\n")
    assert "Subject: Quarterly numbers" in headers
    assert "\r" not in headers
    assert "the numbers are attached" not in headers  # headers only, never the body


def test_exchange_dsn_without_spaces_after_types():
    parsed = parse_sample("exchange_dsn.eml")
    assert parsed.reporting_mta == "AM0PR01MB1234.eurprd01.prod.exchangelabs.com"
    (recipient,) = parsed.recipients
    assert recipient.final_recipient == "ghost@contoso.com"
    assert (recipient.action, recipient.status) == ("failed", "5.1.10")
    assert recipient.diagnostic_code == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )
    assert recipient.remote_mta is None
    assert parsed.original_message_id == "<665f1c2ab3e4d5f6a7b8c9d0@mailhub.example>"


def test_gmail_bounce_with_folded_multiline_diagnostic():
    parsed = parse_sample("gmail_bounce.eml")
    assert parsed.reporting_mta == "googlemail.com"
    (recipient,) = parsed.recipients
    assert recipient.final_recipient == "does.not.exist.123@gmail.com"
    assert recipient.status == "5.1.1"
    assert recipient.diagnostic_code is not None
    assert recipient.diagnostic_code.startswith("550-5.1.1 The email account that you tried")
    assert "\n" not in recipient.diagnostic_code
    assert "unnecessary spaces." in recipient.diagnostic_code
    assert recipient.remote_mta is not None
    assert recipient.remote_mta.startswith("gmail-smtp-in.l.google.com.")
    assert parsed.original_message_id == "<6660a1b2c3d4e5f6a7b8c9e0@mailhub.example>"
    assert parsed.original_headers is not None
    assert "Subject: Lunch on Friday?" in parsed.original_headers


def test_delayed_dsn_reports_action_delayed_with_a_non_smtp_diagnostic():
    parsed = parse_sample("postfix_delayed_dsn.eml")
    (recipient,) = parsed.recipients
    assert (recipient.action, recipient.status) == ("delayed", "4.4.1")
    assert recipient.diagnostic_code == (
        "connect to mx.slow.example.com[192.0.2.44]:25: Connection timed out"
    )
    assert parsed.original_message_id == "<66602c0ffee0000000000001@mailhub.example>"
    assert parsed.original_headers is not None
    assert parsed.original_headers.endswith("In-Reply-To: <CAF=+x7q9Zq@mail.slow.example.com>")


def test_qmail_plain_text_bounce_is_parsed_best_effort():
    parsed = parse_sample("qmail_bounce.eml")
    assert [(r.final_recipient, r.action, r.status) for r in parsed.recipients] == [
        ("erin@oldhost.example", "failed", "5.1.1"),
        ("frank@partner.example", "failed", "5.1.1"),
    ]
    assert parsed.recipients[1].diagnostic_code == (
        "550 5.1.1 <frank@partner.example>... User unknown"
    )
    assert parsed.original_message_id == "<665f1c2ab3e4d5f6a7b8c9d0@mailhub.example>"
    assert parsed.original_headers is not None
    assert parsed.original_headers.startswith("Return-Path: <bounces+")


def test_exim_plain_text_bounce_joins_multiline_replies():
    parsed = parse_sample("exim_bounce.eml")
    (recipient,) = parsed.recipients
    assert recipient.final_recipient == "gina@partner.example"
    assert recipient.status == "5.2.1"
    assert recipient.diagnostic_code == (
        "550 5.2.1 The email account that you tried to reach is disabled. "
        "Learn more at https://support.partner-mail.example/disabled"
    )
    assert parsed.original_message_id == "<665f1c2ab3e4d5f6a7b8c9d0@mailhub.example>"


def test_an_arf_complaint_is_not_a_bounce():
    assert parse_dsn(sample("arf_complaint.eml")) is None


# ------------------------------------------------------------------ tolerance


def report(status_part: str, *, status_type: str = "message/delivery-status") -> bytes:
    text = (
        "From: MAILER-DAEMON@mx.example.net\n"
        "To: sender@mailhub.example\n"
        "Subject: Returned mail\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type="delivery-status"; boundary="XX"\n'
        "\n--XX\nContent-Type: text/plain\n\nYour mail bounced.\n"
        f"\n--XX\nContent-Type: {status_type}\n\n{status_part}\n"
        "\n--XX\nContent-Type: text/rfc822-headers\n\n"
        "From: sender@mailhub.example\nMessage-ID: <orig@mailhub.example>\n"
        "\n--XX--\n"
    )
    return text.replace("\n", "\r\n").encode()


def recipients_of(raw: bytes) -> list[tuple[str, str, str]]:
    parsed = parse_dsn(raw)
    assert parsed is not None
    return [(r.final_recipient, r.action, r.status) for r in parsed.recipients]


TWO_RECIPIENTS = [("a@x.example", "failed", "5.1.1"), ("b@x.example", "failed", "5.2.2")]


@pytest.mark.parametrize(
    "status_part",
    [
        # Canonical.
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n\n"
        "Final-Recipient: rfc822; b@x.example\nAction: failed\nStatus: 5.2.2\n",
        # No blank lines anywhere, RFC order with Original-Recipient first.
        "Reporting-MTA: dns; mx.example.net\n"
        "Original-Recipient: rfc822;a@x.example\nFinal-Recipient: rfc822;a@x.example\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Original-Recipient: rfc822;b@x.example\nFinal-Recipient: rfc822;b@x.example\n"
        "Action: failed\nStatus: 5.2.2\n",
        # No blank lines, Postfix order (Final- before Original-).
        "Reporting-MTA: dns; mx.example.net\n"
        "Final-Recipient: rfc822; a@x.example\nOriginal-Recipient: rfc822;a@x.example\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; b@x.example\nOriginal-Recipient: rfc822;b@x.example\n"
        "Action: failed\nStatus: 5.2.2\n",
        # Upper-case actions, angle brackets, comments after the status, odd spacing.
        "Reporting-MTA:dns;mx.example.net\n\n"
        "Final-Recipient: RFC822; <a@x.example>\nAction: FAILED\nStatus: 5.1.1 (bad mailbox)\n\n"
        "final-recipient:rfc822;b@x.example\naction: Failed\nstatus:   5.2.2\n",
        # Missing Action: derived from the status class.
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@x.example\nStatus: 5.1.1\n\n"
        "Final-Recipient: rfc822; b@x.example\nStatus: 5.2.2\n",
        # Missing Status: taken from the diagnostic.
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: failed\n"
        "Diagnostic-Code: smtp; 550 5.1.1 unknown\n\n"
        "Final-Recipient: rfc822; b@x.example\nAction: failed\n"
        "Diagnostic-Code: smtp; 552 5.2.2 full\n",
    ],
    ids=["canonical", "no-blank-lines", "postfix-order", "sloppy", "no-action", "no-status"],
)
def test_status_part_variants_give_the_same_recipients(status_part):
    assert recipients_of(report(status_part)) == TWO_RECIPIENTS


def test_status_part_typed_text_plain_is_still_read():
    part = (
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n"
    )
    parsed = parse_dsn(report(part, status_type="text/plain"))
    assert parsed is not None
    assert parsed.reporting_mta == "mx.example.net"
    assert [r.final_recipient for r in parsed.recipients] == ["a@x.example"]


def test_folded_fields_are_unfolded():
    part = (
        "Reporting-MTA: dns;\n mx.example.net\n\n"
        "Final-Recipient: rfc822;\n\ta@x.example\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <a@x.example>:\n   Recipient address rejected\n"
    )
    parsed = parse_dsn(report(part))
    assert parsed is not None
    assert parsed.reporting_mta == "mx.example.net"
    (recipient,) = parsed.recipients
    assert recipient.final_recipient == "a@x.example"
    assert recipient.diagnostic_code == "550 5.1.1 <a@x.example>: Recipient address rejected"


def test_utf8_address_type_is_decoded():
    part = (
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: utf-8; j\\x{F6}rg@x.example\nAction: failed\nStatus: 5.1.1\n"
    )
    assert recipients_of(report(part, status_type="message/global-delivery-status")) == [
        ("jörg@x.example", "failed", "5.1.1")
    ]


def test_envelope_id_is_xtext_decoded_and_original_id_comes_from_headers_part():
    part = (
        "Reporting-MTA: dns; mx.example.net\nOriginal-Envelope-Id: 665f+2Bab\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n"
    )
    parsed = parse_dsn(report(part))
    assert parsed is not None
    assert parsed.original_envelope_id == "665f+ab"
    assert parsed.original_message_id == "<orig@mailhub.example>"


def test_success_dsn_is_returned_with_its_action_for_the_caller_to_ignore():
    part = (
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: delivered\nStatus: 2.0.0\n"
    )
    assert recipients_of(report(part)) == [("a@x.example", "delivered", "2.0.0")]


def test_report_without_any_recipient_is_not_a_bounce():
    assert parse_dsn(report("Reporting-MTA: dns; mx.example.net\n")) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\n"
        b"550 5.1.1 is my favourite error code.\r\n",
        b"From: alice@example.org\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n"
        b"\r\nI am away until Monday.\r\n",
        b"From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\n\r\n"
        b"Something went wrong, no details.\r\n",
        b"From: bob@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
        b'report-type=disposition-notification; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; bob@example.org\r\nDisposition: manual-action/MDN-sent-"
        b"manually; displayed\r\n\r\n--b--\r\n",
        b"",
        b"\xff\xfe garbage",
    ],
    ids=["ordinary-mail", "vacation", "daemon-without-details", "read-receipt", "empty", "junk"],
)
def test_messages_that_are_not_bounces_give_none(raw):
    assert parse_dsn(raw) is None


def test_plain_bounce_uses_x_failed_recipients_when_no_address_starts_a_line():
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
        b"X-Failed-Recipients: lost@x.example\r\n"
        b"Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        b"Your message to lost@x.example failed.\r\n"
        b"SMTP error from remote mail server after RCPT TO: 550 5.1.1 No such user\r\n"
    )
    assert recipients_of(raw) == [("lost@x.example", "failed", "5.1.1")]


def test_plain_delay_warning_reports_delayed():
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
        b"Subject: Warning: message 1tsX delayed 24 hours\r\n\r\n"
        b"  slow@x.example\r\n    host mx.x.example: 451 4.3.0 Temporary failure\r\n"
    )
    assert recipients_of(raw) == [("slow@x.example", "delayed", "4.3.0")]


# ------------------------------------------------------------------ building

NOW = datetime(2025, 3, 9, 12, 30, tzinfo=UTC)
ARRIVAL = datetime(2025, 3, 4, 12, 29, 50, tzinfo=UTC)
ORIGINAL_HEADERS = (
    b"Return-Path: <alice@mailhub.example>\r\n"
    b"From: Alice <alice@mailhub.example>\r\n"
    b"To: bob@example.org, carol@example.net\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <orig-1@mailhub.example>\r\n"
    b"\r\n"
    b"Body that must not be returned.\r\n"
)
FAILED = (
    RecipientReport(
        final_recipient="bob@example.org",
        action="failed",
        status="5.1.1",
        diagnostic_code="550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown "
        "in virtual mailbox table; please check the address and try again, this is a long "
        "reply that has to be folded",
        remote_mta="mx.example.org",
        original_recipient="bob@example.org",
    ),
    RecipientReport(
        final_recipient="carol@example.net",
        action="failed",
        status="5.4.7",
        diagnostic_code=None,
        remote_mta=None,
    ),
)


def build(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "reporting_mta": "mx.mailhub.example",
        "from_address": "mailer-daemon@mx.mailhub.example",
        "to_address": "alice@mailhub.example",
        "original_headers": ORIGINAL_HEADERS,
        "original_message_id": "<orig-1@mailhub.example>",
        "original_subject": "Quarterly numbers",
        "recipients": FAILED,
        "arrival_date": ARRIVAL,
        "message_id": "<dsn-1@mx.mailhub.example>",
        "now": NOW,
    }
    args.update(overrides)
    return build_dsn(**args)  # type: ignore[arg-type]


def test_built_dsn_round_trips_through_the_parser():
    parsed = parse_dsn(build())
    assert parsed is not None
    assert parsed.recipients == FAILED
    assert parsed.reporting_mta == "mx.mailhub.example"
    assert parsed.original_message_id == "<orig-1@mailhub.example>"
    assert parsed.original_headers == (
        ORIGINAL_HEADERS.decode().split("\r\n\r\n")[0].replace("\r\n", "\n")
    )


def test_delay_dsn_round_trips_and_says_until_when():
    delayed = (
        RecipientReport("slow@example.com", "delayed", "4.4.1", "421 4.4.1 try later", "mx.s"),
    )
    until = ARRIVAL + timedelta(days=5)
    raw = build(kind="delay", recipients=delayed, will_retry_until=until)
    parsed = parse_dsn(raw)
    assert parsed is not None
    assert parsed.recipients == delayed
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message["Subject"] == "Delivery Status Notification (Delay)"
    assert b"Will-Retry-Until: Sun, 09 Mar 2025 12:29:50 +0000\r\n" in raw
    assert (
        "Delivery will be retried until Sun, 09 Mar 2025"
        in message.get_body(("plain",)).get_content()
    )


def test_headers_thread_the_dsn_with_the_original_and_mark_it_automatic():
    message = email.message_from_bytes(build(), policy=policy.default)
    assert message["From"] == "Mail Delivery System <mailer-daemon@mx.mailhub.example>"
    assert message["To"] == "alice@mailhub.example"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"] == "Sun, 09 Mar 2025 12:30:00 +0000"
    assert message["Message-ID"] == "<dsn-1@mx.mailhub.example>"
    assert message["In-Reply-To"] == "<orig-1@mailhub.example>"
    assert message["References"] == "<orig-1@mailhub.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert not message.defects


def test_bare_message_ids_get_angle_brackets():
    message = email.message_from_bytes(
        build(message_id="dsn-2@mx", original_message_id="orig-2@mh"), policy=policy.default
    )
    assert (message["Message-ID"], message["In-Reply-To"]) == ("<dsn-2@mx>", "<orig-2@mh>")


def test_without_an_original_message_id_there_is_no_in_reply_to():
    message = email.message_from_bytes(build(original_message_id=None))
    assert message["In-Reply-To"] is None and message["References"] is None


def test_three_parts_in_rfc_3464_order():
    message = email.message_from_bytes(build())
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_output_is_crlf_only_with_short_lines():
    raw = build()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_delivery_status_fields():
    raw = build().decode()
    status = raw.split("Content-Type: message/delivery-status")[1].split("\r\n--")[0]
    unfolded = re.sub(r"\r\n(?=[ \t])", "", status)
    for field in [
        "Reporting-MTA: dns; mx.mailhub.example",
        "Arrival-Date: Tue, 04 Mar 2025 12:29:50 +0000",
        "Original-Recipient: rfc822; bob@example.org",
        "Final-Recipient: rfc822; bob@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.example.org",
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected",
        "Last-Attempt-Date: Sun, 09 Mar 2025 12:30:00 +0000",
        "Final-Recipient: rfc822; carol@example.net",
        "Status: 5.4.7",
    ]:
        assert field in unfolded
    assert "Will-Retry-Until" not in unfolded


def test_human_part_explains_each_recipient_and_the_remote_reply():
    message = email.message_from_bytes(build(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    assert "could not be delivered" in text
    assert "Subject: Quarterly numbers" in text
    assert "<bob@example.org>" in text
    assert "The server mx.example.org replied:" in text
    assert "550 5.1.1 <bob@example.org>: Recipient address rejected" in " ".join(text.split())
    assert "<carol@example.net>" in text
    assert "Reason: the message could not be delivered in time." in text


def test_only_the_original_headers_are_returned():
    raw = build()
    assert b"Body that must not be returned" not in raw
    assert b"Subject: Quarterly numbers\r\nMessage-ID: <orig-1@mailhub.example>\r\n" in raw


def test_non_ascii_subject_and_address_survive():
    recipients = (RecipientReport("jörg@bücher.example", "failed", "5.1.1", "550 nope", None),)
    raw = build(original_subject="Grüße aus Köln", recipients=recipients)
    assert raw.startswith(b"From:")
    message = email.message_from_bytes(raw, policy=policy.default)
    assert "Grüße aus Köln" in message.get_body(("plain",)).get_content()
    parsed = parse_dsn(raw)
    assert parsed is not None
    assert parsed.recipients == recipients
    assert b"Content-Type: message/global-delivery-status" in raw


def test_building_is_deterministic():
    assert build() == build()
    assert build() != build(message_id="<dsn-other@mx.mailhub.example>")


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("kind", {"kind": "success"}),
        ("recipients", {"recipients": ()}),
        ("to_address", {"to_address": "a@b\r\nBcc: victim@x"}),
        ("from_address", {"from_address": "x@y\nX: y"}),
        ("message_id", {"message_id": "<a b@c>"}),
        ("recipients", {"recipients": (RecipientReport("a@b", "exploded", "5.1.1", None, None),)}),
        ("recipients", {"recipients": (RecipientReport("a@b", "failed", "551", None, None),)}),
        (
            "recipients",
            {"recipients": (RecipientReport("a@b\r\nX: y", "failed", "5.1.1", None, None),)},
        ),
    ],
)
def test_invalid_inputs_are_rejected(field, overrides):
    with pytest.raises(ValidationError) as info:
        build(**overrides)
    assert info.value.fields[0].field == field


def test_unknown_charset_label_does_not_break_parsing():
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n"
        b"Content-Type: text/plain; charset=unknown-8bit\r\n\r\n"
        b"<a@x.example>:\r\nRemote host said: 550 5.1.1 unknown \xe9\r\n"
    )
    assert recipients_of(raw) == [("a@x.example", "failed", "5.1.1")]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in REPORTS.glob("*.eml")), ids=lambda name: name
)
def test_damaged_samples_never_raise(name):
    raw = sample(name)
    damaged = [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 60))]
    damaged += [raw.replace(b"\r\n\r\n", b"\r\n", k) for k in (1, 2, 5)]
    damaged += [raw.replace(b":", b"", 7), raw.replace(b"--", b"-"), raw.replace(b"\r\n", b"\n")]
    for variant in damaged:
        result = parse_dsn(variant)
        assert result is None or isinstance(result, ParsedDsn)
