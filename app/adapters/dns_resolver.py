"""DNS lookups: dnspython for delivery (MX, A/AAAA), c-ares (pycares) for the blocking
questions of mail authentication (``CaresLookup``).

The nameservers come from ``MAILHUB_DNS_SERVERS`` (IP addresses with an optional ``:port``,
comma separated) so tests and development point at a local dnsmasq; unset, the system resolver
is used. Results are translated into our own small types; dnspython and pycares exceptions
stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import pycares
from pycares import errno as ares_errno

from app.domain.nameservers import parse_nameserver


class LookupStatus(StrEnum):
    OK = "ok"
    NXDOMAIN = "nxdomain"  # the domain does not exist: permanent
    NO_DATA = "no_data"  # exists, but has no record of that type
    TEMPORARY = "temporary"  # timeout, SERVFAIL: try again later


@dataclass(frozen=True)
class MxResult:
    status: LookupStatus
    hosts: tuple[str, ...] = ()  # in preference order, lowest first
    null_mx: bool = False  # RFC 7505: "MX 0 ." — the domain accepts no mail
    implicit: bool = False  # no MX records: the domain itself is the mail host (RFC 5321 §5.1)


@dataclass(frozen=True)
class TxtResult:
    status: LookupStatus
    records: tuple[str, ...] = field(default_factory=tuple)


def parse_nameservers(servers: list[str]) -> list[tuple[str, int]]:
    """``(address, port)`` of each entry (``app.domain.nameservers``: addresses, not names)."""
    return [parse_nameserver(server) for server in servers]


def _configure(resolver: dns.resolver.BaseResolver, servers: list[str], timeout: float) -> None:
    if servers:
        parsed = parse_nameservers(servers)
        resolver.nameservers = [h for h, _ in parsed]
        resolver.port = parsed[0][1]  # dnspython has one port per resolver
    resolver.timeout = timeout
    resolver.lifetime = timeout * 2


def sync_resolver(servers: list[str], timeout: float = 3.0) -> dns.resolver.Resolver:
    """A blocking dnspython resolver with the same servers (for code that wants dnspython's
    answers; mail authentication asks through ``CaresLookup``)."""
    resolver = dns.resolver.Resolver(configure=not servers)
    _configure(resolver, servers, timeout)
    return resolver


_CARES_TYPES = {
    "A": pycares.QUERY_TYPE_A,
    "AAAA": pycares.QUERY_TYPE_AAAA,
    "MX": pycares.QUERY_TYPE_MX,
    "PTR": pycares.QUERY_TYPE_PTR,
    "TXT": pycares.QUERY_TYPE_TXT,
}
# no such name, or a name that cannot be one (an empty or over-long label): no record there
_CARES_NXDOMAIN = frozenset(
    {ares_errno.ARES_ENOTFOUND, ares_errno.ARES_ENONAME, ares_errno.ARES_EBADNAME}
)
_CARES_NO_DATA = frozenset({ares_errno.ARES_ENODATA})
_NOT_A_NAME = ares_errno.ARES_EBADNAME  # what a question that cannot be asked is answered


class CaresLookup:
    """The MX's authentication questions (SPF, DKIM, DMARC), answered by c-ares through
    pycares: asked from the event loop (``records_many``, how ``MailAuthenticator`` asks) or
    blocking (``records``, for pyspf and dkimpy run in a thread, and direct calls).

    A question costs the process a third to a fifth of the CPU of dnspython's blocking
    resolver (≈ 60–120 against ≈ 250–380 µs against a local dnsmasq; ``bench/dns_lookup.py``,
    docs/benchmarks.md "Tenth session"): c-ares builds, sends and parses in C on its own event
    thread, and the asker only waits. c-ares keeps answers for their TTL (its query
    cache, on by default, at most an hour; a record served with TTL 0 is never kept; a name
    that does not exist is kept for its zone's negative TTL), as a caching resolver would:
    the MX asks for the same senders' SPF, DKIM and DMARC records for every message they
    send.

    The channel (and its event thread) is made on first use in the process that asks, so a
    forked helper never inherits a channel whose thread did not survive the fork.
    """

    def __init__(self, servers: list[str], timeout: float = 3.0) -> None:
        # a bad entry fails here, at startup, not at the first message
        self.servers = [
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # c-ares brackets IPv6
            for host, port in parse_nameservers(servers)
        ]
        self.timeout = timeout
        self.tries = 2
        self._channel: pycares.Channel | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _get_channel(self) -> pycares.Channel:
        if self._channel is None or self._pid != os.getpid():
            with self._lock:
                if self._channel is None or self._pid != os.getpid():
                    self._channel = pycares.Channel(
                        servers=self.servers or None, timeout=self.timeout, tries=self.tries
                    )
                    self._pid = os.getpid()
        return self._channel

    def _ask(self, name: str, rdtype: str, answered: Callable[[Any, int | None], None]) -> bool:
        """Send the question; False when ``name`` cannot be a DNS name (nothing is sent).
        ``answered(result, error)`` is called on c-ares' event thread."""
        try:
            self._get_channel().query(
                name.rstrip(".") or ".", _CARES_TYPES[rdtype], callback=answered
            )
        except (pycares.AresError, UnicodeError, ValueError, RuntimeError):  # not a DNS name
            return False
        return True

    @property
    def _wait(self) -> float:
        # c-ares gives up by itself after its tries; the margin only guards a lost callback
        return self.timeout * self.tries + 1.0

    def records(self, name: str, rdtype: str) -> tuple[LookupStatus, list[Any]]:
        """The answer's records of type ``rdtype`` (A, AAAA, MX, PTR or TXT), as pycares'
        record data (``.addr``, ``.priority``/``.exchange``, ``.dname``, ``.data``). CNAMEs
        are followed by c-ares; only records of the asked type are returned. Blocks."""
        done = threading.Event()
        box: list[tuple[Any, int | None]] = []

        def answered(result: Any, error: int | None) -> None:
            box.append((result, error))
            done.set()

        if not self._ask(name, rdtype, answered):
            return _records_of(rdtype, None, _NOT_A_NAME)
        if not done.wait(self._wait):
            return LookupStatus.TEMPORARY, []
        return _records_of(rdtype, *box[0])

    async def records_many(
        self, questions: list[tuple[str, str]]
    ) -> list[tuple[LookupStatus, list[Any]]]:
        """``records`` of each ``(name, rdtype)``, asked together from the event loop, which
        goes on meanwhile; the loop is woken once, when the last answer is in. A question
        given twice is asked once."""
        distinct = list(dict.fromkeys(questions))
        loop = asyncio.get_running_loop()
        all_in: asyncio.Future[None] = loop.create_future()
        raw: list[tuple[Any, int | None] | None] = [None] * len(distinct)
        lock = threading.Lock()  # answers come on c-ares' thread (or at once, from its cache)

        def settle() -> None:
            if not all_in.done():  # not given up on (a timeout, a cancelled session)
                all_in.set_result(None)

        def answer_to(index: int) -> Callable[[Any, int | None], None]:
            def answered(result: Any, error: int | None) -> None:
                with lock:  # (pycares answers a bad name, then raises: ``_ask`` answers
                    raw[index] = (result, error)  # it again, which changes nothing here)
                    last = None not in raw
                if last:
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(settle)

            return answered

        for index, (name, rdtype) in enumerate(distinct):
            if not self._ask(name, rdtype, answer_to(index)):
                answer_to(index)(None, _NOT_A_NAME)
        if distinct:
            with contextlib.suppress(TimeoutError):  # unanswered ones are TEMPORARY below
                await asyncio.wait_for(all_in, self._wait)
        answers = {
            question: _records_of(question[1], *got)
            if got is not None
            else (LookupStatus.TEMPORARY, [])
            for question, got in zip(distinct, raw, strict=True)
        }
        return [answers[question] for question in questions]

    def txt(self, name: str) -> TxtResult:
        return txt_result(*self.records(name, "TXT"))


def _records_of(rdtype: str, result: Any, error: int | None) -> tuple[LookupStatus, list[Any]]:
    """A pycares answer as ``CaresLookup.records`` gives it."""
    if error is not None:
        if error in _CARES_NXDOMAIN:
            return LookupStatus.NXDOMAIN, []
        if error in _CARES_NO_DATA:
            return LookupStatus.NO_DATA, []
        return LookupStatus.TEMPORARY, []
    qtype = _CARES_TYPES[rdtype]
    found = [r.data for r in result.answer if r.type == qtype]
    return (LookupStatus.OK if found else LookupStatus.NO_DATA), found


def txt_result(status: LookupStatus, found: list[Any]) -> TxtResult:
    """TXT records (pycares' record data) as text."""
    return TxtResult(status, tuple(r.data.decode("utf-8", "replace") for r in found))


class DnsResolver:
    def __init__(self, servers: list[str], timeout: float = 3.0) -> None:
        self.servers = servers
        self.resolver = dns.asyncresolver.Resolver(configure=not servers)
        _configure(self.resolver, servers, timeout)

    async def mx(self, domain: str) -> MxResult:
        """MX hosts in preference order; implicit MX when there is none; null MX recognised."""
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return MxResult(LookupStatus.NXDOMAIN)
        except dns.resolver.NoAnswer:
            addresses = await self.addresses(domain)
            if addresses:
                return MxResult(LookupStatus.OK, (domain.rstrip(".").lower(),), implicit=True)
            return MxResult(LookupStatus.NO_DATA)
        except (
            dns.exception.Timeout,
            dns.resolver.NoNameservers,
            dns.resolver.YXDOMAIN,
            dns.exception.DNSException,
        ):
            return MxResult(LookupStatus.TEMPORARY)
        records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
        if len(records) == 1 and records[0].exchange == dns.name.root:
            return MxResult(LookupStatus.OK, (), null_mx=True)
        hosts = tuple(
            str(r.exchange).rstrip(".").lower() for r in records if r.exchange != dns.name.root
        )
        return MxResult(LookupStatus.OK, hosts)

    async def addresses(self, host: str) -> list[str]:
        """A and AAAA records of a host (IPv4 first); empty when it has none."""
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rdtype)
            except dns.exception.DNSException:
                continue
            out.extend(r.to_text() for r in answer)
        return out

    async def txt(self, name: str) -> TxtResult:
        try:
            answer = await self.resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            return TxtResult(LookupStatus.NXDOMAIN)
        except dns.resolver.NoAnswer:
            return TxtResult(LookupStatus.NO_DATA)
        except dns.exception.DNSException:
            return TxtResult(LookupStatus.TEMPORARY)
        return TxtResult(
            LookupStatus.OK, tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        )
