"""The SMTP transport against real aiosmtpd servers on loopback."""

from __future__ import annotations

import pytest

from app.adapters.smtp_transport import ConnectFailed, Envelope, Relay, SmtpTransport
from app.domain.bounces import NO_REPLY
from app.embedded import free_port
from tests.support.smtp_sinks import Sink

MESSAGE = b"From: a@example.test\r\nTo: x@d.test\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n"


def transport(port: int, **options: object) -> SmtpTransport:
    defaults: dict[str, object] = {
        "local_hostname": "mx.mailhub.test",
        "port": port,
        "timeout": 5.0,
    }
    return SmtpTransport(**{**defaults, **options})  # type: ignore[arg-type]


async def test_each_recipient_of_one_transaction_gets_its_own_reply():
    port = free_port()
    sink = await Sink.start(
        "127.0.0.1",
        port,
        rcpt={"later@d.test": "451 4.3.0 try later", "gone@d.test": "550 5.1.1 no such user"},
    )
    t = transport(port)
    try:
        session = await t.session("mx.d.test", "127.0.0.1")
        result = await session.send(
            Envelope("b@example.test", ("ok@d.test", "later@d.test", "gone@d.test"), MESSAGE)
        )
        assert not result.broken
        assert result.replies["ok@d.test"].code == 250
        assert (result.replies["later@d.test"].code, result.replies["later@d.test"].enhanced) == (
            451,
            "4.3.0",
        )
        assert (result.replies["gone@d.test"].code, result.replies["gone@d.test"].enhanced) == (
            550,
            "5.1.1",
        )
        assert [r.rcpt_tos for r in sink.received] == [["ok@d.test"]]
        assert sink.received[0].data.endswith(
            b"line one\r\n.leading dot\r\n"
        )  # dot-stuffing undone
    finally:
        await t.close()
        await sink.stop()


async def test_a_pooled_session_carries_the_next_message_without_reconnecting():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port)
    t = transport(port)
    try:
        for n in range(3):
            session = await t.session("mx.d.test", "127.0.0.1")
            result = await session.send(Envelope("b@example.test", (f"u{n}@d.test",), MESSAGE))
            assert result.replies[f"u{n}@d.test"].code == 250
            t.release(session)
        assert len(sink.received) == 3 and sink.connections == 1
    finally:
        await t.close()
        await sink.stop()


async def test_starttls_is_used_when_offered():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, tls=True)
    t = transport(port)
    try:
        session = await t.session("mx.d.test", "127.0.0.1")
        assert session.tls
        await session.send(Envelope("b@example.test", ("x@d.test",), MESSAGE))
        assert sink.received[0].tls
    finally:
        await t.close()
        await sink.stop()


async def test_verify_mode_refuses_a_certificate_it_cannot_verify():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, tls=True)
    t = transport(port, tls="verify")
    try:
        with pytest.raises(ConnectFailed) as failed:
            await t.session("mx.d.test", "127.0.0.1")
        assert failed.value.outcome.code == NO_REPLY and "STARTTLS" in failed.value.outcome.text
        assert sink.received == []
    finally:
        await t.close()
        await sink.stop()


async def test_a_server_silent_after_data_times_out_as_a_temporary_failure():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, silent_after_data=True)
    t = transport(port, timeout=0.5)
    try:
        session = await t.session("mx.d.test", "127.0.0.1")
        result = await session.send(Envelope("b@example.test", ("x@d.test",), MESSAGE))
        reply = result.replies["x@d.test"]
        assert result.broken and not result.retryable
        assert reply.code == NO_REPLY and "timed out during DATA" in reply.text
    finally:
        await t.close()
        await sink.stop()


async def test_a_dropped_connection_fails_every_recipient_of_the_transaction():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, drop_at="RCPT")
    t = transport(port)
    try:
        session = await t.session("mx.d.test", "127.0.0.1")
        result = await session.send(Envelope("b@example.test", ("x@d.test", "y@d.test"), MESSAGE))
        assert result.broken
        assert {r.code for r in result.replies.values()} == {NO_REPLY}
    finally:
        await t.close()
        await sink.stop()


async def test_relay_mode_requires_starttls():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port)
    t = transport(port, relay=Relay("127.0.0.1", port))
    try:
        with pytest.raises(ConnectFailed) as failed:
            await t.session("127.0.0.1", "127.0.0.1")
        assert "STARTTLS is required" in failed.value.outcome.text
    finally:
        await t.close()
        await sink.stop()


async def test_relay_mode_authenticates_after_starttls():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, tls=True, auth={"mailhub": "s3cret"})
    t = transport(port, relay=Relay("127.0.0.1", port, "mailhub", "s3cret"))
    try:
        session = await t.session("127.0.0.1", "127.0.0.1")
        result = await session.send(Envelope("b@example.test", ("x@far.test",), MESSAGE))
        assert result.replies["x@far.test"].code == 250
        assert sink.received[0].tls and sink.received[0].peer_user == "mailhub"
    finally:
        await t.close()
        await sink.stop()


async def test_relay_with_wrong_password_is_a_temporary_failure_of_ours():
    port = free_port()
    sink = await Sink.start("127.0.0.1", port, tls=True, auth={"mailhub": "s3cret"})
    t = transport(port, relay=Relay("127.0.0.1", port, "mailhub", "wrong"))
    try:
        with pytest.raises(ConnectFailed) as failed:
            await t.session("127.0.0.1", "127.0.0.1")
        assert failed.value.outcome.code == NO_REPLY and "AUTH" in failed.value.outcome.text
    finally:
        await t.close()
        await sink.stop()
