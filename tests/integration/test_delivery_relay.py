"""Relay mode through a real Postfix: STARTTLS required, then Postfix delivers onwards."""

from __future__ import annotations

import asyncio

from app.domain.verp import parse_verp_address
from app.embedded import free_port
from tests.support.outbound import outbound_world
from tests.support.postfix_relay import PostfixRelay
from tests.support.smtp_sinks import Sink


async def test_mail_goes_out_through_a_postfix_relay_over_tls_and_still_verifies(settings):
    far = await Sink.start("127.0.0.1", free_port())
    port = free_port()
    try:
        with PostfixRelay(port, forward_to=("127.0.0.1", far.port)) as relay:
            async with outbound_world(settings, relay_host="127.0.0.1", relay_port=port) as w:
                item = await w.send(["bob@anywhere.example"], subject="Via relay")
                try:
                    docs = await w.wait_statuses(
                        item["message_id"], {"bob@anywhere.example": "sent"}
                    )
                except AssertionError:
                    docs = await w.recipients(item["message_id"])
                    raise AssertionError(
                        f"{docs['bob@anywhere.example']['last_reply']}\n{relay.log}"
                    ) from None
                reply = docs["bob@anywhere.example"]["last_reply"]
                assert reply["code"] == 250 and "queued as" in reply["text"]  # Postfix took it
                for _ in range(600):
                    if far.received:
                        break
                    await asyncio.sleep(0.05)
                [got] = far.received
                assert got.rcpt_tos == ["bob@anywhere.example"]
                secret = settings.secret_key.get_secret_value().encode()
                assert parse_verp_address(got.mail_from, secret=secret) == (
                    str(item["message_id"]),
                    str(docs["bob@anywhere.example"]["_id"]),
                )
                assert w.verify_dkim(got.data)  # Postfix added Received:, the signature holds
                assert b"Received: from " in got.data
                assert "TLS connection established from localhost" in relay.log
    finally:
        await far.stop()
