"""Bounces, complaints and provider webhooks: one code path to events, statuses, suppressions,
GraphQL, and the sender's reputation pausing their sending."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from app.domain.verp import make_verp_address
from app.mx.server import start_mx
from app.web.webhooks import signature_for
from tests.support.mx import DOMAIN, MailZone, mail_zone, smtp_send

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) {
  __typename ... on SendEmailSuccess { item { messageId } }
  ... on ValidationError { message } } }"""
SUPPRESSIONS = """{ suppressions { address reason bounceClass rule sourceMessageId
  event { eventType source bounceClass reply recipient } } }"""
RECIPIENTS = (
    "query($id: ID!) { message(id: $id) { recipients { address status bounceClass lastReply } } }"
)
SECRET = "whsec-test-0123456789"


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


@pytest.fixture
def settings(settings, zone):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={"dns_servers": [zone.address], "webhook_secret": SecretStr(SECRET)}
    )


async def sent_message(api, token, to):  # type: ignore[no-untyped-def]
    body = await api.gql(
        SEND, {"input": {"to": to, "subject": "Quarterly newsletter", "text": "Hello"}}, token=token
    )
    message_id = body["data"]["sendEmail"]["item"]["messageId"]
    recipients = await api.system.mongo.db.recipients.find(
        {"message_id": __import__("bson").ObjectId(message_id)}
    ).to_list()
    return message_id, {r["address"]: r for r in recipients}


def verp(settings, message_id, recipient) -> str:  # type: ignore[no-untyped-def]
    return make_verp_address(
        domain=DOMAIN,
        message_id=str(message_id),
        recipient_id=str(recipient["_id"]),
        secret=settings.secret_key.get_secret_value().encode(),
    )


def dsn(to: str, recipient: str, status: str, diagnostic: str) -> bytes:
    return f"""From: MAILER-DAEMON@mx1.remote.test (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Tue, 04 Mar 2025 10:15:08 +0000
Message-ID: <dsn-{status}-{recipient}@mx1.remote.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain; charset=utf-8

<{recipient}>: host mx1.remote.test said: {diagnostic}

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.remote.test

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Remote-MTA: dns; mx1.remote.test
Diagnostic-Code: smtp; {diagnostic}

--B
Content-Type: text/rfc822-headers

From: alice@example.test
To: {recipient}
Subject: Quarterly newsletter

--B--
""".replace("\n", "\r\n").encode()


def arf(original_return_path: str) -> bytes:
    return f"""From: feedback@fbl.remote.test
To: {original_return_path}
Subject: Complaint about message
Date: Tue, 04 Mar 2025 11:00:00 +0000
Message-ID: <arf-1@fbl.remote.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: RemoteFBL/1.0
Version: 1

--F
Content-Type: text/rfc822-headers

Return-Path: <{original_return_path}>
From: alice@example.test
Subject: Quarterly newsletter

--F--
""".replace("\n", "\r\n").encode()


async def post_event(api, payload, *, timestamp=None, secret=SECRET, signature=None):  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    ts = str(int(timestamp if timestamp is not None else time.time()))
    sig = signature or signature_for(secret.encode(), ts, body)
    return await api.http.post(
        "/webhooks/events",
        content=body,
        headers={
            "X-Mailhub-Timestamp": ts,
            "X-Mailhub-Signature": sig,
            "Content-Type": "application/json",
        },
    ), sig


async def test_dsn_to_the_verp_address_bounces_that_exact_recipient_and_suppresses_it(
    api, settings
):
    mx = await start_mx(settings, api.system)
    try:
        _, token = await api.user("alice")
        message_id, recipients = await sent_message(
            api, token, ["nobody@remote.test", "full@remote.test"]
        )
        hard = dsn(
            verp(settings, message_id, recipients["nobody@remote.test"]),
            "nobody@remote.test",
            "5.1.1",
            "550 5.1.1 <nobody@remote.test>: Recipient address rejected: User unknown",
        )
        soft = dsn(
            verp(settings, message_id, recipients["full@remote.test"]),
            "full@remote.test",
            "5.2.2",
            "552 5.2.2 <full@remote.test>: Quota exceeded (mailbox for user is full)",
        )
        for raw, to in ((hard, "nobody@remote.test"), (soft, "full@remote.test")):
            reply = await smtp_send(
                mx.port, raw, mail_from="", rcpts=[verp(settings, message_id, recipients[to])]
            )
            assert reply["data"][0] == 250, reply
        # a retried DSN (lost 250) changes nothing
        again = await smtp_send(
            mx.port,
            hard,
            mail_from="",
            rcpts=[verp(settings, message_id, recipients["nobody@remote.test"])],
        )
        assert again["data"][0] == 250

        sent_item = (await api.system.mongo.db.mailbox_items.find_one({"role": "sent"}))["_id"]
        statuses = (await api.gql(RECIPIENTS, {"id": str(sent_item)}, token=token))["data"][
            "message"
        ]
        by_address = {r["address"]: r for r in statuses["recipients"]}
        assert by_address["nobody@remote.test"]["status"] == "bounced"
        assert by_address["nobody@remote.test"]["bounceClass"] == "invalid_mailbox"
        assert by_address["full@remote.test"]["status"] == "bounced"
        assert by_address["full@remote.test"]["bounceClass"] == "mailbox_full"

        listed = (await api.gql(SUPPRESSIONS, token=token))["data"]["suppressions"]
        assert [(s["address"], s["reason"], s["bounceClass"]) for s in listed] == [
            ("nobody@remote.test", "hard_bounce", "invalid_mailbox")
        ]  # a full mailbox is not suppressed
        assert listed[0]["sourceMessageId"] == message_id
        assert (
            listed[0]["event"]["eventType"] == "bounced" and listed[0]["event"]["source"] == "dsn"
        )
        assert listed[0]["event"]["reply"].startswith("550 5.1.1")
        events = await api.system.mongo.db.delivery_events.count_documents(
            {"event_type": "bounced"}
        )
        assert events == 2
    finally:
        await mx.stop(grace=2)


async def test_arf_complaint_adds_a_complained_event_and_a_suppression(api, settings):
    mx = await start_mx(settings, api.system)
    try:
        _, token = await api.user("alice")
        message_id, recipients = await sent_message(api, token, ["dana@remote.test"])
        address = verp(settings, message_id, recipients["dana@remote.test"])
        reply = await smtp_send(
            mx.port, arf(address), mail_from="feedback@fbl.remote.test", rcpts=[address]
        )
        assert reply["data"][0] == 250, reply
        listed = (await api.gql(SUPPRESSIONS, token=token))["data"]["suppressions"]
    finally:
        await mx.stop(grace=2)
    assert [(s["address"], s["reason"]) for s in listed] == [("dana@remote.test", "complaint")]
    assert listed[0]["event"]["eventType"] == "complained" and listed[0]["event"]["source"] == "arf"


async def test_forged_verp_address_is_refused_at_rcpt(api, settings):
    mx = await start_mx(settings, api.system)
    try:
        forged = "bounces+" + "a" * 55 + f"@{DOMAIN}"
        reply = await smtp_send(mx.port, b"Subject: x\r\n\r\nx\r\n", mail_from="", rcpts=[forged])
    finally:
        await mx.stop(grace=2)
    assert reply["rcpt_codes"] == [550]


async def test_signed_webhook_events_use_the_same_path_and_replays_are_refused(api, settings):
    _, token = await api.user("alice")
    message_id, recipients = await sent_message(
        api, token, ["erin@remote.test", "finn@remote.test"]
    )
    delivered = {
        "id": "evt-1",
        "type": "delivered",
        "message_id": message_id,
        "recipient": "erin@remote.test",
    }
    sent_at = time.time()  # a replay is the same request: same timestamp, same signature
    response, signature = await post_event(api, delivered, timestamp=sent_at)
    assert response.status_code == 200 and response.json()["results"][0]["applied"] is True
    replay, _ = await post_event(api, delivered, timestamp=sent_at, signature=signature)
    assert replay.status_code == 409

    stale, _ = await post_event(api, {**delivered, "id": "evt-2"}, timestamp=time.time() - 3600)
    assert stale.status_code == 401
    forged, _ = await post_event(api, {**delivered, "id": "evt-3"}, secret="not-the-secret")
    assert forged.status_code == 401

    bounced = {
        "id": "evt-4",
        "type": "bounced",
        "message_id": message_id,
        "recipient": "finn@remote.test",
        "smtp": {"code": 550, "enhanced": "5.1.1", "text": "mailbox does not exist"},
    }
    response, _ = await post_event(api, bounced)
    assert response.json()["results"][0] == {
        "applied": True,
        "event": "bounced",
        "suppressed": True,
    }
    listed = (await api.gql(SUPPRESSIONS, token=token))["data"]["suppressions"]
    assert [(s["address"], s["event"]["source"]) for s in listed] == [
        ("finn@remote.test", "webhook")
    ]
    assert (
        await api.system.mongo.db.delivery_events.count_documents({"event_type": "delivered"}) == 1
    )

    # a hard bounce is the system's: the sender sees it but cannot lift it
    refused = await api.gql(
        'mutation { removeSuppression(address: "Finn@remote.test") { __typename '
        "... on ValidationError { message fields { field } } } }",
        token=token,
    )
    assert refused["data"]["removeSuppression"]["__typename"] == "ValidationError"
    assert refused["data"]["removeSuppression"]["fields"] == [{"field": "address"}]
    assert len((await api.gql(SUPPRESSIONS, token=token))["data"]["suppressions"]) == 1


async def test_suppressions_are_added_manually_and_private_to_their_owner(api, settings):
    _, alice = await api.user("alice")
    _, bob = await api.user("bob")
    added = await api.gql(
        'mutation { addSuppression(address: "noisy@remote.test", note: "asked us") { '
        "__typename ... on SuppressionSuccess { suppression { address reason } } } }",
        token=alice,
    )
    assert added["data"]["addSuppression"]["suppression"] == {
        "address": "noisy@remote.test",
        "reason": "manual",
    }
    assert (await api.gql(SUPPRESSIONS, token=bob))["data"]["suppressions"] == []
    not_bobs = await api.gql(
        'mutation { removeSuppression(address: "noisy@remote.test") { __typename } }', token=bob
    )
    assert not_bobs["data"]["removeSuppression"]["__typename"] == "NotFound"
    # and sending to it now reports the recipient suppressed
    message_id, recipients = await sent_message(api, alice, ["noisy@remote.test"])
    assert recipients["noisy@remote.test"]["delivery_status"] == "suppressed"


ADD = """mutation($a: String!) { addSuppression(address: $a) { __typename
  ... on SuppressionSuccess { suppression { address reason createdAt } } } }"""
REMOVE = """mutation($a: String!) { removeSuppression(address: $a) { __typename
  ... on RemoveSuppressionSuccess { address } ... on ValidationError { message } } }"""
LISTED = "{ suppressions { address reason createdAt } }"


async def test_a_users_suppressions_are_their_own_rows_never_another_users(api, settings):
    _, alice = await api.user("alice")
    _, bob = await api.user("bob")
    address = "shared@remote.test"
    bobs = (await api.gql(ADD, {"a": address}, token=bob))["data"]["addSuppression"]
    alices = (await api.gql(ADD, {"a": address}, token=alice))["data"]["addSuppression"]
    assert alices["__typename"] == "SuppressionSuccess"
    rows = await api.system.mongo.db.suppressions.find({"address": address}).to_list()
    assert len(rows) == 2  # one row each: alice was answered with her own entry, not bob's

    removed = (await api.gql(REMOVE, {"a": address}, token=alice))["data"]["removeSuppression"]
    assert removed == {"__typename": "RemoveSuppressionSuccess", "address": address}
    assert (await api.gql(LISTED, token=alice))["data"]["suppressions"] == []
    assert (await api.gql(LISTED, token=bob))["data"]["suppressions"] == [bobs["suppression"]]
    again = (await api.gql(REMOVE, {"a": address}, token=alice))["data"]["removeSuppression"]
    assert again["__typename"] == "NotFound"

    # bob's suppression stops bob's mail, and only his
    _, to_bob = await sent_message(api, bob, [address])
    _, to_alice = await sent_message(api, alice, [address])
    assert to_bob[address]["delivery_status"] == "suppressed"
    assert to_alice[address]["delivery_status"] != "suppressed"


async def test_a_hard_bounce_caused_by_bob_is_neither_visible_to_nor_removable_by_alice(
    api, settings
):
    _, alice = await api.user("alice")
    _, bob = await api.user("bob")
    message_id, _ = await sent_message(api, bob, ["gone@remote.test"])
    bounced = {
        "id": "evt-gone",
        "type": "bounced",
        "message_id": message_id,
        "recipient": "gone@remote.test",
        "smtp": {"code": 550, "enhanced": "5.1.1", "text": "mailbox does not exist"},
    }
    response, _ = await post_event(api, bounced)
    assert response.json()["results"][0]["suppressed"] is True
    assert (await api.gql(LISTED, token=alice))["data"]["suppressions"] == []
    not_hers = (await api.gql(REMOVE, {"a": "gone@remote.test"}, token=alice))["data"]
    assert not_hers["removeSuppression"]["__typename"] == "NotFound"
    not_his = (await api.gql(REMOVE, {"a": "gone@remote.test"}, token=bob))["data"]
    assert not_his["removeSuppression"]["__typename"] == "ValidationError"
    # alice's own manual entry and its removal leave the hard bounce in force for everyone
    await api.gql(ADD, {"a": "gone@remote.test"}, token=alice)
    await api.gql(REMOVE, {"a": "gone@remote.test"}, token=alice)
    _, to_alice = await sent_message(api, alice, ["gone@remote.test"])
    assert to_alice["gone@remote.test"]["delivery_status"] == "suppressed"
    assert [s["reason"] for s in (await api.gql(LISTED, token=bob))["data"]["suppressions"]] == [
        "hard_bounce"
    ]


async def test_high_bounce_rate_pauses_the_senders_sending(api, settings):
    _, token = await api.user("alice")
    user = await api.system.mongo.db.users.find_one({"email": f"alice@{DOMAIN}"})
    message_id, recipients = await sent_message(
        api, token, [f"r{n}@remote.test" for n in range(12)]
    )
    # 200 more recipients accepted earlier this week (as sending records them: one event each)
    now = datetime.now(UTC)
    await api.system.mongo.db.delivery_events.insert_many(
        [
            {
                "message_id": None,
                "recipient": f"old{n}@remote.test",
                "event_type": "queued",
                "occurred_at": now,
                "sender_user_id": user["_id"],
                "sender_domain": DOMAIN,
                "metadata": {},
            }
            for n in range(200)
        ]
    )
    for n in range(12):  # 12 / 212 = 5.7 % hard bounces > 5 %
        response, _ = await post_event(
            api,
            {
                "id": f"b{n}",
                "type": "bounced",
                "message_id": message_id,
                "recipient": f"r{n}@remote.test",
                "smtp": {"code": 550, "enhanced": "5.1.1", "text": "user unknown"},
            },
        )
        assert response.status_code == 200, response.text
    rep = (
        await api.gql(
            """{ reputation { windowDays minRecipients user { paused pausedReason
        counts { sent hardBounces bounceRate } } events { eventType reason } } }""",
            token=token,
        )
    )["data"]
    assert rep["reputation"]["user"]["paused"] is True
    assert rep["reputation"]["user"]["counts"]["sent"] == 212
    assert rep["reputation"]["user"]["counts"]["hardBounces"] == 12
    assert rep["reputation"]["events"][0]["eventType"] == "paused"
    refused = await api.gql(
        SEND, {"input": {"to": ["x@remote.test"], "subject": "more", "text": "hi"}}, token=token
    )
    assert refused["data"]["sendEmail"]["__typename"] == "ValidationError"
    assert "sending is paused" in refused["data"]["sendEmail"]["message"]
    # the pause holds bulk mail only: a password reset still goes out
    receipt = await api.gql(
        SEND,
        {
            "input": {
                "to": ["x@remote.test"],
                "subject": "reset",
                "text": "your code",
                "transactional": True,
            }
        },
        token=token,
    )
    assert receipt["data"]["sendEmail"]["__typename"] == "SendEmailSuccess", receipt
