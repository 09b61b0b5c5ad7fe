"""ARF (RFC 5965) complaint parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.feedback_reports import FeedbackReport, parse_feedback_report
from app.domain.verp import parse_verp_address

REPORTS = Path(__file__).parents[1] / "data" / "reports"
VERP_SECRET = b"test-verp-secret"  # the secret the sample VERP addresses were made with
VERP = "bounces+mzqkdmwd2ts7nj5yzhqgmyfbwlb5jzpwu64mtyis7editkbigrnaamq@mail.mailhub.example"


def arf(
    feedback_part: str, *, feedback_type: str = "message/feedback-report", original: str = ""
) -> bytes:
    original = original or (
        "Content-Type: message/rfc822\n\n"
        "Return-Path: <bounces+x@mailhub.example>\nFrom: news@mailhub.example\n"
        "Message-ID: <m1@mailhub.example>\nSubject: hi\n\nbody\n"
    )
    text = (
        "From: fbl@isp.example\nTo: fbl@mailhub.example\nSubject: complaint\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="ZZ"\n'
        "\n--ZZ\nContent-Type: text/plain\n\nThis is an abuse report.\n"
        f"\n--ZZ\nContent-Type: {feedback_type}\n\n{feedback_part}\n"
        f"\n--ZZ\n{original}\n--ZZ--\n"
    )
    return text.replace("\n", "\r\n").encode()


def test_mailbox_provider_complaint_sample():
    report = parse_feedback_report((REPORTS / "arf_complaint.eml").read_bytes())
    assert report is not None
    assert report.feedback_type == "abuse"
    assert report.user_agent == "Yahoo!-Mail-Feedback/2.0"
    assert report.original_mail_from == VERP
    assert report.original_rcpt_to == ("dana@yahoo.com",)
    assert report.reported_domain == "mailhub.example"
    assert report.arrival_date == "Mon, 10 Mar 2025 16:40:11 +0000"
    assert report.source_ip == "198.51.100.7"
    assert report.original_message_id == "<6660a1b2c3d4e5f6a7b8c9e0@mailhub.example>"
    assert report.original_return_path == VERP
    assert report.original_headers is not None
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in report.original_headers
    assert "everything 10% off" not in report.original_headers


def test_return_path_of_the_sample_leads_back_to_message_and_recipient():
    report = parse_feedback_report((REPORTS / "arf_complaint.eml").read_bytes())
    assert report is not None and report.original_return_path is not None
    assert parse_verp_address(report.original_return_path, secret=VERP_SECRET) == (
        "6660a1b2c3d4e5f6a7b8c9e0",
        "6660a1b2c3d4e5f6a7b8c9e1",
    )


def test_all_fields_of_a_minimal_rfc_5965_report():
    part = (
        "Feedback-Type: Fraud\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n"
        "Original-Mail-From: <bounces+x@mailhub.example>\n"
        "Original-Rcpt-To: <one@isp.example>\nOriginal-Rcpt-To: two@isp.example\n"
        "Arrival-Date: Thu, 8 Mar 2025 14:00:00 EST\nSource-IP: 192.0.2.1\n"
        "Reported-Domain: mailhub.example\nReported-Uri: http://mailhub.example/x\n"
    )
    assert parse_feedback_report(arf(part)) == FeedbackReport(
        feedback_type="fraud",
        user_agent="SomeGenerator/1.0",
        original_mail_from="bounces+x@mailhub.example",
        original_rcpt_to=("one@isp.example", "two@isp.example"),
        reported_domain="mailhub.example",
        arrival_date="Thu, 8 Mar 2025 14:00:00 EST",
        source_ip="192.0.2.1",
        original_message_id="<m1@mailhub.example>",
        original_return_path="bounces+x@mailhub.example",
        original_headers="Return-Path: <bounces+x@mailhub.example>\n"
        "From: news@mailhub.example\nMessage-ID: <m1@mailhub.example>\nSubject: hi",
    )


def test_original_as_text_rfc822_headers():
    original = (
        "Content-Type: text/rfc822-headers\n\n"
        "Return-Path: <bounces+y@mailhub.example>\nMessage-ID: <m2@mailhub.example>\n"
    )
    report = parse_feedback_report(arf("Feedback-Type: abuse\n", original=original))
    assert report is not None
    assert report.original_return_path == "bounces+y@mailhub.example"
    assert report.original_message_id == "<m2@mailhub.example>"


def test_redacted_report_without_recipients_or_original():
    raw = arf("Feedback-Type: abuse\nUser-Agent: X/1\n", original="Content-Type: text/plain\n\n")
    report = parse_feedback_report(raw)
    assert report is not None
    assert report.original_rcpt_to == ()
    assert report.original_return_path is None
    assert report.original_headers is None


def test_feedback_part_typed_text_plain_is_still_read():
    report = parse_feedback_report(
        arf("Feedback-Type: abuse\nUser-Agent: Y/2\n", feedback_type="text/plain")
    )
    assert report is not None
    assert (report.feedback_type, report.user_agent) == ("abuse", "Y/2")


def test_folded_fields_and_missing_feedback_type():
    report = parse_feedback_report(arf("User-Agent: Some\n  Generator/1.0\nSource-IP: 192.0.2.9\n"))
    assert report is not None
    assert report.user_agent == "Some Generator/1.0"
    assert report.feedback_type == "other"


@pytest.mark.parametrize(
    "name", ["postfix_dsn.eml", "exchange_dsn.eml", "gmail_bounce.eml", "qmail_bounce.eml"]
)
def test_bounces_are_not_complaints(name):
    assert parse_feedback_report((REPORTS / name).read_bytes()) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b\r\nSubject: Feedback-Type: abuse\r\n\r\nFeedback-Type: abuse\r\n",
        b"",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=q\r\n\r\n"
        b"--q\r\nContent-Type: text/plain\r\n\r\nnothing here\r\n--q--\r\n",
    ],
    ids=["not-a-report", "empty", "no-feedback-part"],
)
def test_non_arf_messages_give_none(raw):
    assert parse_feedback_report(raw) is None


@pytest.mark.parametrize(
    "name", sorted(p.name for p in REPORTS.glob("*.eml")), ids=lambda name: name
)
def test_damaged_samples_never_raise(name):
    raw = (REPORTS / name).read_bytes()
    for cut in range(0, len(raw), max(1, len(raw) // 60)):
        result = parse_feedback_report(raw[:cut])
        assert result is None or isinstance(result, FeedbackReport)
