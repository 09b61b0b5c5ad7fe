"""Show original (GET /api/emails/{id}/raw, rawUrl) and partial draft updates (issue 13)."""

from __future__ import annotations

from email import message_from_bytes, policy

from tests.e2e.test_rest import auth

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) { __typename
  ... on SendEmailSuccess { item { id rawUrl rfc822MessageId } } } }"""
ITEM = """query($id: ID!) { message(id: $id) { id subject rawUrl rfc822MessageId
  to { email } cc { email } textBody htmlBody } }"""
INBOX = "{ messages(folder: INBOX) { edges { node { id rawUrl rfc822MessageId } } } }"
DRAFT = """mutation($input: DraftInput!) { saveDraft(input: $input) { __typename
  ... on DraftSuccess { item { id subject rawUrl to { email } cc { email } textBody htmlBody } }
  ... on ValidationError { message fields { field message } }
  ... on NotFound { message } } }"""


async def test_the_original_is_the_raw_message_for_sender_and_recipient(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    carol, _ = await api.user("carol")
    sent = (
        await api.gql(
            SEND,
            {"input": {"to": [bob], "bcc": [carol], "subject": "Original?", "text": "Raw bytes."}},
            a,
        )
    )["data"]["sendEmail"]["item"]
    received = (await api.gql(INBOX, token=b))["data"]["messages"]["edges"][0]["node"]
    # absolute, on MAILHUB_PUBLIC_URL (here the unset default, http://HTTP_HOST:HTTP_PORT)
    assert received["rawUrl"] == f"http://127.0.0.1:0/api/emails/{received['id']}/raw"

    r = await api.http.get(f"/api/emails/{received['id']}/raw", headers=auth(b))
    assert r.status_code == 200
    assert r.headers["content-type"] == "message/rfc822"
    assert r.headers["cache-control"] == "private, no-store"
    assert int(r.headers["content-length"]) == len(r.content)
    parsed = message_from_bytes(r.content, policy=policy.default)
    assert parsed["Subject"] == "Original?" and alice in parsed["From"]
    assert parsed["Message-ID"] == received["rfc822MessageId"] == sent["rfc822MessageId"]
    assert parsed.get_content().strip() == "Raw bytes."
    assert parsed["Bcc"] is None and carol.encode() not in r.content  # never in the bytes

    # the sender reads the same original from her Sent item
    assert sent["rawUrl"].endswith(f"/api/emails/{sent['id']}/raw")
    r = await api.http.get(f"/api/emails/{sent['id']}/raw", headers=auth(a))
    assert r.status_code == 200 and b"Subject: Original?" in r.content


async def test_someone_elses_original_is_not_found(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    mallory, m = await api.user("mallory")
    await api.gql(SEND, {"input": {"to": [bob], "subject": "private", "text": "x"}}, a)
    item_id = (await api.gql(INBOX, token=b))["data"]["messages"]["edges"][0]["node"]["id"]

    r = await api.http.get(f"/api/emails/{item_id}/raw", headers=auth(m))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    # exactly like an id that does not exist, or one that is not an id at all
    assert (
        await api.http.get("/api/emails/65a0c0ffee65a0c0ffee65a0/raw", headers=auth(b))
    ).json() == {
        "error": {
            "code": "NOT_FOUND",
            "message": "no message with id 65a0c0ffee65a0c0ffee65a0",
            "fields": [],
        }
    }
    assert (await api.http.get("/api/emails/nope/raw", headers=auth(b))).status_code == 404
    assert (await api.http.get(f"/api/emails/{item_id}/raw")).status_code == 401


async def test_a_draft_has_no_original_until_it_is_sent(api):
    _, a = await api.user("alice")
    draft = (await api.gql(DRAFT, {"input": {"subject": "later"}}, a))["data"]["saveDraft"]["item"]
    assert draft["rawUrl"] is None
    r = await api.http.get(f"/api/emails/{draft['id']}/raw", headers=auth(a))
    assert r.status_code == 404


async def test_save_draft_with_an_id_changes_only_the_fields_given(api):
    _, a = await api.user("alice")
    created = (
        await api.gql(
            DRAFT,
            {
                "input": {
                    "to": ["bob@remote.test"],
                    "cc": ["carol@remote.test"],
                    "subject": "Plan",
                    "text": "First lines",
                    "html": "<p>First lines</p>",
                }
            },
            a,
        )
    )["data"]["saveDraft"]["item"]
    draft_id = created["id"]

    # absent fields keep their value
    item = (await api.gql(DRAFT, {"input": {"id": draft_id, "subject": "Plan B"}}, a))["data"][
        "saveDraft"
    ]["item"]
    assert item["subject"] == "Plan B"
    assert [x["email"] for x in item["to"]] == ["bob@remote.test"]
    assert [x["email"] for x in item["cc"]] == ["carol@remote.test"]
    assert item["textBody"].strip() == "First lines" and "First lines" in item["htmlBody"]

    # null clears; an empty list clears a list; the rest stays
    item = (await api.gql(DRAFT, {"input": {"id": draft_id, "html": None, "cc": []}}, a))["data"][
        "saveDraft"
    ]["item"]
    assert item["htmlBody"] is None and item["cc"] == []
    assert item["subject"] == "Plan B" and item["textBody"].strip() == "First lines"
    assert [x["email"] for x in item["to"]] == ["bob@remote.test"]

    # a variable that is declared but not supplied is absent, not null
    query = """mutation($id: ID!, $text: String) { saveDraft(input: {id: $id, text: $text}) {
      ... on DraftSuccess { item { subject textBody } } } }"""
    item = (await api.gql(query, {"id": draft_id}, a))["data"]["saveDraft"]["item"]
    assert item["textBody"].strip() == "First lines"

    stored = (await api.gql(ITEM, {"id": draft_id}, a))["data"]["message"]
    assert stored["subject"] == "Plan B" and stored["htmlBody"] is None


async def test_a_text_derived_from_the_html_follows_a_partial_html_update(api):
    _, a = await api.user("alice")
    created = (await api.gql(DRAFT, {"input": {"html": "<p>Old words</p>"}}, a))["data"][
        "saveDraft"
    ]["item"]
    assert created["textBody"].strip() == "Old words"
    item = (await api.gql(DRAFT, {"input": {"id": created["id"], "html": "<p>New words</p>"}}, a))[
        "data"
    ]["saveDraft"]["item"]
    assert item["textBody"].strip() == "New words"


async def test_a_partial_update_is_still_validated(api):
    _, a = await api.user("alice")
    draft_id = (await api.gql(DRAFT, {"input": {"subject": "ok"}}, a))["data"]["saveDraft"]["item"][
        "id"
    ]
    result = (await api.gql(DRAFT, {"input": {"id": draft_id, "to": ["not an address"]}}, a))[
        "data"
    ]["saveDraft"]
    assert result["__typename"] == "ValidationError"
    assert [f["field"] for f in result["fields"]] == ["to[0]"]
    item = (await api.gql(ITEM, {"id": draft_id}, a))["data"]["message"]
    assert item["subject"] == "ok" and item["to"] == []


async def test_rest_drafts_with_an_id_change_only_the_keys_given(api):
    _, a = await api.user("alice")
    r = await api.http.post(
        "/api/emails/drafts",
        headers=auth(a),
        json={"to": ["x@remote.test"], "subject": "later", "body": "keep me"},
    )
    assert r.status_code == 201
    draft_id = r.json()["id"]

    r = await api.http.post(
        "/api/emails/drafts", headers=auth(a), json={"id": draft_id, "subject": "sooner"}
    )
    assert r.status_code == 201 and r.json()["id"] == draft_id
    item = (await api.gql(ITEM, {"id": draft_id}, a))["data"]["message"]
    assert item["subject"] == "sooner" and item["textBody"].strip() == "keep me"
    assert [x["email"] for x in item["to"]] == ["x@remote.test"]

    r = await api.http.post(
        "/api/emails/drafts", headers=auth(a), json={"id": draft_id, "body": None, "to": None}
    )
    assert r.status_code == 201
    item = (await api.gql(ITEM, {"id": draft_id}, a))["data"]["message"]
    # no text and no html: the text body is empty, as for a draft that never had one
    assert item["textBody"] == "" and item["to"] == [] and item["subject"] == "sooner"


async def test_updating_someone_elses_draft_is_not_found(api):
    _, a = await api.user("alice")
    _, m = await api.user("mallory")
    draft_id = (await api.gql(DRAFT, {"input": {"subject": "mine"}}, a))["data"]["saveDraft"][
        "item"
    ]["id"]
    result = (await api.gql(DRAFT, {"input": {"id": draft_id, "subject": "yours"}}, m))["data"][
        "saveDraft"
    ]
    assert result["__typename"] == "NotFound"
    r = await api.http.post(
        "/api/emails/drafts", headers=auth(m), json={"id": draft_id, "subject": "yours"}
    )
    assert r.status_code == 404
    item = (await api.gql(ITEM, {"id": draft_id}, a))["data"]["message"]
    assert item["subject"] == "mine"
