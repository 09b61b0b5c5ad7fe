"""The webhook HTTP adapter against a real receiver: the address policy holds at send time."""

from __future__ import annotations

from app.adapters.webhook_http import WebhookClient
from tests.support.http_servers import webhook_receiver


async def test_a_post_reaches_a_loopback_receiver_only_when_private_addresses_are_allowed():
    async with webhook_receiver(script=[200, 500]) as receiver:
        allowed = WebhookClient(timeout_seconds=2, allow_private=True)
        refused = WebhookClient(timeout_seconds=2, allow_private=False)
        try:
            ok = await allowed.post(receiver.url, b"[]", {"Mailhub-Signature": "t=1,v1=x"})
            assert ok.ok and ok.status == 200
            failed = await allowed.post(receiver.url, b"[]", {})
            assert not failed.ok and failed.status == 500 and "HTTP 500" in (failed.error or "")
            # the same URL with the production policy: refused before any connection is made,
            # whatever name points there (a DNS answer that changed since the endpoint was made)
            for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
                result = await refused.post(url, b"[]", {})
                assert not result.ok and result.status is None
                assert "non-public address" in (result.error or "")
            assert [d.body for d in receiver.deliveries] == [b"[]", b"[]"]
            assert receiver.deliveries[0].signature == "t=1,v1=x"
        finally:
            await allowed.close()
            await refused.close()


async def test_an_endpoint_that_does_not_answer_in_time_is_a_failure_not_a_hang():
    async with webhook_receiver() as receiver:

        async def stall() -> None:
            import asyncio

            await asyncio.sleep(5)

        receiver.before = stall
        client = WebhookClient(timeout_seconds=0.5, allow_private=True)
        try:
            result = await client.post(receiver.url, b"[]", {})
            assert not result.ok and result.status is None and "Timeout" in (result.error or "")
        finally:
            await client.close()
