"""The MX's pure rules: client limits, error budget, reply codes, reputation thresholds, webhook
payloads, GridFS layout — no server needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from app.adapters.blob_batches import gridfs_documents
from app.adapters.blobs import CHUNK
from app.domain.errors import ValidationError
from app.mx.limits import ClientLimits, ErrorBudget
from app.mx.server import with_enhanced_code
from app.services.feedback.bounces import report_from_webhook
from app.services.feedback.reputation import Counts, Thresholds


def test_connection_limit_counts_open_connections_per_ip_and_frees_on_close():
    limits = ClientLimits(connections_per_ip=2, messages_per_minute=10, exempt=["127.0.0.0/8"])
    assert limits.open_connection("192.0.2.1") and limits.open_connection("192.0.2.1")
    assert not limits.open_connection("192.0.2.1")
    assert limits.open_connection("192.0.2.2")  # another client has its own budget
    limits.close_connection("192.0.2.1")
    assert limits.open_connection("192.0.2.1")
    assert all(limits.open_connection("127.0.0.1") for _ in range(10))  # exempt network


def test_message_rate_is_a_sliding_minute():
    limits = ClientLimits(connections_per_ip=5, messages_per_minute=2)
    assert limits.allow_message("192.0.2.1", now=0) and limits.allow_message("192.0.2.1", now=1)
    assert not limits.allow_message("192.0.2.1", now=59)
    assert limits.allow_message("192.0.2.1", now=60.5)


def test_error_budget_ignores_success_and_421():
    budget = ErrorBudget(limit=2)
    assert not budget.record("250 2.1.5 Recipient OK")
    assert not budget.record("421 4.7.0 bye")
    assert not budget.record("550 5.1.1 No such user here")
    assert budget.record("501 5.5.4 Syntax")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for system"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("250 OK", "250 2.0.0 OK"),
        ("550 5.1.1 No such user here", "550 5.1.1 No such user here"),
        ("250-SIZE 52428800", "250-SIZE 52428800"),  # EHLO lines carry no enhanced code
        ("220 mx ESMTP", "220 mx ESMTP"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ],
)
def test_replies_get_rfc3463_codes(reply, expected):
    assert with_enhanced_code(reply) == expected


def test_reputation_thresholds_need_enough_recipients():
    thresholds = Thresholds(bounce_rate=0.05, complaint_rate=0.001, min_recipients=200)
    assert thresholds.breached(Counts(sent=199, hard_bounces=100, complaints=0)) is None
    assert "hard-bounce rate" in (
        thresholds.breached(Counts(sent=200, hard_bounces=11, complaints=0)) or ""
    )
    assert (
        thresholds.breached(Counts(sent=200, hard_bounces=10, complaints=0)) is None
    )  # 5 % exactly
    assert "complaint rate" in (
        thresholds.breached(Counts(sent=2000, hard_bounces=0, complaints=3)) or ""
    )


def test_webhook_payload_is_validated_and_classified():
    message_id = str(ObjectId())
    report = report_from_webhook(
        {
            "id": "e1",
            "type": "bounced",
            "message_id": message_id,
            "recipient": "bob@x.example",
            "diagnostic": "550 5.1.1 user unknown",
        },
        b"k",
    )
    assert (report.kind, report.dedupe_key, report.outcome and report.outcome.enhanced) == (
        "bounced",
        "webhook:e1",
        "5.1.1",
    )
    for bad in (
        {"type": "bounced", "message_id": message_id, "recipient": "b@x"},
        {"id": "e", "type": "opened", "message_id": message_id, "recipient": "b@x"},
        {"id": "e", "type": "delivered", "recipient": "b@x"},
        {"id": "e", "type": "delivered", "verp": "bounces+forged@x.example", "recipient": "b@x"},
    ):
        with pytest.raises(ValidationError):
            report_from_webhook(bad, b"k")


def test_gridfs_documents_split_into_bucket_chunks():
    data = bytes(range(256)) * 2100  # 537,600 bytes: three chunks
    file_doc, chunks = gridfs_documents(ObjectId(), data, "m.eml", {}, datetime.now(UTC))
    assert file_doc["length"] == len(data) and file_doc["chunkSize"] == CHUNK
    assert [c["n"] for c in chunks] == [0, 1, 2]
    assert b"".join(bytes(c["data"]) for c in chunks) == data
