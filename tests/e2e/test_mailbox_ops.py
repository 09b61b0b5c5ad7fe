"""Drafts, state changes, trash/restore, labels, deleteForever — and counts that stay right."""

from tests.e2e.test_send_and_read import INBOX, SEND
from tests.support.graphql_execution import BOTH_WAYS

pytestmark = BOTH_WAYS

UPDATE = """mutation($ids: [ID!]!, $set: MessageStateInput!) { updateMessages(ids: $ids, set: $set) {
  __typename ... on UpdateMessagesSuccess { items { id folder labels read starred } }
  ... on ValidationError { message fields { field } } ... on NotFound { message } } }"""
COUNTS = "{ mailboxes { name folder isLabel total unread } }"
DRAFT = """mutation($input: DraftInput!) { saveDraft(input: $input) { __typename
  ... on DraftSuccess { item { id folder subject to { email } } }
  ... on ValidationError { message fields { field } } ... on NotFound { message } } }"""


async def counts(api, token):
    boxes = (await api.gql(COUNTS, token=token))["data"]["mailboxes"]
    return {b["name"] if b["isLabel"] else b["folder"]: (b["total"], b["unread"]) for b in boxes}


async def inbox_ids(api, token, folder="INBOX"):
    page = (await api.gql(INBOX, {"folder": folder}, token))["data"]["messages"]
    return [e["node"]["id"] for e in page["edges"]]


async def test_read_star_label_trash_restore_delete_keep_counts_exact(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    for i in range(3):
        await api.gql(SEND, {"input": {"to": [bob], "subject": f"s{i}", "text": "x"}}, a)
    ids = await inbox_ids(api, b)
    assert (await counts(api, b))["INBOX"] == (3, 3)

    r = await api.gql(
        UPDATE, {"ids": ids[:2], "set": {"read": True, "starred": True, "addLabels": ["Work"]}}, b
    )
    assert r["data"]["updateMessages"]["__typename"] == "UpdateMessagesSuccess"
    c = await counts(api, b)
    assert c["INBOX"] == (3, 1) and c["Work"] == (2, 0)

    await api.gql(UPDATE, {"ids": [ids[2]], "set": {"folder": "TRASH", "addLabels": ["Work"]}}, b)
    c = await counts(api, b)
    assert c["INBOX"] == (2, 0) and c["TRASH"] == (1, 1) and c["Work"] == (3, 1)
    labelled = (await api.gql('{ messages(label: "Work") { totalCount } }', token=b))["data"][
        "messages"
    ]
    assert labelled["totalCount"] == 3

    await api.gql(UPDATE, {"ids": [ids[2]], "set": {"folder": "INBOX"}}, b)  # restore
    assert (await counts(api, b))["TRASH"] == (0, 0)

    await api.gql(UPDATE, {"ids": [ids[0]], "set": {"folder": "TRASH"}}, b)
    deleted = await api.gql(
        "mutation($ids:[ID!]!){ deleteForever(ids:$ids){ __typename "
        "... on DeleteSuccess { ids } ... on NotFound { message } } }",
        {"ids": [ids[0]]},
        b,
    )
    assert deleted["data"]["deleteForever"] == {"__typename": "DeleteSuccess", "ids": [ids[0]]}
    c = await counts(api, b)
    assert c["TRASH"] == (0, 0) and c["INBOX"] == (2, 1) and c["Work"] == (2, 1)
    assert await api.gql("query($id:ID!){ message(id:$id){ id } }", {"id": ids[0]}, b) == {
        "data": {"message": None}
    }
    # alice's Sent copy still exists: content is shared, views are per user
    assert len(await inbox_ids(api, a, "SENT")) == 3


async def test_delete_forever_refuses_items_outside_trash_and_spam(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await api.gql(SEND, {"input": {"to": [bob], "subject": "keep", "text": "x"}}, a)
    [item] = await inbox_ids(api, b)
    r = await api.gql(
        "mutation($ids:[ID!]!){ deleteForever(ids:$ids){ __typename ... on NotFound { message } } }",
        {"ids": [item]},
        b,
    )
    assert r["data"]["deleteForever"]["__typename"] == "NotFound"
    assert "TRASH" in r["data"]["deleteForever"]["message"]
    assert await inbox_ids(api, b) == [item]


async def test_moving_into_sent_or_drafts_is_a_validation_error(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await api.gql(SEND, {"input": {"to": [bob], "subject": "x", "text": "x"}}, a)
    [item] = await inbox_ids(api, b)
    r = await api.gql(UPDATE, {"ids": [item], "set": {"folder": "SENT"}}, b)
    assert r["data"]["updateMessages"]["__typename"] == "ValidationError"
    assert r["data"]["updateMessages"]["fields"] == [{"field": "set.folder"}]


async def test_draft_lifecycle_create_update_send(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    created = (await api.gql(DRAFT, {"input": {"subject": "draft 1"}}, a))["data"]["saveDraft"]
    assert created["__typename"] == "DraftSuccess" and created["item"]["folder"] == "DRAFTS"
    draft_id = created["item"]["id"]
    updated = (
        await api.gql(
            DRAFT,
            {"input": {"id": draft_id, "subject": "draft 2", "to": [bob], "text": "final words"}},
            a,
        )
    )["data"]["saveDraft"]
    assert updated["item"]["id"] == draft_id and updated["item"]["subject"] == "draft 2"
    assert (await counts(api, a))["DRAFTS"][0] == 1
    sent = await api.gql(
        "mutation($id:ID!){ sendDraft(id:$id){ __typename ... on SendEmailSuccess "
        "{ item { folder subject } } } }",
        {"id": draft_id},
        a,
    )
    assert sent["data"]["sendDraft"] == {
        "__typename": "SendEmailSuccess",
        "item": {"folder": "SENT", "subject": "draft 2"},
    }
    assert (await counts(api, a))["DRAFTS"] == (0, 0)
    inbox = (await api.gql(INBOX, {}, b))["data"]["messages"]["edges"]
    assert [e["node"]["textBody"].strip() for e in inbox] == ["final words"]


async def test_draft_without_recipients_cannot_be_sent_and_stays(api):
    alice, a = await api.user("alice")
    draft_id = (await api.gql(DRAFT, {"input": {"subject": "no one"}}, a))["data"]["saveDraft"][
        "item"
    ]["id"]
    r = await api.gql(
        "mutation($id:ID!){ sendDraft(id:$id){ __typename ... on ValidationError { fields { field } } } }",
        {"id": draft_id},
        a,
    )
    assert r["data"]["sendDraft"] == {"__typename": "ValidationError", "fields": [{"field": "to"}]}
    assert (await counts(api, a))["DRAFTS"][0] == 1
    d = await api.gql(
        "mutation($id:ID!){ deleteDraft(id:$id){ __typename ... on DeleteSuccess { ids } } }",
        {"id": draft_id},
        a,
    )
    assert d["data"]["deleteDraft"]["ids"] == [draft_id]
    assert (await counts(api, a))["DRAFTS"] == (0, 0)


async def test_idempotency_key_returns_the_first_result(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    variables = {"input": {"to": [bob], "subject": "once", "text": "x", "idempotencyKey": "k-1"}}
    first = (await api.gql(SEND, variables, a))["data"]["sendEmail"]["item"]["id"]
    second = (await api.gql(SEND, variables, a))["data"]["sendEmail"]["item"]["id"]
    assert first == second
    assert len(await inbox_ids(api, b)) == 1


async def test_threads_query_lists_conversations_by_latest_activity(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await api.gql(SEND, {"input": {"to": [bob], "subject": "older", "text": "x"}}, a)
    await api.gql(SEND, {"input": {"to": [bob], "subject": "newer", "text": "x"}}, a)
    threads = (
        await api.gql(
            "{ threads(folder: INBOX) { edges { node { subject messageCount "
            "participants { email } } } } }",
            token=b,
        )
    )["data"]["threads"]["edges"]
    assert [t["node"]["subject"] for t in threads] == ["newer", "older"]
    assert {p["email"] for p in threads[0]["node"]["participants"]} == {alice, bob}


async def test_content_is_collected_when_no_view_references_it(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    att = (
        await api.http.post(
            "/api/attachments",
            files={"file": ("a.bin", b"\x00" * 5000)},
            headers={"Authorization": f"Bearer {a}"},
        )
    ).json()
    await api.gql(
        SEND,
        {"input": {"to": [bob], "subject": "gc", "text": "x", "attachmentIds": [att["id"]]}},
        a,
    )
    db = api.system.mongo.db
    assert await db.messages.count_documents({}) == 1
    for token, folder in ((a, "SENT"), (b, "INBOX")):
        [item] = await inbox_ids(api, token, folder)
        await api.gql(UPDATE, {"ids": [item], "set": {"folder": "TRASH"}}, token)
        await api.gql(
            "mutation($ids:[ID!]!){ deleteForever(ids:$ids){ __typename } }", {"ids": [item]}, token
        )
        if token == a:
            assert await db.messages.count_documents({}) == 1  # bob still has it
    assert await db.messages.count_documents({}) == 0
    assert await db.attachments.count_documents({}) == 0
    assert await db["blobs.files"].count_documents({}) == 0


async def test_a_user_may_send_from_an_alias_but_not_from_someone_else(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await api.system.accounts.add_alias(alice, "sales@example.test")
    me = (await api.gql("{ me { addresses } }", token=a))["data"]["me"]["addresses"]
    assert me == [alice, "sales@example.test"]
    ok = await api.gql(
        SEND,
        {
            "input": {
                "from": "Sales <sales@example.test>",
                "to": [bob],
                "subject": "hi",
                "text": "x",
            }
        },
        a,
    )
    assert ok["data"]["sendEmail"]["__typename"] == "SendEmailSuccess"
    node = (await api.gql(INBOX, {}, b))["data"]["messages"]["edges"][0]["node"]
    assert node["from"] == {"email": "sales@example.test", "name": "Sales"}
    bad = await api.gql(
        SEND, {"input": {"from": bob, "to": [alice], "subject": "spoof", "text": "x"}}, a
    )
    assert bad["data"]["sendEmail"]["__typename"] == "ValidationError"


async def test_mail_to_an_alias_lands_in_the_owners_inbox(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    await api.system.accounts.add_alias(bob, "robert@example.test")
    await api.gql(
        SEND,
        {"input": {"to": ["Robert <robert@example.test>"], "subject": "alias", "text": "x"}},
        a,
    )
    assert len(await inbox_ids(api, b)) == 1
