"""The sending API over real HTTP with an API key: templates, template sends (GraphQL and the
seed's REST body) delivered to a local SMTP sink, scopes and revocation (issue 14)."""

from __future__ import annotations

import asyncio
import email
import time
from email import policy
from typing import Any

import pytest
from bson import ObjectId

from tests.support.http_servers import ApiClient, mailhub_api
from tests.support.outbound import outbound_world

LOGIN = """mutation { login(email: "alice@example.test", password: "correct horse battery") {
  ... on LoginSuccess { token } } }"""
CREATE_KEY = """mutation($n: String!, $s: [String!]!) { createApiKey(name: $n, scopes: $s) {
  __typename ... on ApiKeyCreated { key apiKey { id name prefix scopes lastUsedAt } }
  ... on ValidationError { fields { field } } } }"""
SAVE = """mutation($i: TemplateInput!) { saveTemplate(input: $i) { __typename
  ... on TemplateSuccess { template { id key latest { version published } published { version } } }
  ... on ValidationError { message fields { field message } } } }"""
PUBLISH = """mutation($k: String!, $v: Int!) { publishTemplate(key: $k, version: $v) { __typename
  ... on TemplateSuccess { template { published { version } versions { version published } } } } }"""
RENDER = """query($k: String!, $v: JSON!) { renderTemplate(key: $k, variables: $v) { __typename
  ... on RenderedEmail { subject text html }
  ... on ValidationError { message fields { field message } } ... on NotFound { message } } }"""
SEND = """mutation($i: SendEmailInput!) { sendEmail(input: $i) { __typename
  ... on SendEmailSuccess { item { id messageId subject textBody htmlBody folder } }
  ... on ValidationError { message fields { field message } } } }"""

SCHEMA = {
    "type": "object",
    "required": ["orderId", "name", "items"],
    "properties": {
        "orderId": {"type": "string", "pattern": "^[0-9]+$"},
        "name": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku", "price"]}},
    },
}
RECEIPT = {
    "key": "order_receipt",
    "name": "Order receipt",
    "subject": "Receipt for order {{ orderId }}",
    "html": "<h1>Thanks {{ name }}</h1><ul>{% for i in items %}<li>{{ i.sku }}: "
    "{{ i.price }}</li>{% endfor %}</ul>",
    "variables": SCHEMA,
}
VARIABLES = {
    "orderId": "1001",
    "name": "Bob <b>",
    "items": [{"sku": "A-1", "price": "9.50"}, {"sku": "B-2", "price": "1.25"}],
}


def _parts(raw: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(raw, policy=policy.default)
    out: dict[str, Any] = {"subject": msg["subject"]}
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_multipart():
            out[part.get_content_type()] = part.get_content()
    return out


async def _wait_received(sink: Any, address: str, count: int, within: float = 30) -> list[Any]:
    deadline = time.monotonic() + within
    while len(sink.messages_to(address)) < count:
        assert time.monotonic() < deadline, f"{address}: {len(sink.messages_to(address))} messages"
        await asyncio.sleep(0.05)
    return sink.messages_to(address)  # type: ignore[no-any-return]


async def _key(api: ApiClient, token: str, scopes: list[str]) -> tuple[str, str]:
    created = (await api.gql(CREATE_KEY, {"n": "shop", "s": scopes}, token))["data"]
    assert created["createApiKey"]["__typename"] == "ApiKeyCreated"
    return created["createApiKey"]["key"], created["createApiKey"]["apiKey"]["id"]


async def test_an_application_renders_and_sends_a_template_with_its_api_key(settings):
    async with (
        outbound_world(settings) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        token = (await api.gql(LOGIN))["data"]["login"]["token"]
        key, key_id = await _key(api, token, ["send", "templates", "read"])
        assert key.startswith("mhk_")

        saved = (await api.gql(SAVE, {"i": RECEIPT}, key))["data"]["saveTemplate"]
        assert saved["template"]["latest"] == {"version": 1, "published": False}
        assert saved["template"]["published"] is None
        second = {**RECEIPT, "text": "Order {{ orderId }}: {{ items|length }} items, {{ name }}"}
        saved = (await api.gql(SAVE, {"i": second}, key))["data"]["saveTemplate"]
        assert saved["template"]["latest"]["version"] == 2
        published = (await api.gql(PUBLISH, {"k": "order_receipt", "v": 2}, key))["data"]
        assert published["publishTemplate"]["template"]["published"] == {"version": 2}
        assert published["publishTemplate"]["template"]["versions"] == [
            {"version": 1, "published": False},
            {"version": 2, "published": True},
        ]

        preview = (await api.gql(RENDER, {"k": "order_receipt", "v": VARIABLES}, key))["data"]
        assert preview["renderTemplate"] == {
            "__typename": "RenderedEmail",
            "subject": "Receipt for order 1001",
            "text": "Order 1001: 2 items, Bob <b>",
            "html": "<h1>Thanks Bob &lt;b&gt;</h1><ul><li>A-1: 9.50</li><li>B-2: 1.25</li></ul>",
        }

        # GraphQL: the published version (2: text and html)
        sent = (
            await api.gql(
                SEND,
                {
                    "i": {
                        "to": ["bob@ok.test"],
                        "template": {"key": "order_receipt", "variables": VARIABLES},
                    }
                },
                key,
            )
        )["data"]["sendEmail"]
        assert sent["__typename"] == "SendEmailSuccess", sent
        assert sent["item"]["folder"] == "SENT"
        assert sent["item"]["subject"] == "Receipt for order 1001"  # the Sent item is rendered
        assert "Thanks Bob &lt;b&gt;" in sent["item"]["htmlBody"]
        [got] = await _wait_received(w.sinks["ok"], "bob@ok.test", 1)
        parts = _parts(got.data)
        assert parts["subject"] == "Receipt for order 1001"
        assert parts["text/plain"].strip() == "Order 1001: 2 items, Bob <b>"
        assert "<li>A-1: 9.50</li>" in parts["text/html"]
        assert "Thanks Bob &lt;b&gt;" in parts["text/html"]

        # REST with the seed's body, version 1 (html only: the text part is made from it)
        r = await api.http.post(
            "/api/emails/send",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "templateId": "order_receipt",
                "templateVersion": 1,
                "variables": VARIABLES,
                "to": ["carol@ok.test"],
                "idempotencyKey": "order-1001-carol",
            },
        )
        assert r.status_code == 202, r.text
        again = await api.http.post(
            "/api/emails/send",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "templateId": "order_receipt",
                "templateVersion": 1,
                "variables": VARIABLES,
                "to": ["carol@ok.test"],
                "idempotencyKey": "order-1001-carol",
            },
        )
        assert again.status_code == 202 and again.json()["id"] == r.json()["id"]
        [got] = await _wait_received(w.sinks["ok"], "carol@ok.test", 1)
        parts = _parts(got.data)
        assert parts["subject"] == "Receipt for order 1001"
        assert "Thanks Bob <b>" in parts["text/plain"] and "A-1: 9.50" in parts["text/plain"]
        assert "<li>B-2: 1.25</li>" in parts["text/html"]

        listed = (await api.gql("{ apiKeys { id lastUsedAt scopes } }", token=token))["data"]
        assert listed["apiKeys"][0]["id"] == key_id and listed["apiKeys"][0]["lastUsedAt"]
        assert listed["apiKeys"][0]["scopes"] == ["send", "templates", "read"]


async def test_bad_variables_are_field_errors_and_nothing_is_queued(settings):
    async with (
        outbound_world(settings, worker=False) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        token = (await api.gql(LOGIN))["data"]["login"]["token"]
        key, _ = await _key(api, token, ["send", "templates"])
        await api.gql(SAVE, {"i": RECEIPT}, key)
        await api.gql(PUBLISH, {"k": "order_receipt", "v": 1}, key)
        bad = {"orderId": "A-7", "items": [{"sku": "x"}]}
        result = (
            await api.gql(
                SEND,
                {
                    "i": {
                        "to": ["bob@ok.test"],
                        "template": {"key": "order_receipt", "variables": bad},
                    }
                },
                key,
            )
        )["data"]["sendEmail"]
        assert result["__typename"] == "ValidationError"
        assert sorted(f["field"] for f in result["fields"]) == [
            "variables.items[0].price",
            "variables.name",
            "variables.orderId",
        ]
        r = await api.http.post(
            "/api/emails/send",
            headers={"Authorization": f"Bearer {key}"},
            json={"templateId": "order_receipt", "variables": {}, "to": ["bob@ok.test"]},
        )
        assert r.status_code == 400
        assert {f["field"] for f in r.json()["error"]["fields"]} == {
            "variables.orderId",
            "variables.name",
            "variables.items",
        }
        preview = (await api.gql(RENDER, {"k": "order_receipt", "v": bad}, key))["data"]
        assert preview["renderTemplate"]["__typename"] == "ValidationError"
        assert await w.db.messages.count_documents({}) == 0
        assert await w.db.recipients.count_documents({}) == 0
        assert await w.db.delivery_events.count_documents({}) == 0

        # a template that tries to escape the sandbox is refused when saved or rendered
        escape = {**RECEIPT, "key": "evil", "subject": "{{ ''.__class__.__mro__ }}"}
        saved = (await api.gql(SAVE, {"i": escape}, key))["data"]["saveTemplate"]
        preview = (await api.gql(RENDER, {"k": "evil", "v": VARIABLES}, key))["data"]
        refused = (
            await api.gql(
                """query($v: JSON!) { renderTemplate(key: "evil", version: 1, variables: $v) {
                __typename ... on ValidationError { fields { field message } } } }""",
                {"v": VARIABLES},
                key,
            )
        )["data"]["renderTemplate"]
        assert saved["__typename"] == "TemplateSuccess"
        assert preview["renderTemplate"]["__typename"] == "NotFound"  # nothing published
        assert refused["__typename"] == "ValidationError"
        assert refused["fields"][0]["field"] == "subject"
        loop = {**RECEIPT, "key": "loop", "text": "{% for i in range(10**9) %}x{% endfor %}"}
        await api.gql(SAVE, {"i": loop}, key)
        refused = (
            await api.gql(
                """query($v: JSON!) { renderTemplate(key: "loop", version: 1, variables: $v) {
                __typename ... on ValidationError { fields { field message } } } }""",
                {"v": VARIABLES},
                key,
            )
        )["data"]["renderTemplate"]
        assert (
            refused["__typename"] == "ValidationError" and refused["fields"][0]["field"] == "text"
        )


async def test_a_key_is_limited_to_its_scopes_and_stops_at_once_when_revoked(settings):
    async with (
        outbound_world(settings, worker=False) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        token = (await api.gql(LOGIN))["data"]["login"]["token"]
        templates_only, _ = await _key(api, token, ["templates"])
        sender, sender_id = await _key(api, token, ["send"])

        body = {"i": {"to": ["bob@ok.test"], "subject": "Hi", "text": "x"}}
        refused = await api.gql(SEND, body, templates_only)
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        r = await api.http.post(
            "/api/emails/send",
            headers={"Authorization": f"Bearer {templates_only}"},
            json={"to": ["bob@ok.test"], "subject": "Hi", "body": "x"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
        # outside every scope: mailbox changes and key management belong to login tokens
        for query in (
            "{ messages { edges { node { id } } } }",
            'mutation { createApiKey(name: "x", scopes: ["send"]) { __typename } }',
        ):
            body_ = await api.gql(query, token=sender)
            assert body_["errors"][0]["extensions"]["code"] == "FORBIDDEN", body_
        r = await api.http.get("/api/mailbox/inbox", headers={"Authorization": f"Bearer {sender}"})
        assert r.status_code == 403

        ok = (await api.gql(SEND, body, sender))["data"]["sendEmail"]
        assert ok["__typename"] == "SendEmailSuccess"
        revoked = await api.gql(
            "mutation($id: ID!) { revokeApiKey(id: $id) { __typename } }", {"id": sender_id}, token
        )
        assert revoked["data"]["revokeApiKey"]["__typename"] == "DeleteSuccess"
        after = await api.gql(SEND, body, sender)
        assert after["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        r = await api.http.post(
            "/api/emails/send",
            headers={"Authorization": f"Bearer {sender}"},
            json={"to": ["bob@ok.test"], "subject": "Hi", "body": "x"},
        )
        assert r.status_code == 401
        assert await w.db.messages.count_documents({}) == 1


async def test_revoking_a_key_ends_its_subscriptions_at_once(api):
    """The revocation event on the user's channel ends the subscription; the periodic token
    check (30 s by default, unchanged here) is only the fallback."""
    from gql import gql

    from tests.e2e.test_realtime import next_of, ws_client

    assert api.system.settings.ws_token_check_seconds >= 30
    _, token = await api.user("alice")
    created = (await api.gql(CREATE_KEY, {"n": "live", "s": ["read"]}, token))["data"]
    key, key_id = created["createApiKey"]["key"], created["createApiKey"]["apiKey"]["id"]
    async with ws_client(api, key) as ws:
        events = ws.subscribe(gql("subscription { mailboxEvents { type itemId } }"))
        pending = asyncio.ensure_future(next_of(events, timeout=10))
        await asyncio.sleep(0.5)  # subscribed
        revoked = await api.gql(
            "mutation($id: ID!) { revokeApiKey(id: $id) { __typename } }", {"id": key_id}, token
        )
        assert revoked["data"]["revokeApiKey"]["__typename"] == "DeleteSuccess"
        with pytest.raises(StopAsyncIteration):  # well before the 30 s periodic check
            await pending


async def test_a_batch_of_sends_is_accepted_in_one_call_and_each_bad_one_is_named(settings):
    async with (
        outbound_world(settings) as w,
        mailhub_api(w.settings, w.system) as api,
    ):
        token = (await api.gql(LOGIN))["data"]["login"]["token"]
        key, _ = await _key(api, token, ["send", "templates"])
        await api.gql(SAVE, {"i": RECEIPT}, key)
        await api.gql(PUBLISH, {"k": "order_receipt", "v": 1}, key)
        good = {"templateId": "order_receipt", "variables": VARIABLES}
        r = await api.http.post(
            "/api/emails/batch",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "sends": [
                    {**good, "to": ["bob@ok.test"], "idempotencyKey": "b-1"},
                    {**good, "to": ["carol@ok.test"], "variables": {"orderId": "x"}},
                    "not a send",
                    {"to": ["dan@ok.test"], "subject": "Plain", "body": "plain text"},
                ]
            },
        )
        assert r.status_code == 202, r.text
        results = r.json()["results"]
        assert results[0]["status"] == "accepted" and results[3]["status"] == "accepted"
        assert results[1]["error"]["code"] == "VALIDATION_ERROR"
        assert {f["field"] for f in results[1]["error"]["fields"]} == {
            "variables.orderId",
            "variables.name",
            "variables.items",
        }
        assert results[2]["error"]["fields"][0]["field"] == "sends[2]"

        # the worker materializes and delivers them; nothing for the refused sends
        [got] = await _wait_received(w.sinks["ok"], "bob@ok.test", 1)
        assert _parts(got.data)["subject"] == "Receipt for order 1001"
        [plain] = await _wait_received(w.sinks["ok"], "dan@ok.test", 1)
        assert _parts(plain.data)["subject"] == "Plain"
        assert not w.sinks["ok"].messages_to("carol@ok.test")
        item = await w.db.mailbox_items.find_one({"_id": ObjectId(results[0]["id"])})
        assert item["folder"] == "SENT" and str(item["message_id"]) == results[0]["messageId"]

        # the same idempotency key again: the same ids, nothing new
        again = await api.http.post(
            "/api/emails/batch",
            headers={"Authorization": f"Bearer {key}"},
            json={"sends": [{**good, "to": ["bob@ok.test"], "idempotencyKey": "b-1"}]},
        )
        assert again.json()["results"][0]["id"] == results[0]["id"]
        assert await w.db.messages.count_documents({}) == 2
