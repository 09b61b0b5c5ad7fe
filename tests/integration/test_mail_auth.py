"""SPF, DKIM and DMARC against a real DNS server (dnsmasq) publishing the senders' records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.adapters.mail_auth import MailAuthenticator
from tests.support.dnsmasq import DnsServer
from tests.support.mx import DOMAIN, MailZone, mail_zone, message, running_mx, smtp_send


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


@pytest.fixture
def auth(zone) -> MailAuthenticator:  # type: ignore[no-untyped-def]
    return MailAuthenticator([zone.address], "mx.mailhub.test")


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("alice@pass.test", "pass"),
        ("alice@spffail.test", "fail"),
        ("alice@softfail.test", "softfail"),
        ("alice@none.test", "none"),
    ],
)
async def test_spf_result_follows_the_published_record(auth, sender, expected):
    verdict = await auth.authenticate(
        message(sender=sender),
        client_ip="127.0.0.1",
        helo="client.test",
        mail_from=sender,
        from_domain=sender.rpartition("@")[2],
    )
    assert verdict.spf == expected
    assert f"spf={expected} smtp.mailfrom={sender}" in verdict.header


async def test_every_dkim_signature_is_verified(auth, zone):
    raw = zone.domains["pass.test"].sign(message(sender="alice@pass.test"))
    raw = zone.domains["none.test"].sign(raw)
    verdict = await auth.authenticate(
        raw,
        client_ip="127.0.0.1",
        helo="client.test",
        mail_from="alice@pass.test",
        from_domain="pass.test",
    )
    assert sorted((s.domain, s.result) for s in verdict.dkim) == [
        ("none.test", "pass"),
        ("pass.test", "pass"),
    ]
    assert "dkim=pass header.d=pass.test header.s=s1" in verdict.header


async def test_a_modified_body_fails_dkim(auth, zone):
    raw = zone.domains["pass.test"].sign(message(sender="alice@pass.test"))
    raw = raw.replace(b"see you tomorrow", b"send me money")
    verdict = await auth.authenticate(
        raw,
        client_ip="127.0.0.1",
        helo="client.test",
        mail_from="alice@pass.test",
        from_domain="pass.test",
    )
    assert [s.result for s in verdict.dkim] == ["fail"]
    assert verdict.dmarc.result == "pass"  # SPF still passes and aligns


async def test_dkim_alignment_passes_dmarc_when_spf_fails(auth, zone):
    raw = zone.domains["spffail.test"].sign(message(sender="alice@spffail.test"))
    verdict = await auth.authenticate(
        raw,
        client_ip="127.0.0.1",
        helo="client.test",
        mail_from="alice@spffail.test",
        from_domain="spffail.test",
    )
    assert verdict.spf == "fail" and verdict.dmarc.result == "pass"


async def test_dmarc_reject_policy_refuses_the_message_with_550(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(
            h.port, message(sender="alice@spffail.test"), mail_from="alice@spffail.test"
        )
        assert reply["data"][0] == 550 and reply["data"][1].startswith("5.7.1"), reply
        assert "DMARC" in reply["data"][1]
        assert await h.items(bob) == []


async def test_dmarc_quarantine_failure_goes_to_spam(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(
            h.port, message(sender="alice@softfail.test"), mail_from="alice@softfail.test"
        )
        assert reply["data"][0] == 250, reply
        items = await h.items(bob)
        stored = await h.system.mongo.db.messages.find_one({"_id": items[0]["message_id"]})
    assert items[0]["folder"] == "SPAM"
    assert (
        "spf=softfail" in stored["auth_results"]
        and "dmarc=fail (p=quarantine dis=quarantine)" in stored["auth_results"]
    )


@pytest.mark.parametrize("sender", ["alice@none.test", "alice@nopolicy.test", "alice@monitor.test"])
async def test_no_policy_or_p_none_is_delivered_to_the_inbox(settings, zone, sender):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        reply = await smtp_send(h.port, message(sender=sender), mail_from=sender)
        assert reply["data"][0] == 250, reply
        assert [i["folder"] for i in await h.items(bob)] == ["INBOX"]


async def test_authentication_results_header_is_prepended_to_the_stored_raw_message(settings, zone):
    async with running_mx(settings, zone) as h:
        _, bob = await h.user("bob")
        raw = zone.domains["pass.test"].sign(message(sender="alice@pass.test", to=f"bob@{DOMAIN}"))
        reply = await smtp_send(h.port, raw)
        assert reply["data"][0] == 250, reply
        item = (await h.items(bob))[0]
        stored = await h.system.mongo.db.messages.find_one({"_id": item["message_id"]})
        blob = await h.system.blobs.get(stored["raw_blob_id"])
    assert blob.startswith(b"Authentication-Results: mx.mailhub.test; spf=pass")
    assert blob.endswith(raw)  # the message itself is kept byte for byte
    assert "dkim=pass header.d=pass.test" in stored["auth_results"]
    assert "dmarc=pass" in stored["auth_results"]


def test_answers_are_kept_for_their_ttl_and_not_when_it_is_zero():
    """The MX keeps DNS answers for their TTL: after the DNS server is gone, a sender's
    records served with TTL 300 are still known; records served with TTL 0 are asked for
    again (and nobody answers)."""
    records = {
        "cached.test": ["v=spf1 ip4:127.0.0.1 -all"],
        "_dmarc.cached.test": ["v=DMARC1; p=reject"],
    }
    with DnsServer(txt=records, ttl=300) as kept, DnsServer(txt=records) as fresh:
        keeping = MailAuthenticator([kept.address], "mx.mailhub.test")
        asking = MailAuthenticator([fresh.address], "mx.mailhub.test", timeout=0.5)
        for auth in (keeping, asking):
            assert auth.check_spf("127.0.0.1", "client.test", "a@cached.test")[0] == "pass"
            assert auth.check_dmarc("cached.test", "fail", "cached.test", []).policy == "reject"
        kept.stop()
        fresh.stop()

        assert keeping.check_spf("127.0.0.1", "client.test", "a@cached.test")[0] == "pass"
        dmarc = keeping.check_dmarc("cached.test", "fail", "cached.test", [])
        assert (dmarc.policy, dmarc.disposition) == ("reject", "reject")

        assert asking.check_spf("127.0.0.1", "client.test", "a@cached.test")[0] == "temperror"
        assert asking.check_dmarc("cached.test", "fail", "cached.test", []).result == "temperror"
