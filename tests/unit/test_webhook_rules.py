"""Webhook rules (app/domain/webhooks.py) and API-key scopes (app/domain/api_scopes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from app.domain.api_scopes import scopes_needed
from app.domain.errors import ValidationError
from app.domain.viewer import Viewer
from app.domain.webhooks import (
    check_url,
    is_public_address,
    public_event,
    retry_delay,
    signature,
    verify_signature,
)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'[{"id":"1"}]'
    header = signature("whsec_x", 1700000000, body)
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature("whsec_x", header, body)
    assert not verify_signature("whsec_y", header, body)
    assert not verify_signature("whsec_x", header, body + b" ")
    assert not verify_signature("whsec_x", header.replace("t=1700000000", "t=1700000001"), body)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "ff02::1",
        "not-an-ip",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    ["ftp://x.test/", "http:///nohost", "https://user:pw@x.test/", "javascript:alert(1)", "x"],
)
def test_only_plain_http_urls_are_accepted(url):
    with pytest.raises(ValidationError) as caught:
        check_url(url)
    assert caught.value.fields[0].field == "url"


def test_url_parts():
    assert check_url("https://hooks.example.com/in?x=1") == ("https", "hooks.example.com", 443)
    assert check_url("http://127.0.0.1:8080/h") == ("http", "127.0.0.1", 8080)


def test_retry_delay_doubles_up_to_the_cap():
    assert [retry_delay(n, 30, 3600) for n in range(1, 10)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]


def test_public_event_shape():
    oid, mid = ObjectId(), ObjectId()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    e = public_event(
        {
            "_id": oid,
            "event_type": "bounced",
            "occurred_at": at,
            "message_id": mid,
            "recipient": "a@b.test",
            "metadata": {"bounce_class": "bad_mailbox", "source_id": mid, "when": at},
        }
    )
    assert e == {
        "id": str(oid),
        "type": "bounced",
        "at": "2026-01-02T03:04:05Z",
        "messageId": str(mid),
        "recipient": "a@b.test",
        "campaignId": None,
        "machine": False,
        "data": {
            "bounce_class": "bad_mailbox",
            "source_id": str(mid),
            "when": "2026-01-02T03:04:05Z",
        },
    }


def test_scopes_per_root_field_deny_by_default():
    assert scopes_needed(["sendEmail"]) == {"send"}
    assert scopes_needed(["templates", "renderTemplate", "__typename"]) == {"templates"}
    assert scopes_needed(["createApiKey"]) == {None}
    assert scopes_needed(["updateMessages"]) == {None}
    key = Viewer(ObjectId(), "a@b.test", scopes=frozenset({"send"}))
    person = Viewer(ObjectId(), "a@b.test")
    assert key.allows("send") and not key.allows("read") and not key.allows(None)
    assert person.allows(None) and person.allows("read")
