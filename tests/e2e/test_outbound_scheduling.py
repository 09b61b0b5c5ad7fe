"""Scheduled send, the undo window and cancelSend, through GraphQL."""

from __future__ import annotations

import asyncio
import warnings
from datetime import UTC, datetime, timedelta

from jobs.worker import start_embedded_worker

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) { __typename
  ... on SendEmailSuccess { item { id messageId folder recipients { address status } } }
  ... on ValidationError { message } } }"""
CANCEL = """mutation($id: ID!) { cancelSend(id: $id) { __typename
  ... on SendEmailSuccess { item { id folder subject recipients { status } } }
  ... on ValidationError { message fields { field } } ... on NotFound { message } } }"""
EVENTS = """query($m: ID!) { deliveryEvents(messageId: $m) { recipient type occurredAt } }"""
FOLDER = """query($f: Folder) { messages(folder: $f) { edges { node { id subject folder } } } }"""


async def _stop(stop) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():  # arq 0.28 calls redis-py's deprecated close()
        warnings.simplefilter("ignore", DeprecationWarning)
        await stop()


async def test_cancel_send_turns_a_scheduled_send_back_into_a_draft(api):
    alice, token = await api.user("alice")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    sent = (
        await api.gql(
            SEND,
            {"input": {"to": ["bob@far.test"], "subject": "Later", "text": "x", "sendAt": later}},
            token,
        )
    )["data"]["sendEmail"]
    assert sent["item"]["folder"] == "SENT"
    assert sent["item"]["recipients"] == [{"address": "bob@far.test", "status": "scheduled"}]

    canceled = (await api.gql(CANCEL, {"id": sent["item"]["id"]}, token))["data"]["cancelSend"]
    assert canceled["__typename"] == "SendEmailSuccess"
    assert canceled["item"]["folder"] == "DRAFTS" and canceled["item"]["subject"] == "Later"
    drafts = (await api.gql(FOLDER, {"f": "DRAFTS"}, token))["data"]["messages"]["edges"]
    assert [e["node"]["id"] for e in drafts] == [sent["item"]["id"]]
    assert (await api.gql(FOLDER, {"f": "SENT"}, token))["data"]["messages"]["edges"] == []
    events = (await api.gql(EVENTS, {"m": sent["item"]["messageId"]}, token))["data"][
        "deliveryEvents"
    ]
    assert [(e["recipient"], e["type"]) for e in events] == [
        ("bob@far.test", "queued"),
        ("bob@far.test", "canceled"),
    ]
    recipient = await api.system.mongo.db.recipients.find_one({})
    assert recipient["delivery_status"] == "canceled"

    # a canceled send is an ordinary draft again: it can be sent for real
    again = await api.gql(
        """mutation($id: ID!) { sendDraft(id: $id) { __typename
        ... on SendEmailSuccess { item { folder recipients { status } } } } }""",
        {"id": sent["item"]["id"]},
        token,
    )
    assert again["data"]["sendDraft"]["item"]["folder"] == "SENT"
    assert again["data"]["sendDraft"]["item"]["recipients"] == [{"status": "queued"}]


async def test_cancel_send_is_refused_once_the_send_was_handed_to_delivery(api):
    _, token = await api.user("alice")
    sent = (
        await api.gql(
            SEND, {"input": {"to": ["bob@far.test"], "subject": "Now", "text": "x"}}, token
        )
    )["data"]["sendEmail"]
    refused = (await api.gql(CANCEL, {"id": sent["item"]["id"]}, token))["data"]["cancelSend"]
    assert refused["__typename"] == "ValidationError"
    item = (
        await api.gql(
            "query($id: ID!) { message(id: $id) { folder } }", {"id": sent["item"]["id"]}, token
        )
    )["data"]["message"]
    assert item["folder"] == "SENT"


async def test_cancel_send_of_someone_elses_message_reads_as_not_found(api):
    _, alice_token = await api.user("alice")
    _, bob_token = await api.user("bob")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    sent = (
        await api.gql(
            SEND,
            {"input": {"to": ["x@far.test"], "subject": "s", "text": "x", "sendAt": later}},
            alice_token,
        )
    )["data"]["sendEmail"]
    answer = (await api.gql(CANCEL, {"id": sent["item"]["id"]}, bob_token))["data"]["cancelSend"]
    assert answer["__typename"] == "NotFound"
    events = await api.gql(EVENTS, {"m": sent["item"]["messageId"]}, bob_token)
    assert events["data"]["deliveryEvents"] == []


async def test_a_scheduled_send_to_a_local_user_arrives_when_due(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    stop = await start_embedded_worker(api.system.settings, api.system)
    try:
        sent = (
            await api.gql(
                SEND,
                {"input": {"to": [bob], "subject": "Tick", "text": "x", "sendAt": soon}},
                alice_token,
            )
        )["data"]["sendEmail"]
        assert sent["item"]["recipients"][0]["status"] == "scheduled"
        assert (await api.gql(FOLDER, {"f": "INBOX"}, bob_token))["data"]["messages"]["edges"] == []
        for _ in range(300):
            inbox = (await api.gql(FOLDER, {"f": "INBOX"}, bob_token))["data"]["messages"]["edges"]
            if inbox:
                break
            await asyncio.sleep(0.1)
        assert [e["node"]["subject"] for e in inbox] == ["Tick"]
        status = await api.gql(
            "query($id: ID!) { message(id: $id) { recipients { status } } }",
            {"id": sent["item"]["id"]},
            alice_token,
        )
        assert status["data"]["message"]["recipients"] == [{"status": "sent"}]
    finally:
        await _stop(stop)
