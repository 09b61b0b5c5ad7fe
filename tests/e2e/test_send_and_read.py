"""The foundation's promise: log in, send to another local user, see it arrive threaded."""

from typing import Any

import pytest

from app.adapters.blobs import INLINE_FIELD
from app.domain.viewer import Viewer
from app.services.sending.compose import Composition
from tests.support.graphql_execution import BOTH_WAYS

pytestmark = BOTH_WAYS

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) {
  __typename
  ... on SendEmailSuccess { item { id messageId threadId folder subject read
        to { email } bcc { email } recipients { address type status } } }
  ... on ValidationError { message fields { field message } }
  ... on RateLimited { retryAfterSeconds }
  ... on NotFound { message } } }"""

INBOX = """query($folder: Folder, $first: Int, $after: String) {
  messages(folder: $folder, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id subject read from { email name } snippet textBody htmlBody threadId
            bcc { email } hasAttachments attachments { filename size sha256 } } } } }"""


async def test_local_send_arrives_in_recipient_inbox(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    body = await api.gql(
        SEND,
        {
            "input": {
                "to": [bob],
                "subject": "Lunch?",
                "text": "Tacos at noon?",
                "html": "<p>Tacos <b>at noon</b>?<script>alert(1)</script></p>",
            }
        },
        alice_token,
    )
    sent = body["data"]["sendEmail"]
    assert sent["__typename"] == "SendEmailSuccess"
    assert sent["item"]["folder"] == "SENT" and sent["item"]["read"] is True
    assert sent["item"]["recipients"] == [{"address": bob, "type": "to", "status": "sent"}]

    inbox = (await api.gql(INBOX, {"folder": "INBOX"}, bob_token))["data"]["messages"]
    assert inbox["totalCount"] == 1
    node = inbox["edges"][0]["node"]
    assert node["subject"] == "Lunch?" and node["read"] is False
    assert node["from"]["email"] == alice
    assert node["textBody"].strip() == "Tacos at noon?"
    assert "<script" not in node["htmlBody"] and "<b>at noon</b>" in node["htmlBody"]

    boxes = (await api.gql("{ mailboxes { name folder total unread } }", token=bob_token))["data"][
        "mailboxes"
    ]
    inbox_box = next(b for b in boxes if b["folder"] == "INBOX")
    assert (inbox_box["total"], inbox_box["unread"]) == (1, 1)


async def test_reply_joins_the_thread_for_both_users(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    first = await api.gql(
        SEND, {"input": {"to": [bob], "subject": "Plan", "text": "v1"}}, alice_token
    )
    bob_item = (await api.gql(INBOX, {"folder": "INBOX"}, bob_token))["data"]["messages"]["edges"][
        0
    ]["node"]
    reply = await api.gql(
        SEND,
        {
            "input": {
                "to": [alice],
                "subject": "Re: Plan",
                "text": "ok",
                "inReplyTo": bob_item["id"],
            }
        },
        bob_token,
    )
    assert reply["data"]["sendEmail"]["item"]["threadId"] == bob_item["threadId"]
    alice_inbox = (await api.gql(INBOX, {"folder": "INBOX"}, alice_token))["data"]["messages"][
        "edges"
    ]
    alice_sent_thread = first["data"]["sendEmail"]["item"]["threadId"]
    assert alice_inbox[0]["node"]["threadId"] == alice_sent_thread
    thread = await api.gql(
        "query($id: ID!){ thread(id: $id) { messageCount unreadCount subject "
        "messages { subject folder } } }",
        {"id": alice_sent_thread},
        alice_token,
    )
    t = thread["data"]["thread"]
    assert t["messageCount"] == 2 and t["unreadCount"] == 1
    assert [m["folder"] for m in t["messages"]] == ["SENT", "INBOX"]


async def test_bcc_is_visible_only_to_the_sender(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    carol, carol_token = await api.user("carol")
    body = await api.gql(
        SEND,
        {"input": {"to": [bob], "bcc": [carol], "subject": "secret", "text": "x"}},
        alice_token,
    )
    assert [b["email"] for b in body["data"]["sendEmail"]["item"]["bcc"]] == [carol]
    for token in (bob_token, carol_token):
        node = (await api.gql(INBOX, {}, token))["data"]["messages"]["edges"][0]["node"]
        assert node["bcc"] == []
    raw = await api.system.blobs.get(
        (await api.system.mongo.db.messages.find_one({}))["raw_blob_id"]
    )
    assert b"\nBcc:" not in raw and carol.encode() not in raw


async def test_keyset_pages_cover_the_folder_exactly_once(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    for i in range(7):
        await api.gql(SEND, {"input": {"to": [bob], "subject": f"m{i}", "text": "x"}}, alice_token)
    seen, after = [], None
    while True:
        page = (await api.gql(INBOX, {"first": 3, "after": after}, bob_token))["data"]["messages"]
        seen += [e["node"]["subject"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"m{i}" for i in reversed(range(7))]


async def test_the_raw_message_is_stored_in_the_send_transaction(api):
    """sendEmail writes its raw MIME inside the send's transaction (one inline blob document,
    no GridFS upload before it): it reads back as the message, and a send whose transaction
    fails leaves neither a message nor a blob behind."""
    alice, alice_token = await api.user("alice")
    bob, _ = await api.user("bob")
    body = await api.gql(
        SEND, {"input": {"to": [bob], "subject": "Raw", "text": "stored once"}}, alice_token
    )
    assert body["data"]["sendEmail"]["__typename"] == "SendEmailSuccess"
    db = api.system.mongo.db
    message = await db.messages.find_one({})
    blob = await db["blobs.files"].find_one({"_id": message["raw_blob_id"]})
    assert blob["length"] == message["size"] and INLINE_FIELD in blob
    assert await db["blobs.chunks"].count_documents({}) == 0
    raw = await api.system.blobs.get(message["raw_blob_id"])
    assert b"Subject: Raw" in raw and b"stored once" in raw

    user = await db.users.find_one({"email": alice})

    async def fails(session: Any) -> list[Any]:
        raise RuntimeError("the transaction fails")

    with pytest.raises(RuntimeError):
        await api.system.sending.send_email(
            Viewer(user["_id"], alice),
            Composition(to=[bob], subject="Lost", text="never stored"),
            also_in_transaction=fails,
        )
    assert await db.messages.count_documents({}) == 1
    assert await db["blobs.files"].count_documents({}) == 1
