"""Mail authentication of inbound messages: SPF (pyspf), DKIM (dkimpy), DMARC records (dnspython).

Every DNS question goes to ``MAILHUB_DNS_SERVERS`` (tests point it at a local dnsmasq) through
c-ares (``CaresLookup``), which keeps answers for their TTL. The verdict — which identifiers
passed — is handed to the pure DMARC evaluation in ``app.domain.dmarc``; only this module
imports ``spf`` and ``dkim``.

pyspf and dkimpy ask DNS by calling a blocking function. ``authenticate`` runs them on the
event loop anyway, without ever blocking it: the loop asks the questions a check will ask
(``CheckAnswers.fetch``, all at once), then runs the check with hooks that only read those
answers. A question nobody asked yet stops the check (``NeedAnswer``); the loop asks it and runs
the check again. The checks are pure functions of the answers, so a check that ran again gives
what one run would have; the stages that finished (SPF, DKIM, DMARC) are kept. Most mail needs
one round (the sender's SPF record, its DMARC record, the DKIM keys of its signatures); a check
that still misses answers after ``MAX_ROUNDS`` (long include chains) finishes in a thread, where
the hooks ask as they go, and so does the check of a large signed message (``INLINE_SIGNED_BYTES``:
its body hash takes long enough to stall the other sessions on the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import dkim
import spf

from app.adapters.dns_resolver import CaresLookup, LookupStatus, txt_result
from app.domain.dmarc import (
    DmarcResult,
    authentication_results_header,
    evaluate_dmarc,
    organizational_domain,
    select_dmarc_record,
)

_DKIM_HEADER = re.compile(rb"^dkim-signature\s*:", re.I | re.M)
# A DKIM-Signature field (with its folded lines) and its d= and s= tags, for asking the keys
# ahead; a field these miss is still verified (its key is asked in a second round).
_DKIM_FIELD = re.compile(rb"^dkim-signature\s*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_DKIM_TAG = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]+)")
MAX_SIGNATURES = 5  # each costs a DNS lookup and an RSA verify; more is abuse (RFC 6376 §6.1)
MAX_ROUNDS = 8  # rounds of questions on the loop before a check finishes in a thread
# A DKIM-signed message larger than this is checked in a thread: hashing its body (dkimpy's
# canonicalization, in Python) must not hold the loop and every other session on it.
INLINE_SIGNED_BYTES = 256 * 1024
T = TypeVar("T")


class Answering(Protocol):
    """What the checks ask DNS through: ``CaresLookup`` (blocking) or ``CheckAnswers``."""

    def records(self, name: str, rdtype: str) -> tuple[LookupStatus, list[Any]]: ...


_lookup_var: contextvars.ContextVar[Answering] = contextvars.ContextVar("auth_lookup")
_default_lookup = CaresLookup([])  # the system's resolvers, for pyspf called outside a check


class NeedAnswer(BaseException):
    """A check asked a question whose answer has not been fetched. A ``BaseException``:
    pyspf and dkimpy catch ``Exception`` around their DNS calls."""


class CheckAnswers:
    """The DNS answers of one message's checks, asked from the loop (``fetch``) and read by the
    blocking libraries' hooks (``records``). A question not fetched raises
    ``NeedAnswer`` and is remembered in ``missed`` (a library's bare ``except:`` may swallow
    the exception, but not the record of it); with ``blocking`` set (the thread fallback) it is
    asked there and then."""

    def __init__(self, lookup: CaresLookup) -> None:
        self.lookup = lookup
        self.known: dict[tuple[str, str], tuple[LookupStatus, list[Any]]] = {}
        self.missed: set[tuple[str, str]] = set()
        self.misses = 0  # questions not answered when asked, ever (``_Check._stage``)
        self.blocking = False

    def records(self, name: str, rdtype: str) -> tuple[LookupStatus, list[Any]]:
        key = (_question_name(name), rdtype)
        answer = self.known.get(key)
        if answer is None:
            if not self.blocking:
                self.missed.add(key)
                self.misses += 1
                raise NeedAnswer(key)
            answer = self.known[key] = self.lookup.records(*key)
        return answer

    async def fetch(self, questions: Iterable[tuple[str, str]]) -> None:
        """Ask the questions not answered yet, all at once."""
        keys = [k for k in dict.fromkeys(questions) if k not in self.known]
        self.known.update(zip(keys, await self.lookup.records_many(keys), strict=True))
        self.missed.difference_update(keys)


def _question_name(name: bytes | str) -> str:
    """How a name is asked and kept: without the root's dot, in lower case (a name in bytes
    that is not ASCII raises ``UnicodeDecodeError``)."""
    text = name.decode("ascii") if isinstance(name, bytes) else name
    return text.rstrip(".").lower()


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
        self.dns = CaresLookup(dns_servers, timeout)
        self.authserv_id = authserv_id
        self.timeout = timeout
        # For the checks that need more rounds of questions than MAX_ROUNDS: our own threads,
        # so DNS waits never queue behind (or starve) the loop's default executor.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mail-auth")

    async def authenticate(
        self, raw: bytes, *, client_ip: str, helo: str, mail_from: str, from_domain: str | None
    ) -> AuthVerdict:
        """Check the message; never raises on hostile input (errors become temperror/permerror).
        Runs on the loop, which goes on while DNS answers (see the module's docstring)."""
        check = _Check(self, raw, client_ip, helo, mail_from, from_domain)
        await check.answers.fetch(check.first_questions())
        inline = len(raw) <= INLINE_SIGNED_BYTES or not _DKIM_HEADER.search(_header_block(raw))
        for _ in range(MAX_ROUNDS if inline else 0):
            verdict = check.run()
            if verdict is not None:
                return verdict
            await check.answers.fetch(check.answers.missed)
        check.answers.blocking = True
        loop = asyncio.get_running_loop()
        finished: AuthVerdict | None = await loop.run_in_executor(
            self._threads, contextvars.copy_context().run, check.run
        )
        assert finished is not None  # blocking answers never miss
        return finished

    def check_spf(self, client_ip: str, helo: str, mail_from: str) -> tuple[str, str | None]:
        """RFC 7208: the result for MAIL FROM, or for postmaster@HELO when MAIL FROM is null."""
        sender = _spf_sender(helo, mail_from)
        domain = sender.rpartition("@")[2].lower() or None
        token = _lookup_var.set(self._answering())
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
        finally:
            _lookup_var.reset(token)
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
        qname = _question_name(name)
        status, found = self._answering().records(qname, "TXT")
        if status is LookupStatus.TEMPORARY:
            raise dkim.DnsTimeoutError(f"DNS TXT {qname}: no answer")
        return found[0].data if found else None

    def check_dmarc(
        self, from_domain: str, spf_result: str, spf_domain: str | None, dkim_domains: list[str]
    ) -> DmarcResult:
        """RFC 7489 §6.6.3: the record at _dmarc.<From domain>, else at the org domain."""
        domain = _normal_domain(from_domain)
        lookup_error = None
        record = None
        at_org = False
        if "." in domain:  # a name that can have a record
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

    def _answering(self) -> Answering:
        """The answers of the check running in this context (``_Check.run``), else ours."""
        return _lookup_var.get(None) or self.dns

    def _txt(self, name: str) -> tuple[str, list[str]]:
        answer = txt_result(*self._answering().records(name, "TXT"))
        if answer.status is LookupStatus.TEMPORARY:
            return "temperror", []
        return ("ok" if answer.status is LookupStatus.OK else "none"), list(answer.records)


@dataclass
class _Check:
    """One message's SPF, DKIM and DMARC checks, run as often as answers are missing; each
    stage's result is kept once it finished without a missing answer."""

    auth: MailAuthenticator
    raw: bytes
    client_ip: str
    helo: str
    mail_from: str
    from_domain: str | None
    answers: CheckAnswers = field(init=False)
    spf: tuple[str, str | None] | None = field(default=None, init=False)
    signatures: list[DkimSignature] | None = field(default=None, init=False)
    dmarc: DmarcResult | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.answers = CheckAnswers(self.auth.dns)

    def first_questions(self) -> list[tuple[str, str]]:
        """What the checks will ask first: the SPF record of the MAIL FROM (or HELO) domain,
        the keys of the DKIM signatures, the DMARC record of the From domain."""
        sender = _spf_sender(self.helo, self.mail_from)
        questions = [(_question_name(sender.rpartition("@")[2]), "TXT")]
        questions += [(key, "TXT") for key in _dkim_key_names(self.raw)]
        domain = _normal_domain(self.from_domain or "")
        if "." in domain:  # (the organizational domain's record, if none, in a second round)
            questions.append((f"_dmarc.{domain}", "TXT"))
        return questions

    def run(self) -> AuthVerdict | None:
        """The verdict, or None when an answer is missing (``answers.missed`` says which)."""
        token = _lookup_var.set(self.answers)
        try:
            auth = self.auth
            if self.spf is None:
                self.spf = self._stage(
                    lambda: auth.check_spf(self.client_ip, self.helo, self.mail_from)
                )
            if self.signatures is None:
                self.signatures = self._stage(lambda: auth.check_dkim(self.raw))
            if self.spf is None or self.signatures is None:
                return None
            spf_result, spf_domain = self.spf
            passing = [s.domain for s in self.signatures if s.result == "pass" and s.domain]
            if self.dmarc is None:
                self.dmarc = self._stage(
                    lambda: auth.check_dmarc(
                        self.from_domain or "", spf_result, spf_domain, passing
                    )
                )
            if self.dmarc is None:
                return None
        finally:
            _lookup_var.reset(token)
        header = authentication_results_header(
            authserv_id=auth.authserv_id,
            spf=(spf_result, self.mail_from or None),
            dkim=[(s.result, s.domain, s.selector) for s in self.signatures],
            dmarc=self.dmarc,
        )
        return AuthVerdict(spf_result, spf_domain, tuple(self.signatures), self.dmarc, header)

    def _stage(self, compute: Callable[[], T]) -> T | None:
        """``compute()``, or None when it asked a question not answered yet (even one a
        library's bare ``except:`` swallowed: it is in ``missed`` all the same)."""
        misses = self.answers.misses
        try:
            result = compute()
        except NeedAnswer:
            return None
        return result if self.answers.misses == misses else None


def _spf_sender(helo: str, mail_from: str) -> str:
    """RFC 7208 §2.4: the MAIL FROM, or postmaster@HELO for the null sender."""
    return mail_from or f"postmaster@{helo}"


def _normal_domain(from_domain: str) -> str:
    """The From domain as DMARC reads it (RFC 7489 §6.6.3 asks only for names with a dot)."""
    return from_domain.strip().rstrip(".").lower()


def _dkim_key_names(raw: bytes) -> list[str]:
    """The key record names (``<s>._domainkey.<d>``) of the message's DKIM signatures."""
    names = []
    for value in _DKIM_FIELD.findall(_header_block(raw))[:MAX_SIGNATURES]:
        tags = dict(_DKIM_TAG.findall(re.sub(rb"\s+", b"", value)))
        if b"d" in tags and b"s" in tags:
            with contextlib.suppress(UnicodeDecodeError):  # verified as permerror, not asked
                names.append(_question_name(tags[b"s"] + b"._domainkey." + tags[b"d"]))
    return names


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
