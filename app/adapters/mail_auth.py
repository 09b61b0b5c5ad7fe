"""Mail authentication of inbound messages: SPF (pyspf), DKIM (dkimpy), DMARC records (dnspython).

Every DNS question goes to ``MAILHUB_DNS_SERVERS`` (tests point it at a local dnsmasq) through
c-ares (``BlockingLookup``), which keeps answers for their TTL. pyspf and dkimpy are blocking
libraries, so checks run in a worker thread. The verdict — which
identifiers passed — is handed to the pure DMARC evaluation in ``app.domain.dmarc``; only this
module imports ``spf`` and ``dkim``.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dkim
import spf

from app.adapters.dns_resolver import BlockingLookup, LookupStatus
from app.domain.dmarc import (
    DmarcResult,
    authentication_results_header,
    evaluate_dmarc,
    organizational_domain,
    select_dmarc_record,
)

_DKIM_HEADER = re.compile(rb"^dkim-signature\s*:", re.I | re.M)
MAX_SIGNATURES = 5  # each costs a DNS lookup and an RSA verify; more is abuse (RFC 6376 §6.1)
_lookup_var: contextvars.ContextVar[BlockingLookup] = contextvars.ContextVar("spf_lookup")
_default_lookup = BlockingLookup([])  # the system's resolvers, for pyspf called outside a check


@dataclass(frozen=True)
class DkimSignature:
    result: str  # pass | fail | temperror | permerror | neutral
    domain: str | None
    selector: str | None


@dataclass(frozen=True)
class AuthVerdict:
    spf: str
    spf_domain: str | None  # the MAIL FROM domain, or the HELO name for a null sender
    dkim: tuple[DkimSignature, ...]
    dmarc: DmarcResult
    header: str  # the Authentication-Results value (RFC 8601), without the field name


def _spf_dns_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNS hook, answering through our configured servers (see ``_lookup_var``), in
    the shape pyspf's own dnspython hook gives: ``((name, qtype), value)`` pairs."""
    lookup = _lookup_var.get(None) or _default_lookup
    if qtype not in ("A", "AAAA", "MX", "PTR", "TXT", "SPF"):
        return []
    status, found = lookup.records(name, "TXT" if qtype == "SPF" else qtype)
    if status is LookupStatus.TEMPORARY:
        raise spf.TempError(f"DNS {qtype} {name}: no answer")
    out: list[Any] = []
    for data in found:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), data.addr))
        elif qtype == "MX":
            out.append(((name, qtype), (data.priority, data.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), data.dname.rstrip(".")))
        else:
            out.append(((name, qtype), (data.data,)))
    return out


spf.DNSLookup = _spf_dns_lookup  # pyspf looks this name up at call time


class MailAuthenticator:
    """SPF, DKIM and DMARC for one inbound message, with DNS through the configured servers."""

    def __init__(
        self, dns_servers: list[str], authserv_id: str, timeout: float = 3.0, threads: int = 16
    ) -> None:
        self.dns = BlockingLookup(dns_servers, timeout)
        self.authserv_id = authserv_id
        self.timeout = timeout
        # Our own threads: DNS waits must not queue behind (or starve) the loop's default executor.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mail-auth")

    async def authenticate(
        self, raw: bytes, *, client_ip: str, helo: str, mail_from: str, from_domain: str | None
    ) -> AuthVerdict:
        """Check the message; never raises on hostile input (errors become temperror/permerror)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._threads,
            contextvars.copy_context().run,
            self._authenticate,
            raw,
            client_ip,
            helo,
            mail_from,
            from_domain,
        )

    def _authenticate(
        self, raw: bytes, client_ip: str, helo: str, mail_from: str, from_domain: str | None
    ) -> AuthVerdict:
        _lookup_var.set(self.dns)
        spf_result, spf_domain = self.check_spf(client_ip, helo, mail_from)
        signatures = self.check_dkim(raw)
        dmarc = self.check_dmarc(
            from_domain or "",
            spf_result,
            spf_domain,
            [s.domain for s in signatures if s.result == "pass" and s.domain],
        )
        header = authentication_results_header(
            authserv_id=self.authserv_id,
            spf=(spf_result, mail_from or None),
            dkim=[(s.result, s.domain, s.selector) for s in signatures],
            dmarc=dmarc,
        )
        return AuthVerdict(spf_result, spf_domain, tuple(signatures), dmarc, header)

    def check_spf(self, client_ip: str, helo: str, mail_from: str) -> tuple[str, str | None]:
        """RFC 7208: the result for MAIL FROM, or for postmaster@HELO when MAIL FROM is null."""
        _lookup_var.set(self.dns)
        sender = mail_from or f"postmaster@{helo}"
        domain = sender.rpartition("@")[2].lower() or None
        try:
            result, _explanation = spf.check2(
                i=client_ip,
                s=sender,
                h=helo or "unknown",
                timeout=self.timeout * 4,
                querytime=self.timeout,
            )
        except Exception:  # pyspf raises on syntax it cannot handle at all
            return "permerror", domain
        result = str(result).lower()
        return (result if result in _SPF_RESULTS else "permerror"), domain

    def check_dkim(self, raw: bytes) -> list[DkimSignature]:
        """Every DKIM-Signature, verified independently (RFC 6376 §6.1: any pass counts)."""
        count = min(len(_DKIM_HEADER.findall(_header_block(raw))), MAX_SIGNATURES)
        out: list[DkimSignature] = []
        if not count:
            return out
        verifier = dkim.DKIM(raw, minkey=1024, timeout=int(self.timeout))
        for index in range(count):
            try:
                ok = verifier.verify(idx=index, dnsfunc=self._dkim_txt)
                result = "pass" if ok else "fail"
            except dkim.DnsTimeoutError:
                result = "temperror"
            except dkim.ValidationError as e:
                # RFC 6376 §6.1.3: a body hash that does not match is a failed signature;
                # other validation errors mean the signature itself is unusable.
                result = "fail" if "body hash mismatch" in str(e) else "permerror"
            except Exception:  # dkimpy raises assorted errors on malformed signatures
                result = "permerror"
            domain = _text(getattr(verifier, "domain", None))
            selector = _text(getattr(verifier, "selector", None))
            out.append(DkimSignature(result, domain, selector))
            verifier.domain, verifier.selector = None, "default"
        return out

    def _dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        status, found = self.dns.records(qname, "TXT")
        if status is LookupStatus.TEMPORARY:
            raise dkim.DnsTimeoutError(f"DNS TXT {qname}: no answer")
        return found[0].data if found else None

    def check_dmarc(
        self, from_domain: str, spf_result: str, spf_domain: str | None, dkim_domains: list[str]
    ) -> DmarcResult:
        """RFC 7489 §6.6.3: the record at _dmarc.<From domain>, else at the org domain."""
        domain = from_domain.strip().rstrip(".").lower()
        lookup_error = None
        record = None
        at_org = False
        if domain and "." in domain:
            status, records = self._txt(f"_dmarc.{domain}")
            if status == "temperror":
                lookup_error = "temperror"
            else:
                record = select_dmarc_record(records)
                org = organizational_domain(domain)
                if record is None and org != domain:
                    status, records = self._txt(f"_dmarc.{org}")
                    if status == "temperror":
                        lookup_error = "temperror"
                    record = select_dmarc_record(records)
                    at_org = record is not None
        return evaluate_dmarc(
            from_domain=domain,
            record=record,
            record_domain_is_org=at_org,
            spf_result=spf_result,
            spf_domain=spf_domain,
            dkim_passing_domains=dkim_domains,
            lookup_error=lookup_error,
        )

    def _txt(self, name: str) -> tuple[str, list[str]]:
        answer = self.dns.txt(name)
        if answer.status is LookupStatus.TEMPORARY:
            return "temperror", []
        return ("ok" if answer.status is LookupStatus.OK else "none"), list(answer.records)


_SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw if end < 0 else raw[:end]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
