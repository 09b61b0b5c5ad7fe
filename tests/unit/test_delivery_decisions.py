"""The pure rules under delivery: per-attempt decisions, job ids, DKIM bytes (no servers)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from unittest import mock

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.adapters.dkim_signer import DkimKey, DkimSigner
from app.domain.bounces import NO_REPLY, SmtpOutcome
from app.domain.outcomes import RecipientState, RetryPolicy, decide, dsn_report
from app.services.delivery.outbox import is_due, job_id

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    lifetime=timedelta(days=5),
    schedule=(120, 300, 600),
    delay_notice_after=timedelta(hours=4),
    jitter=0.0,
)


def state(
    attempts: int = 0, queued_ago: timedelta = timedelta(0), noticed: bool = False
) -> RecipientState:
    return RecipientState(attempts, NOW - queued_ago, noticed)


def test_a_2xx_reply_means_sent():
    d = decide(SmtpOutcome(250, "2.0.0", "queued as 1234"), state(), NOW, POLICY)
    assert (d.status, d.attempts, d.notice, d.suppress) == ("sent", 1, None, False)


def test_an_unknown_mailbox_bounces_and_suppresses():
    d = decide(SmtpOutcome(550, "5.1.1", "user unknown"), state(), NOW, POLICY)
    assert (d.status, d.bounce_class, d.suppress, d.notice) == (
        "bounced",
        "invalid_mailbox",
        True,
        "failure",
    )


def test_a_policy_block_bounces_without_suppressing():
    d = decide(SmtpOutcome(554, "5.7.1", "rejected by policy"), state(), NOW, POLICY)
    assert d.status == "bounced" and not d.suppress


def test_a_temporary_failure_is_retried_on_the_schedule():
    first = decide(SmtpOutcome(451, "4.3.0", "try later"), state(0), NOW, POLICY)
    third = decide(SmtpOutcome(451, "4.3.0", "try later"), state(2), NOW, POLICY)
    late = decide(SmtpOutcome(451, "4.3.0", "try later"), state(9), NOW, POLICY)
    assert first.status == "deferred" and first.next_attempt_at == NOW + timedelta(seconds=120)
    assert third.next_attempt_at == NOW + timedelta(seconds=600)
    assert late.next_attempt_at == NOW + timedelta(seconds=600)  # the last step repeats


def test_jitter_spreads_retries_of_one_outage():
    policy = RetryPolicy(schedule=(600,), jitter=0.1)
    rng = random.Random(7)
    times = {
        decide(SmtpOutcome(421, None, "busy"), state(), NOW, policy, rng).next_attempt_at
        for _ in range(20)
    }
    assert len(times) > 10
    assert all(NOW + timedelta(seconds=540) <= t <= NOW + timedelta(seconds=660) for t in times)


def test_no_reply_at_all_is_a_temporary_network_failure():
    d = decide(SmtpOutcome(NO_REPLY, None, "connection refused"), state(), NOW, POLICY)
    assert (d.status, d.bounce_class) == ("deferred", "network")


def test_the_last_retry_is_capped_at_the_end_of_the_queue_lifetime():
    d = decide(
        SmtpOutcome(451, None, "later"),
        state(5, timedelta(days=5) - timedelta(seconds=30)),
        NOW,
        POLICY,
    )
    assert d.status == "deferred" and d.next_attempt_at == NOW + timedelta(seconds=30)


def test_a_failure_after_the_queue_lifetime_expires_the_recipient():
    d = decide(SmtpOutcome(451, "4.4.1", "no answer"), state(30, timedelta(days=5)), NOW, POLICY)
    assert (d.status, d.notice) == ("expired", "failure")
    report = dsn_report("x@d.test", SmtpOutcome(451, "4.4.1", "no answer"), d, "mx.d.test")
    assert (report.action, report.status) == ("failed", "4.4.1")


def test_the_delay_notice_is_owed_once_after_four_hours():
    early = decide(SmtpOutcome(451, None, "x"), state(3, timedelta(hours=3)), NOW, POLICY)
    due = decide(SmtpOutcome(451, None, "x"), state(4, timedelta(hours=4)), NOW, POLICY)
    again = decide(
        SmtpOutcome(451, None, "x"), state(5, timedelta(hours=5), noticed=True), NOW, POLICY
    )
    assert (early.notice, due.notice, again.notice) == (None, "delay", None)


def test_due_means_pending_due_and_not_leased():
    base = {
        "delivery_status": "queued",
        "next_attempt_at": NOW,
        "lease_until": None,
        "local_user_id": None,
    }
    assert is_due(base, NOW)
    assert not is_due({**base, "next_attempt_at": NOW + timedelta(seconds=1)}, NOW)
    assert not is_due(
        {**base, "delivery_status": "sending", "lease_until": NOW + timedelta(seconds=1)}, NOW
    )
    assert is_due(
        {**base, "delivery_status": "sending", "lease_until": NOW - timedelta(seconds=1)}, NOW
    )
    assert not is_due({**base, "delivery_status": "sent"}, NOW)


def test_job_ids_are_deterministic():
    assert job_id("m1", "d.test") == "deliver:m1:d.test"
    assert job_id("m1", "d.test", NOW) == job_id("m1", "d.test", NOW)
    assert job_id("m1", "d.test", NOW) != job_id("m1", "d.test", NOW + timedelta(seconds=1))


def test_our_dkim_signature_is_byte_for_byte_dkimpys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    message = (
        b"From: Alice <alice@example.test>\r\nTo: bob@d.test\r\nSubject: Hi  there\r\n"
        b"Date: Sun, 01 Mar 2026 12:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello  world \r\n\r\n"
    )
    with mock.patch("time.time", return_value=1_772_366_400):
        ours = DkimSigner().signature_header(message, DkimKey("example.test", "s1", pem))
        theirs = dkim.sign(
            message,
            b"s1",
            b"example.test",
            pem.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            linesep=b"\r\n",
            include_headers=[
                b"from",
                b"to",
                b"subject",
                b"date",
                b"message-id",
                b"mime-version",
                b"content-type",
                b"from",
            ],
        )
    assert ours == theirs
    txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(ours + message, dnsfunc=lambda name, timeout=5: txt)
    assert not dkim.verify(
        ours + message.replace(b"Hello", b"Jello"), dnsfunc=lambda name, timeout=5: txt
    )
