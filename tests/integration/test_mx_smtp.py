"""The MX as remote MTAs see it: smtplib and swaks against a real listener and database."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
from collections.abc import Iterator

import pytest

from tests.support.mx import DOMAIN, MailZone, mail_zone, message, running_mx, smtp_send, swaks


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


async def test_ehlo_advertises_size_8bitmime_smtputf8_pipelining_and_enhanced_codes(settings, zone):
    async with running_mx(settings, zone) as h:

        def ehlo() -> tuple[int, str]:
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                code, text = c.ehlo("client.pass.test")
                return code, text.decode()

        code, text = await asyncio.to_thread(ehlo)
    assert code == 250
    for extension in ("SIZE 52428800", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"):
        assert extension in text
    assert "AUTH" not in text and "STARTTLS" not in text  # no certificate configured: no STARTTLS


async def test_message_to_a_local_user_is_filed_in_the_inbox_before_250(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(h.port, message(subject="Lunch"))
        assert reply["data"][0] == 250, reply
        items = await h.items(bob)
    assert [(i["folder"], i["subject"]) for i in items] == [("INBOX", "Lunch")]
    assert items[0]["spam"]["is_spam"] is False


async def test_unknown_user_at_hosted_domain_is_refused_at_rcpt_with_5_1_1(settings, zone):
    async with running_mx(settings, zone) as h:
        reply = await smtp_send(h.port, message(), rcpts=[f"nobody@{DOMAIN}"])
    assert reply["rcpt"][f"nobody@{DOMAIN}"][0] == 550
    assert reply["rcpt"][f"nobody@{DOMAIN}"][1].startswith("5.1.1")
    assert "data" not in reply


async def test_mx_is_never_an_open_relay(settings, zone):
    async with running_mx(settings, zone) as h:
        code, transcript = await swaks(
            "--server",
            f"127.0.0.1:{h.port}",
            "--from",
            "spammer@pass.test",
            "--to",
            "victim@gmail.com",
            "--quit-after",
            "RCPT",
            "--helo",
            "client.pass.test",
        )
    assert "<** 550 5.7.1" in transcript, transcript
    assert code != 0


async def test_alias_delivers_to_its_user(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        await h.system.accounts.add_alias(f"bob@{DOMAIN}", f"robert@{DOMAIN}")
        reply = await smtp_send(h.port, message(to=f"robert@{DOMAIN}"), rcpts=[f"Robert@{DOMAIN}"])
        assert reply["data"][0] == 250, reply
        assert len(await h.items(bob)) == 1


async def test_swaks_delivers_to_several_recipients_one_view_each(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        _, carol = await h.user("carol")
        code, transcript = await swaks(
            "--server",
            f"127.0.0.1:{h.port}",
            "--from",
            "alice@pass.test",
            "--to",
            f"bob@{DOMAIN},carol@{DOMAIN}",
            "--helo",
            "client.pass.test",
            "--header",
            "Subject: swaks test",
            "--body",
            "hello from swaks",
            "--pipeline",
        )
        assert code == 0, transcript
        assert "<-  250 2.0.0" in transcript
        bob_items, carol_items = await h.items(bob), await h.items(carol)
    assert len(bob_items) == 1 and len(carol_items) == 1
    assert bob_items[0]["message_id"] == carol_items[0]["message_id"]


async def test_more_than_100_recipients_get_452_4_5_3(settings, zone):
    async with running_mx(settings, zone) as h:
        await h.user("bob")
        reply = await smtp_send(h.port, message(), rcpts=[f"bob@{DOMAIN}"] * 101)
    assert reply["rcpt_codes"] == [250] * 100 + [452]
    assert reply["data"][0] == 250


async def test_declared_size_over_the_limit_is_refused_at_mail_from(settings, zone):
    async with running_mx(settings, zone, smtp_max_message_bytes=10_000) as h:

        def oversize() -> tuple[int, str]:
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                c.ehlo("client.pass.test")
                code, text = c.mail("a@pass.test", ["SIZE=20000"])
                return code, text.decode()

        code, text = await asyncio.to_thread(oversize)
    assert code == 552 and text.startswith("5.3.4")


async def test_size_limit_is_enforced_while_receiving(settings, zone):
    async with running_mx(settings, zone, smtp_max_message_bytes=10_000) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(h.port, message(body="x" * 70 + "\n" * 0 + ("y" * 70 + "\n") * 300))
        assert reply["data"][0] == 552, reply
        assert reply["data"][1].startswith("5.3.4")
        assert await h.items(bob) == []


async def test_repeated_errors_end_the_session(settings, zone):
    async with running_mx(settings, zone, smtp_max_errors=3) as h:

        def probe() -> list[int]:
            codes = []
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                c.ehlo("client.pass.test")
                c.mail("a@pass.test")
                for n in range(5):
                    try:
                        codes.append(c.rcpt(f"nobody{n}@{DOMAIN}")[0])
                    except smtplib.SMTPServerDisconnected:
                        codes.append(-1)
                        break
            return codes

        codes = await asyncio.to_thread(probe)
    assert codes[:2] == [550, 550]
    assert codes[2] in (421, 550) and codes[-1] in (421, -1)


async def test_connection_limit_per_client_gives_421(settings, zone):
    async with running_mx(settings, zone, smtp_connections_per_ip=2, smtp_limit_exempt=[]) as h:

        def connect() -> list[int]:
            held = [smtplib.SMTP("127.0.0.1", h.port, timeout=10) for _ in range(2)]
            try:
                third = smtplib.SMTP(timeout=10)
                code, _ = third.connect("127.0.0.1", h.port)
                third.close()
                return [code]
            finally:
                for c in held:
                    c.close()

        assert await asyncio.to_thread(connect) == [421]


async def test_message_rate_limit_per_client_gives_421(settings, zone):
    async with running_mx(
        settings, zone, smtp_messages_per_minute_per_ip=2, smtp_limit_exempt=[]
    ) as h:
        await h.user("bob")

        def send_three() -> list[int]:
            codes = []
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                c.ehlo("client.pass.test")
                for _ in range(3):
                    code, _ = c.mail("alice@pass.test")
                    codes.append(code)
                    if code != 250:
                        break
                    c.rset()
            return codes

        assert await asyncio.to_thread(send_three) == [250, 250, 421]


async def test_idle_client_is_disconnected_after_the_timeout(settings, zone):
    async with running_mx(settings, zone, smtp_timeout_seconds=0.5) as h:
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        greeting = await reader.readline()
        assert greeting.startswith(b"220 ")
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF once the server hangs up
        writer.close()
    assert rest == b"" or b"421" in rest


def _self_signed(tmp_path):  # type: ignore[no-untyped-def]
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.mailhub.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_starttls_is_offered_with_a_certificate_and_mail_flows_over_it(
    settings, zone, tmp_path
):
    import ssl

    cert, key = _self_signed(tmp_path)
    async with running_mx(settings, zone, smtp_tls_cert=cert, smtp_tls_key=key) as h:
        _, bob = await h.user("bob")

        def over_tls() -> tuple[bool, int, str]:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                c.ehlo("client.pass.test")
                offered = c.has_extn("starttls")
                c.starttls(context=context)
                c.ehlo("client.pass.test")
                c.mail("alice@pass.test")
                c.rcpt(f"bob@{DOMAIN}")
                code, text = c.data(message(subject="over TLS"))
                return offered, code, text.decode()

        offered, code, text = await asyncio.to_thread(over_tls)
        items = await h.items(bob)
    assert offered and code == 250, text
    assert [i["subject"] for i in items] == ["over TLS"]


async def test_a_normal_quit_logs_no_lost_connection_but_a_dropped_client_still_does(
    settings, zone, caplog
):
    caplog.set_level(logging.DEBUG, logger="mail.log")
    async with running_mx(settings, zone) as h:

        def polite() -> None:
            with smtplib.SMTP("127.0.0.1", h.port, timeout=10) as c:
                c.ehlo("client.pass.test")  # the with-block ends with QUIT

        await asyncio.to_thread(polite)
        await asyncio.sleep(0.2)  # the server side of the close runs after the client's
        after_quit = [r.getMessage() for r in caplog.records if "Connection lost" in r.msg]

        def rude() -> None:
            with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
                s.recv(1024)
                s.sendall(b"EHLO client.pass.test\r\n")
                s.recv(1024)  # then hang up without QUIT

        await asyncio.to_thread(rude)
        for _ in range(50):
            await asyncio.sleep(0.05)
            dropped = [r for r in caplog.records if "Connection lost" in r.msg]
            if dropped:
                break
    assert after_quit == []
    assert [r.levelno for r in dropped] == [logging.INFO]


async def test_postmaster_is_accepted_for_every_hosted_domain_and_reaches_its_first_user(
    settings, zone
):
    """RFC 5321 §4.5.1: "postmaster" (with a hosted domain, or with none) is always accepted."""
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")  # the domain's first user
        await h.user("carol")
        for rcpt in (f"postmaster@{DOMAIN}", f"PostMaster@{DOMAIN}", "postmaster"):
            reply = await smtp_send(h.port, message(subject=f"to {rcpt}"), rcpts=[rcpt])
            assert reply["rcpt"][rcpt][0] == 250, reply
            assert reply["data"][0] == 250, reply
        items = await h.items(bob)
    assert sorted(i["subject"] for i in items) == sorted(
        [f"to postmaster@{DOMAIN}", f"to PostMaster@{DOMAIN}", "to postmaster"]
    )


async def test_a_postmaster_alias_takes_precedence_and_other_domains_are_still_refused(
    settings, zone
):
    async with running_mx(settings, zone) as h:
        await h.user("bob")
        carol_email, carol = await h.user("carol")
        await h.system.accounts.add_alias(carol_email, f"postmaster@{DOMAIN}")
        reply = await smtp_send(h.port, message(), rcpts=[f"postmaster@{DOMAIN}"])
        assert reply["data"][0] == 250, reply
        assert len(await h.items(carol)) == 1
        relay = await smtp_send(h.port, message(), rcpts=["postmaster@elsewhere.test"])
    assert relay["rcpt"]["postmaster@elsewhere.test"][0] == 550
