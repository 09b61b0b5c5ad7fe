"""A real Postfix relaying into the MX: what it hands over is filed and readable by GraphQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from app.mx.server import start_mx
from tests.support.mx import DOMAIN, MailZone, mail_zone, message, smtp_send
from tests.support.postfix import PostfixRelay

INBOX = (
    "{ messages(folder: INBOX) { edges { node { subject from { email } authResults textBody } } } }"
)


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


@pytest.fixture
def settings(settings, zone):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"dns_servers": [zone.address]})


async def test_postfix_relays_into_the_mx_and_the_message_is_readable(api, settings):
    mx = await start_mx(settings, api.system)
    relay = PostfixRelay(DOMAIN, mx.port)
    await asyncio.to_thread(relay.start)
    try:
        email, token = await api.user("bob")
        raw = message(subject="Through Postfix", body="relayed by a real MTA\n")
        reply = await smtp_send(relay.port, raw, rcpts=[email], helo="client.pass.test")
        assert reply["data"][0] == 250, reply  # Postfix queued it
        nodes: list[dict[str, object]] = []
        for _ in range(150):  # Postfix delivers asynchronously
            nodes = [
                e["node"] for e in (await api.gql(INBOX, token=token))["data"]["messages"]["edges"]
            ]
            if nodes:
                break
            await asyncio.sleep(0.2)
        assert nodes, relay.log()[-3000:]
    finally:
        await asyncio.to_thread(relay.stop)
        await mx.stop(grace=2)
    assert nodes[0]["subject"] == "Through Postfix"
    assert nodes[0]["from"] == {"email": "alice@pass.test"}
    assert nodes[0]["textBody"] == "relayed by a real MTA"
    assert "spf=pass smtp.mailfrom=alice@pass.test" in str(nodes[0]["authResults"])
