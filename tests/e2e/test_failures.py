"""MongoDB down: a typed SERVICE_UNAVAILABLE / 503 with Retry-After within 5 s, then recovery."""

import asyncio
import contextlib
import time

import httpx
import uvicorn

from app.bootstrap import build_system
from app.embedded import free_port
from app.web.app import create_app
from tests.support.own_mongo import own_mongo_settings, start_mongo


async def test_database_outage_is_a_typed_error_and_heals(services, tmp_path, unique_name):
    port = free_port()
    mongo = start_mongo(port, tmp_path / "db")
    settings = own_mongo_settings(port, services, unique_name)
    system = await build_system(settings)
    await system.accounts.add_domain("example.test")
    await system.accounts.create_user("alice@example.test", "long password")
    token, _ = await system.accounts.login("alice@example.test", "long password", "test")
    http_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, system),
            host="127.0.0.1",
            port=http_port,
            log_level="critical",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            assert (await http.get("/api/mailbox/inbox")).status_code == 200
            mongo.kill()
            mongo.wait()

            started = time.monotonic()
            r = await http.get("/api/mailbox/inbox")
            assert r.status_code == 503 and r.headers["retry-after"]
            assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert time.monotonic() - started < 5

            started = time.monotonic()
            body = (await http.post("/graphql", json={"query": "{ mailboxes { total } }"})).json()
            assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert time.monotonic() - started < 5
            assert (await http.get("/readyz")).status_code == 503

            mongo = start_mongo(port, tmp_path / "db")
            for _ in range(50):
                r = await http.get("/api/mailbox/inbox")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 200, r.text
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await system.close()
        mongo.kill()
        mongo.wait()


async def test_a_subscription_outlasts_a_database_outage(services, tmp_path, unique_name):
    """The periodic token check cannot reach MongoDB: the subscription stays (it would drop
    every client at once, all reconnecting into a recovering store) and carries events after."""
    import json

    import websockets

    port = free_port()
    mongo = start_mongo(port, tmp_path / "db")
    settings = own_mongo_settings(
        port, services, unique_name, mongo_timeout_ms=500, ws_token_check_seconds=0.2
    )
    system = await build_system(settings)
    await system.accounts.add_domain("example.test")
    await system.accounts.create_user("alice@example.test", "long password")
    await system.accounts.create_user("bob@example.test", "long password")
    alice, _ = await system.accounts.login("alice@example.test", "long password", "test")
    bob, _ = await system.accounts.login("bob@example.test", "long password", "test")
    http_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, system),
            host="127.0.0.1",
            port=http_port,
            log_level="critical",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{http_port}/graphql", subprotocols=["graphql-transport-ws"]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": bob}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = "subscription { mailboxEvents { type itemId } }"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            await asyncio.sleep(0.5)  # subscribed; token checks pass
            mongo.kill()
            mongo.wait()
            await asyncio.sleep(2.5)  # several token checks find no database
            mongo = start_mongo(port, tmp_path / "db")
            send = {
                "query": 'mutation { sendEmail(input: {to: ["bob@example.test"], '
                'subject: "after the outage", text: "hi"}) { __typename } }'
            }
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                timeout=30,
                headers={"Authorization": f"Bearer {alice}"},
            ) as http:
                for _ in range(50):
                    body = (await http.post("/graphql", json=send)).json()
                    if (body.get("data") or {}).get("sendEmail"):
                        break
                    await asyncio.sleep(0.2)
                assert body["data"]["sendEmail"]["__typename"] == "SendEmailSuccess", body
            frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert frame["type"] == "next" and not frame["payload"].get("errors"), frame
            assert frame["payload"]["data"]["mailboxEvents"]["type"] == "created"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await system.close()
        mongo.kill()
        mongo.wait()
