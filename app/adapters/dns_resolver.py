"""DNS lookups (dnspython) for delivery (MX, A/AAAA) and mail authentication (TXT).

The nameservers come from ``MAILHUB_DNS_SERVERS`` (``host:port``, comma separated) so tests
and development point at a local dnsmasq; unset, the system resolver is used. Results are
translated into our own small types; dnspython exceptions stop here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver


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
    out = []
    for server in servers:
        host, port = server, 53
        if server.count(":") == 1:
            host, _, raw_port = server.partition(":")
            port = int(raw_port)
        elif server.startswith("[") and "]:" in server:  # [::1]:5353
            host, _, raw_port = server[1:].partition("]:")
            port = int(raw_port)
        out.append((host, port))
    return out


def _configure(resolver: dns.resolver.BaseResolver, servers: list[str], timeout: float) -> None:
    if servers:
        parsed = parse_nameservers(servers)
        resolver.nameservers = [h for h, _ in parsed]
        resolver.port = parsed[0][1]  # dnspython has one port per resolver
    resolver.timeout = timeout
    resolver.lifetime = timeout * 2


CACHED_ANSWERS = 50_000  # answers an authenticating MX keeps (dnspython's LRU cache)


def sync_resolver(
    servers: list[str], timeout: float = 3.0, *, cache: bool = False
) -> dns.resolver.Resolver:
    """A blocking resolver with the same servers (for libraries that only take one).

    ``cache``: keep answers for their TTL (dnspython's thread-safe LRU cache, at most
    CACHED_ANSWERS; a name that does not exist is kept for its zone's negative TTL), as a
    caching resolver would: the MX asks for the same senders' SPF, DKIM and DMARC records
    for every message they send. A record served with TTL 0 is never kept.
    """
    resolver = dns.resolver.Resolver(configure=not servers)
    _configure(resolver, servers, timeout)
    if cache:
        resolver.cache = dns.resolver.LRUCache(CACHED_ANSWERS)
    return resolver


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
