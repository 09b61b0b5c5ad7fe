import multiprocessing
import socket
import time

import pytest

from app.adapters.dns_resolver import CaresLookup, DnsResolver, LookupStatus
from tests.support.dnsmasq import DnsServer

LONG_DKIM = "v=DKIM1; k=rsa; p=" + "A" * 392


async def test_mx_lookup_against_a_real_dns_server():
    with DnsServer(
        mx={"two.test": [(20, "mx2.two.test"), (10, "mx1.two.test")], "null.test": [(0, ".")]},
        a={"mx1.two.test": "127.0.0.1", "mx2.two.test": "127.0.0.2", "bare.test": "127.0.0.3"},
        txt={"two.test": ["v=spf1 -all"], "s1._domainkey.two.test": [LONG_DKIM]},
    ) as dns:
        r = DnsResolver([dns.address])
        mx = await r.mx("two.test")
        assert mx.status is LookupStatus.OK and mx.hosts == ("mx1.two.test", "mx2.two.test")
        assert (await r.mx("null.test")).null_mx
        implicit = await r.mx("bare.test")
        assert implicit.implicit and implicit.hosts == ("bare.test",)
        assert (await r.mx("nowhere.test")).status is LookupStatus.NXDOMAIN
        assert await r.addresses("mx2.two.test") == ["127.0.0.2"]
        assert (await r.txt("two.test")).records == ("v=spf1 -all",)
        assert (await r.txt("s1._domainkey.two.test")).records == (LONG_DKIM,)


def test_blocking_lookups_through_c_ares_against_a_real_dns_server():
    """The authentication checks' blocking questions (c-ares): records of the asked type,
    a DKIM key split into 255-byte strings joined again, and the three ways an answer can
    be empty told apart (no such name, no such record, nobody answering)."""
    with DnsServer(
        mx={"two.test": [(20, "mx2.two.test"), (10, "mx1.two.test")]},
        a={"mx1.two.test": "127.0.0.1", "v6.test": "::1"},
        txt={
            "two.test": ["v=spf1 mx -all", "other record"],
            "s1._domainkey.two.test": [LONG_DKIM],
        },
    ) as dns:
        lookup = CaresLookup([dns.address], timeout=0.5)
        status, found = lookup.records("two.test", "MX")
        assert status is LookupStatus.OK
        assert sorted((r.priority, r.exchange) for r in found) == [
            (10, "mx1.two.test"),
            (20, "mx2.two.test"),
        ]
        assert [r.addr for r in lookup.records("mx1.two.test", "A")[1]] == ["127.0.0.1"]
        assert [r.addr for r in lookup.records("v6.test", "AAAA")[1]] == ["::1"]
        assert sorted(lookup.txt("two.test").records) == ["other record", "v=spf1 mx -all"]
        assert lookup.txt("s1._domainkey.two.test").records == (LONG_DKIM,)
        assert lookup.txt("two.test.").records  # a trailing dot asks the same name
        assert lookup.txt("nowhere.test").status is LookupStatus.NXDOMAIN
        assert lookup.records("mx1.two.test", "TXT")[0] is LookupStatus.NO_DATA
        for hostile in ("bad..name.test", "x" * 64 + ".test", "ünïcode.test", "a\x00b.test"):
            assert lookup.records(hostile, "TXT")[0] is LookupStatus.NXDOMAIN, hostile
        dns.stop()
        assert lookup.txt("two.test").status is LookupStatus.TEMPORARY  # TTL 0: not kept


async def test_questions_asked_together_from_the_loop_get_the_blocking_answers():
    """``records_many``: the same answers as ``records``, question by question and in order,
    with questions that cannot be asked answered NXDOMAIN at once (pycares calls back for a
    bad name and then raises: counted twice, it ended the wait before the last answer), and
    the same question twice answered twice; nothing to ask returns at once."""
    with DnsServer(
        mx={"two.test": [(10, "mx1.two.test")]},
        a={"mx1.two.test": "127.0.0.1"},
        txt={"two.test": ["v=spf1 mx -all"], "s1._domainkey.two.test": [LONG_DKIM]},
    ) as dns:
        lookup = CaresLookup([dns.address], timeout=0.5)
        questions = [
            ("two.test", "TXT"),
            ("bad..name.test", "TXT"),
            ("two.test", "MX"),
            ("s1._domainkey.two.test", "TXT"),
            ("nowhere.test", "TXT"),
            ("mx1.two.test", "TXT"),
            ("mx1.two.test", "A"),
            ("two.test", "TXT"),
        ]
        together = await lookup.records_many(questions)
        one_by_one = [lookup.records(name, rdtype) for name, rdtype in questions]

        def readable(answers):  # type: ignore[no-untyped-def]
            return [
                (status, [repr(sorted(vars(r).items())) for r in found])
                for status, found in answers
            ]

        assert readable(together) == readable(one_by_one)
        assert [status for status, _ in together] == [
            LookupStatus.OK,
            LookupStatus.NXDOMAIN,
            LookupStatus.OK,
            LookupStatus.OK,
            LookupStatus.NXDOMAIN,
            LookupStatus.NO_DATA,
            LookupStatus.OK,
            LookupStatus.OK,
        ]
        assert await lookup.records_many([]) == []
        dns.stop()
        assert await lookup.records_many([("two.test", "TXT")]) == [(LookupStatus.TEMPORARY, [])]


def test_a_forked_process_asks_through_its_own_channel():
    """c-ares' event thread does not survive a fork: a lookup made before the fork still
    answers in the child, through a channel the child makes for itself."""
    with DnsServer(txt={"two.test": ["v=spf1 -all"]}) as dns:
        lookup = CaresLookup([dns.address], timeout=0.5)
        assert lookup.txt("two.test").records == ("v=spf1 -all",)
        ctx = multiprocessing.get_context("fork")
        answers = ctx.Queue()
        child = ctx.Process(target=lambda: answers.put(lookup.txt("two.test").records))
        child.start()
        assert answers.get(timeout=10) == ("v=spf1 -all",)
        child.join(10)
        assert child.exitcode == 0


def test_a_server_that_never_answers_is_a_temporary_failure_in_bounded_time():
    """A DNS server that takes the question and never replies (a bound UDP port that reads
    nothing): the lookup gives up after its tries of 0.3 s, as TEMPORARY (measured: 0.63 s;
    the bound is loose for a busy machine, and far below the default timeouts' 6 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        lookup = CaresLookup([f"127.0.0.1:{port}"], timeout=0.3)
        started = time.monotonic()
        assert lookup.txt("two.test").status is LookupStatus.TEMPORARY
        assert time.monotonic() - started < 3.0


def test_dns_servers_must_be_addresses_and_are_checked_at_once():
    """c-ares takes IP addresses (with a port): a name or a bad port fails when the lookup is
    made (at startup), not at the first message; IPv6 servers are given bracketed."""
    for bad in ("dns.example.test", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            CaresLookup([bad])
    assert CaresLookup(["::1", "[::1]:5353", "127.0.0.1"]).servers == [
        "[::1]:53",
        "[::1]:5353",
        "127.0.0.1:53",
    ]
