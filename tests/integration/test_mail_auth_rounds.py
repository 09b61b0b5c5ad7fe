"""Mail authentication on the event loop: the checks' DNS questions asked from the loop in
rounds (``app.adapters.mail_auth``), against a real dnsmasq, give the verdicts the blocking
checks give; a long include chain finishes in a thread; the loop never waits for DNS."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from app.adapters import mail_auth
from app.adapters.mail_auth import AuthVerdict, MailAuthenticator, _dkim_key_names
from tests.support.dnsmasq import DnsServer
from tests.support.mx import mail_zone, message

CHAIN = 9  # includes in a row: more rounds than MAX_ROUNDS, within SPF's 10 lookups

# Each domain's SPF record (and one DMARC record), chosen so that the check needs answers
# beyond the first round: include chains, a/mx mechanisms, redirect, an exp= explanation
# (looked up inside pyspf's bare ``except:``), a DMARC record only at the organizational domain.
SPF = {
    "direct.test": "v=spf1 ip4:127.0.0.1 -all",
    "include.test": "v=spf1 include:_spf.include.test -all",
    "_spf.include.test": "v=spf1 include:_spf2.include.test ~all",
    "_spf2.include.test": "v=spf1 ip4:127.0.0.0/8 -all",
    "amech.test": "v=spf1 a:host.amech.test -all",
    "mxmech.test": "v=spf1 mx -all",
    "redirect.test": "v=spf1 redirect=direct.test",
    "refused.test": "v=spf1 include:_spf.include.test a:host.amech.test -all exp=why.refused.test",
    "why.refused.test": "not from here",
    "missing.test": "v=spf1 include:nothing.missing.test -all",
    **{f"c{i}.chain.test": f"v=spf1 include:c{i + 1}.chain.test -all" for i in range(CHAIN)},
    f"c{CHAIN}.chain.test": "v=spf1 ip4:127.0.0.1 -all",
}
DMARC = {"_dmarc.org.test": "v=DMARC1; p=reject"}


async def check(
    auth: MailAuthenticator,
    sender: str,
    *,
    from_domain: str | None = None,
    raw: bytes = b"Subject: hi\r\n\r\nhello\r\n",
    client_ip: str = "127.0.0.1",
) -> AuthVerdict:
    """The verdict on a message from ``sender`` (MAIL FROM), From domain the sender's."""
    return await auth.authenticate(
        raw,
        client_ip=client_ip,
        helo="client.test",
        mail_from=sender,
        from_domain=from_domain or sender.rpartition("@")[2],
    )


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    txt = {name: [value] for name, value in {**SPF, **DMARC}.items()}
    a = {"host.amech.test": "127.0.0.1", "mail.mxmech.test": "192.0.2.7"}
    mx = {"mxmech.test": [(10, "mail.mxmech.test")]}
    with DnsServer(txt=txt, a=a, mx=mx) as server:
        yield server


@pytest.mark.parametrize(
    "domain",
    [
        "direct.test",
        "include.test",
        "amech.test",
        "mxmech.test",
        "redirect.test",
        "refused.test",
        "missing.test",
        "c0.chain.test",
        "nowhere.test",
    ],
)
@pytest.mark.parametrize("client_ip", ["127.0.0.1", "192.0.2.7"])
async def test_the_verdict_on_the_loop_is_the_blocking_checks_verdict(dns, domain, client_ip):
    auth = MailAuthenticator([dns.address], "mx.mailhub.test")
    sender = f"alice@{domain}"
    verdict = await check(auth, sender, from_domain="mail.sub.org.test", client_ip=client_ip)
    blocking = await asyncio.to_thread(auth.check_spf, client_ip, "client.test", sender)
    assert (verdict.spf, verdict.spf_domain) == blocking
    # the DMARC record is at the organizational domain: a second round finds it
    assert (verdict.dmarc.policy, verdict.dmarc.result) == ("reject", "fail")
    assert (blocking[0] == "permerror") == (domain == "missing.test")  # an include of nothing


async def test_the_expected_results(dns):
    auth = MailAuthenticator([dns.address], "mx.mailhub.test")
    results = {}
    for domain in ("include.test", "amech.test", "mxmech.test", "refused.test", "c0.chain.test"):
        verdict = await check(auth, f"a@{domain}", client_ip="192.0.2.7")
        results[domain] = verdict.spf
    assert results == {
        "include.test": "fail",
        "amech.test": "fail",
        "mxmech.test": "pass",
        "refused.test": "fail",
        "c0.chain.test": "fail",
    }


async def test_a_long_include_chain_finishes_in_a_thread(dns, monkeypatch):
    auth = MailAuthenticator([dns.address], "mx.mailhub.test")
    finished_in: list[str] = []
    run = mail_auth._Check.run

    def recording_run(check: mail_auth._Check) -> object:
        verdict = run(check)
        if verdict is not None:
            finished_in.append("thread" if check.answers.blocking else "loop")
        return verdict

    monkeypatch.setattr(mail_auth._Check, "run", recording_run)
    for domain, where in (("c0.chain.test", "thread"), ("c3.chain.test", "loop")):
        verdict = await check(auth, f"a@{domain}")
        assert verdict.spf == "pass"
        assert finished_in.pop() == where


async def test_a_large_signed_message_is_checked_in_a_thread(monkeypatch):
    """Its body hash would hold the loop: the check runs in a thread, with the answers the
    loop fetched, and gives the same verdict; a small signed message stays on the loop."""
    zone = mail_zone()
    try:
        auth = MailAuthenticator([zone.address], "mx.mailhub.test")
        where: list[bool] = []
        run = mail_auth._Check.run

        def recording_run(check: mail_auth._Check) -> object:
            where.append(check.answers.blocking)
            return run(check)

        monkeypatch.setattr(mail_auth._Check, "run", recording_run)
        small = zone.domains["pass.test"].sign(message(sender="alice@pass.test"))
        large = zone.domains["pass.test"].sign(
            message(sender="alice@pass.test", body=("y" * 78 + "\n") * 4000)
        )
        assert len(large) > mail_auth.INLINE_SIGNED_BYTES >= len(small)
        for raw, in_thread in ((small, False), (large, True)):
            verdict = await check(auth, "alice@pass.test", raw=raw)
            assert [(s.domain, s.result) for s in verdict.dkim] == [("pass.test", "pass")]
            assert (verdict.spf, verdict.dmarc.result) == ("pass", "pass")
            assert where == [in_thread]
            where.clear()
    finally:
        zone.dns.stop()


async def test_the_loop_goes_on_while_dns_does_not_answer():
    """A DNS server that never answers: the check waits c-ares' timeouts out (temperror), and
    the loop runs other work meanwhile (a blocking check would hold it for the whole wait)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        auth = MailAuthenticator([address], "mx.mailhub.test", timeout=0.4)
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        verdict = await check(auth, "a@slow.test")
        waited = time.monotonic() - started
        stop.set()
        await ticking
    finally:
        silent.close()
    assert verdict.spf == "temperror"
    assert verdict.dmarc.result == "temperror"
    assert waited >= 0.8  # the SPF and DMARC questions went unanswered, together
    assert len(gaps) > 40 and max(gaps) < 0.2


def test_the_dkim_keys_asked_ahead_are_the_signatures_selectors():
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.COM; s=sel1;\r\n"
        b"\th=from:subject; bh=abc=; b=def\r\n"
        b"dkim-signature: v=1; a=rsa-sha256; s=\r\n  two; d=mail.example.org; b=x\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=no-selector.test; b=x\r\n"
        b"DKIM-Signature: v=1; d=caf\xc3\xa9.test; s=s; b=x\r\n"
        b"Subject: hi\r\n\r\nDKIM-Signature: d=body.test; s=body\r\n"
    )
    assert _dkim_key_names(raw) == [
        "sel1._domainkey.example.com",
        "two._domainkey.mail.example.org",
    ]


async def test_hostile_names_in_a_round_leave_the_other_answers_alone(dns):
    """Questions that cannot be asked (a key name with an empty label, a d= that is not ASCII,
    more signatures than are verified) are answered "no such name" in the same round as the
    real questions; the SPF and DMARC answers of that round still arrive (a bad name used to
    be counted twice, ending the round before the last answer, which came back TEMPORARY)."""
    auth = MailAuthenticator([dns.address], "mx.mailhub.test")
    signatures = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=%s; s=%s; h=from; bh=x; b=y\r\n" % pair
        for pair in [(b"bad..name", b"x"), ("café.test".encode(), b"s")]
        + [(b"d%d.test" % i, b"s") for i in range(6)]
    )
    raw = signatures + b"From: a@org.test\r\nSubject: hi\r\n\r\nhello\r\n"
    for _ in range(20):  # the double count lost whichever answer came last
        verdict = await check(auth, "alice@direct.test", from_domain="org.test", raw=raw)
        assert verdict.spf == "pass"
        assert (verdict.dmarc.result, verdict.dmarc.policy) == ("fail", "reject")
        assert len(verdict.dkim) == mail_auth.MAX_SIGNATURES
        assert {s.result for s in verdict.dkim} <= {"permerror", "fail"}
