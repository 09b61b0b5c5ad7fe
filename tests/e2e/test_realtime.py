"""Realtime over a real websocket (gql client, graphql-transport-ws) against a real uvicorn."""

import asyncio

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from tests.e2e.test_mailbox_ops import UPDATE, inbox_ids
from tests.e2e.test_send_and_read import SEND
from tests.support.graphql_execution import BOTH_WAYS

pytestmark = BOTH_WAYS

EVENTS = gql("subscription { mailboxEvents { type itemId state item { subject folder read } } }")
COUNTS = gql("subscription { unreadCounts { folder total unread } }")


def ws_client(api, token):
    url = api.base.replace("http://", "ws://") + "/graphql"
    transport = WebsocketsTransport(
        url=url,
        init_payload={"token": token} if token else {},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


async def next_of(agen, timeout=10):
    return await asyncio.wait_for(agen.__anext__(), timeout)


async def test_new_mail_reaches_only_its_owner_live(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    carol, c = await api.user("carol")
    async with ws_client(api, b) as bob_ws, ws_client(api, c) as carol_ws:
        bob_events = bob_ws.subscribe(EVENTS)
        carol_events = carol_ws.subscribe(EVENTS)
        bob_counts = bob_ws.subscribe(COUNTS)
        first = await next_of(bob_counts)
        assert next(x for x in first["unreadCounts"] if x["folder"] == "INBOX")["unread"] == 0
        # gql sends "subscribe" when iteration starts: start both before the mail arrives
        carol_next = asyncio.ensure_future(next_of(carol_events, timeout=3))
        bob_next = asyncio.ensure_future(next_of(bob_events))
        await asyncio.sleep(0.5)

        await api.gql(SEND, {"input": {"to": [bob], "subject": "live!", "text": "x"}}, a)
        event = (await bob_next)["mailboxEvents"]
        assert event["type"] == "created" and event["item"]["subject"] == "live!"
        assert int(event["state"]) > 0
        counts = (await next_of(bob_counts))["unreadCounts"]
        assert next(x for x in counts if x["folder"] == "INBOX")["unread"] == 1

        # reading it elsewhere (HTTP) updates the live counts
        [item] = await inbox_ids(api, b)
        bob_next = asyncio.ensure_future(next_of(bob_events))
        await api.gql(UPDATE, {"ids": [item], "set": {"read": True}}, b)
        updated = (await bob_next)["mailboxEvents"]
        assert updated["type"] == "updated" and updated["item"]["read"] is True
        counts = (await next_of(bob_counts))["unreadCounts"]
        assert next(x for x in counts if x["folder"] == "INBOX")["unread"] == 0

        with pytest.raises(asyncio.TimeoutError):
            await carol_next


async def test_bad_token_is_rejected_before_any_data(api):
    import json

    import websockets

    url = api.base.replace("http://", "ws://") + "/graphql"
    for payload in ({"token": "mh_not-a-token"}, {}, {"token": 42}):
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                frame = await asyncio.wait_for(ws.recv(), 5)
                pytest.fail(f"got data before rejection: {frame}")
            assert closed.value.rcvd.code == 4403


async def test_offline_client_catches_up_exactly_with_changes(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    state = (await api.gql("{ state }", token=b))["data"]["state"]
    for i in range(10):
        await api.gql(SEND, {"input": {"to": [bob], "subject": f"while away {i}", "text": "x"}}, a)
    q = """query($s: String!) { changes(since: $s) { __typename
      ... on Changes { created updated deleted newState } ... on CannotCalculateChanges { message } } }"""
    changes = (await api.gql(q, {"s": state}, b))["data"]["changes"]
    ids = await inbox_ids(api, b)
    assert changes["__typename"] == "Changes"
    assert sorted(changes["created"]) == sorted(ids) and len(ids) == 10
    assert changes["updated"] == [] and changes["deleted"] == []

    await api.gql(UPDATE, {"ids": ids[:2], "set": {"read": True}}, b)
    later = (await api.gql(q, {"s": changes["newState"]}, b))["data"]["changes"]
    assert sorted(later["updated"]) == sorted(ids[:2]) and later["created"] == []
    assert (await api.gql(q, {"s": later["newState"]}, b))["data"]["changes"]["created"] == []

    await api.system.mongo.db.mailbox_changes.delete_many({"seq": {"$lte": 3}})  # retention trimmed
    gone = (await api.gql(q, {"s": "1"}, b))["data"]["changes"]
    assert gone["__typename"] == "CannotCalculateChanges"
    bad = await api.gql(q, {"s": "not-a-state"}, b, expect_errors=True)
    assert bad["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


async def test_revoked_token_ends_subscriptions(api, monkeypatch):
    _, b = await api.user("bob")
    monkeypatch.setattr(api.system.settings, "ws_token_check_seconds", 0.2)
    async with ws_client(api, b) as session:
        agen = session.subscribe(EVENTS)
        task = asyncio.ensure_future(next_of(agen, timeout=10))
        await asyncio.sleep(0.5)
        await api.system.accounts.revoke(b)
        with pytest.raises(StopAsyncIteration):
            await task


async def test_event_from_one_api_process_reaches_a_subscriber_on_another(api, settings):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from app.embedded import free_port

    port = free_port()
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": settings.mongodb_uri,
        "MAILHUB_MONGODB_DATABASE": settings.mongodb_database,
        "MAILHUB_REDIS_URL": settings.redis_url,
        "MAILHUB_REDIS_PREFIX": settings.redis_prefix,
        "MAILHUB_SECRET_KEY": settings.secret_key.get_secret_value(),
        "MAILHUB_LOG_LEVEL": "WARNING",
    }
    other = subprocess.Popen(
        [str(Path(sys.executable).parent / "mailhub"), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and other.poll() is None, "second api did not start"
            await asyncio.sleep(0.1)
        alice, a = await api.user("alice")
        bob, b = await api.user("bob")

        class Other:
            base = f"http://127.0.0.1:{port}"

        async with ws_client(Other, b) as bob_ws:
            bob_next = asyncio.ensure_future(next_of(bob_ws.subscribe(EVENTS)))
            await asyncio.sleep(0.5)
            await api.gql(
                SEND, {"input": {"to": [bob], "subject": "across processes", "text": "x"}}, a
            )
            event = (await bob_next)["mailboxEvents"]
            assert event["item"]["subject"] == "across processes"
    finally:
        other.terminate()
        other.wait(10)


async def test_legacy_graphql_ws_protocol_is_served(api):
    alice, a = await api.user("alice")
    bob, b = await api.user("bob")
    url = api.base.replace("http://", "ws://") + "/graphql"
    transport = WebsocketsTransport(
        url=url, init_payload={"token": b}, subprotocols=[WebsocketsTransport.APOLLO_SUBPROTOCOL]
    )
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        bob_next = asyncio.ensure_future(next_of(session.subscribe(EVENTS)))
        await asyncio.sleep(0.5)
        await api.gql(SEND, {"input": {"to": [bob], "subject": "legacy", "text": "x"}}, a)
        assert (await bob_next)["mailboxEvents"]["item"]["subject"] == "legacy"


async def test_a_client_that_cannot_keep_up_is_disconnected(api, monkeypatch):
    """Back-pressure: the per-subscription queue is bounded; overflow ends the connection."""
    import json

    import websockets

    from app.adapters import pubsub

    monkeypatch.setattr(pubsub, "QUEUE_LIMIT", 4)
    _, b = await api.user("bob")
    user_id = (await api.gql("{ me { id } }", token=b))["data"]["me"]["id"]
    url = api.base.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=1) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": b}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "subscription { mailboxEvents { itemId } }"},
                }
            )
        )
        await asyncio.sleep(0.5)
        # a burst far beyond the bound while this client reads nothing
        for i in range(50):
            await api.system.hub.publish(
                user_id,
                {
                    "type": "mailbox",
                    "kind": "updated",
                    "itemId": "0" * 24,
                    "state": str(i),
                    "folders": [],
                },
            )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is None or closed.value.rcvd.code in (4008, 1011, 1000)


async def test_sending_a_draft_tells_live_clients_the_draft_is_gone(api):
    from tests.e2e.test_mailbox_ops import DRAFT

    alice, a = await api.user("alice")
    bob, _ = await api.user("bob")
    saved = await api.gql(DRAFT, {"input": {"to": [bob], "subject": "ready"}}, a)
    draft_id = saved["data"]["saveDraft"]["item"]["id"]
    async with ws_client(api, a) as alice_ws:
        events = alice_ws.subscribe(EVENTS)
        first = asyncio.ensure_future(next_of(events))
        await asyncio.sleep(0.5)  # subscribed before the send
        sent = await api.gql(
            "mutation($id:ID!){ sendDraft(id:$id){ ... on SendEmailSuccess { item { id } } } }",
            {"id": draft_id},
            a,
        )
        sent_id = sent["data"]["sendDraft"]["item"]["id"]
        seen = [(await first)["mailboxEvents"], (await next_of(events))["mailboxEvents"]]
        assert {(e["type"], e["itemId"]) for e in seen} == {
            ("deleted", draft_id),
            ("created", sent_id),
        }
