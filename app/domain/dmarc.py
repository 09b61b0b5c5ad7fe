"""DMARC evaluation (RFC 7489), pure: the caller does the DNS lookups and SPF/DKIM checks.

Flow for an inbound message: the caller looks up ``_dmarc.<From domain>`` and, failing that,
``_dmarc.<organizational domain>`` (§6.6.3), hands the TXT strings to ``select_dmarc_record`` and
the SPF/DKIM results to ``evaluate_dmarc``, and stamps ``authentication_results_header`` (RFC 8601)
on the stored message.

Simplifications, deliberate and documented:
- The organizational domain uses a short built-in list of multi-label public suffixes instead of
  the full Public Suffix List (§3.2 asks for the PSL). Unlisted multi-label suffixes make two
  registrations under them look related in relaxed mode; the list covers the common ones.
- pct sampling (§6.6.4) is deterministic: any pct > 0 applies the policy to every failing
  message; pct=0 applies the "not sampled" step-down (reject → quarantine → none). Random
  sampling would make the same message's fate differ between retries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain.errors import ValidationError

POLICIES = ("none", "quarantine", "reject")
RESULTS = ("pass", "fail", "none", "temperror", "permerror")
SPF_RESULTS = frozenset(
    {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror", "policy"}
)
DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})

# Second-level public suffixes under which registrations sit one label lower.
MULTI_LABEL_PUBLIC_SUFFIXES: frozenset[str] = frozenset(
    {
        "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "net.uk", "ltd.uk", "plc.uk", "sch.uk",
        "com.au", "net.au", "org.au", "edu.au", "gov.au", "asn.au", "id.au",
        "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "ad.jp", "ed.jp", "gr.jp", "lg.jp",
        "co.nz", "org.nz", "net.nz", "ac.nz", "govt.nz", "geek.nz",
        "co.za", "org.za", "web.za", "gov.za",
        "com.br", "net.br", "org.br", "gov.br",
        "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn",
        "co.in", "net.in", "org.in", "firm.in", "gen.in", "ind.in",
        "co.kr", "or.kr", "ne.kr",
        "com.mx", "org.mx", "com.ar", "com.co", "com.pe", "com.ve",
        "com.tw", "org.tw", "com.hk", "org.hk", "com.sg", "org.sg", "com.my", "com.ph",
        "co.id", "or.id", "co.th", "in.th", "com.vn", "co.il", "org.il", "ac.il",
        "com.tr", "org.tr", "com.ua", "com.pl", "com.ru", "com.sa", "com.eg", "com.ng",
        "co.ke", "com.pk", "com.bd", "com.np", "co.at", "or.at",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str | None
    adkim: str  # "r" | "s"
    aspf: str
    pct: int
    rua: tuple[str, ...]


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str  # the published policy that applies to this From domain
    disposition: str  # what the receiver does: none | quarantine | reject
    from_domain: str
    reason: str


def parse_dmarc_record(txt: str) -> DmarcRecord | None:
    """A DMARC record from one TXT record's text, or None when it is not a usable one.

    §6.4: ``v=DMARC1`` must come first. Tag names and values are read case-insensitively and
    unknown tags are ignored (§6.3). Invalid adkim/aspf/pct values fall back to their defaults.
    §6.6.3: without a valid ``p`` (or with an invalid ``sp``) the record still counts as
    ``p=none`` if it has a usable ``rua``, so reports keep flowing; otherwise it is discarded.
    """
    tags: dict[str, str] = {}
    for chunk in txt.split(";"):
        name, eq, value = chunk.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not name and not eq:
            continue  # empty chunk: trailing ";" or ";;"
        if not tags and (name != "v" or value.upper() != "DMARC1"):
            return None
        tags.setdefault(name, value)
    if not tags:
        return None
    rua = tuple(uri for uri in (u.strip() for u in tags.get("rua", "").split(",")) if _is_uri(uri))
    p = tags.get("p", "").lower()
    sp = tags["sp"].lower() if "sp" in tags else None
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        if not rua:
            return None
        p, sp = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=pct,
        rua=rua,
    )


def select_dmarc_record(txt_records: Sequence[str]) -> DmarcRecord | None:
    """The DMARC record among the TXT records at one ``_dmarc`` name.

    §6.6.3: records not starting with ``v=DMARC1`` are ignored; if more than one remains, none
    applies.
    """
    candidates = [t for t in txt_records if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", t, re.I)]
    return parse_dmarc_record(candidates[0]) if len(candidates) == 1 else None


def organizational_domain(domain: str) -> str:
    """The registered domain: last two labels, or three under a known multi-label suffix."""
    labels = _normalize(domain).split(".")
    keep = 3 if ".".join(labels[-2:]) in MULTI_LABEL_PUBLIC_SUFFIXES else 2
    return ".".join(labels[-keep:])


def aligned(identifier_domain: str, from_domain: str, mode: str) -> bool:
    """§3.1 identifier alignment: strict = same domain, relaxed = same organizational domain."""
    if mode not in ("r", "s"):
        raise ValidationError.on("mode", "alignment mode must be 'r' or 's'")
    identifier, author = _normalize(identifier_domain), _normalize(from_domain)
    if not identifier or not author:
        return False
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


def evaluate_dmarc(
    *,
    from_domain: str,
    record: DmarcRecord | None,
    record_domain_is_org: bool,
    spf_result: str,
    spf_domain: str | None,
    dkim_passing_domains: Sequence[str],
    lookup_error: str | None = None,
) -> DmarcResult:
    """The DMARC verdict for one message (§6.6.2).

    ``spf_domain`` is the domain SPF checked: the MAIL FROM domain, or the HELO name when MAIL
    FROM was empty. ``record_domain_is_org`` says the record was found at the organizational
    domain rather than the From domain, which makes ``sp`` apply to subdomains. ``lookup_error``
    ("temperror"/"permerror") reports a failed DNS lookup of the record itself.
    """
    domain = _normalize(from_domain)
    if not domain or "." not in domain:
        return DmarcResult("permerror", "none", "none", domain, "no usable RFC5322.From domain")
    if lookup_error is not None:
        if lookup_error not in ("temperror", "permerror"):
            raise ValidationError.on("lookup_error", "must be 'temperror' or 'permerror'")
        return DmarcResult(lookup_error, "none", "none", domain, "DMARC record lookup failed")
    if record is None:
        return DmarcResult("none", "none", "none", domain, "no DMARC record")

    is_subdomain = domain != organizational_domain(domain)
    policy = (record.sp or record.p) if record_domain_is_org and is_subdomain else record.p
    spf = spf_result.strip().lower()
    if spf == "pass" and spf_domain and aligned(spf_domain, domain, record.aspf):
        return DmarcResult("pass", policy, "none", domain, f"spf aligned: {_normalize(spf_domain)}")
    for dkim_domain in dkim_passing_domains:
        if aligned(dkim_domain, domain, record.adkim):
            reason = f"dkim aligned: {_normalize(dkim_domain)}"
            return DmarcResult("pass", policy, "none", domain, reason)
    # A DNS hiccup in SPF must not turn into a reject of legitimate mail.
    if spf == "temperror" and (not spf_domain or aligned(spf_domain, domain, record.aspf)):
        return DmarcResult("temperror", policy, "none", domain, "spf temporary error")
    disposition = policy if record.pct > 0 else _step_down(policy)
    return DmarcResult("fail", policy, disposition, domain, "no aligned passing identifier")


def authentication_results_header(
    *,
    authserv_id: str,
    spf: tuple[str, str | None],
    dkim: Sequence[tuple[str, str | None, str | None]],
    dmarc: DmarcResult,
) -> str:
    """An RFC 8601 Authentication-Results value (without the field name).

    ``spf`` is (result, smtp.mailfrom); each ``dkim`` entry is (result, header.d, header.s);
    no DKIM signatures gives ``dkim=none``.
    """
    if not re.fullmatch(r"[A-Za-z0-9.-]+", authserv_id):
        raise ValidationError.on("authserv_id", "must be a host name")
    spf_result, mailfrom = spf
    spf_result = spf_result.strip().lower()
    if spf_result not in SPF_RESULTS:
        raise ValidationError.on("spf", f"unknown SPF result {spf_result!r}")
    parts = [_method("spf", spf_result, [("smtp.mailfrom", mailfrom)])]
    for result, header_d, selector in dkim or [("none", None, None)]:
        result = result.strip().lower()
        if result not in DKIM_RESULTS:
            raise ValidationError.on("dkim", f"unknown DKIM result {result!r}")
        parts.append(_method("dkim", result, [("header.d", header_d), ("header.s", selector)]))
    dmarc_part = f"dmarc={dmarc.result}"
    if dmarc.result != "none":
        dispositioned = f" dis={dmarc.disposition}" if dmarc.disposition != "none" else ""
        dmarc_part += f" (p={dmarc.policy}{dispositioned})"
    if dmarc.from_domain:
        dmarc_part += f" header.from={_pvalue(dmarc.from_domain)}"
    return "; ".join([authserv_id, *parts, dmarc_part])


def _method(name: str, result: str, properties: Sequence[tuple[str, str | None]]) -> str:
    rendered = [f"{key}={_pvalue(value)}" for key, value in properties if value]
    return " ".join([f"{name}={result}", *rendered])


def _pvalue(value: str) -> str:
    """RFC 8601 §2.2 pvalue: a token or addr-spec as is, anything else as a quoted string."""
    if any(c in value for c in "\r\n"):
        raise ValidationError.on("authentication_results", "values must not contain line breaks")
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _step_down(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def _normalize(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _is_uri(value: str) -> bool:
    # §6.2: DMARC URIs, optionally with a "!size" limit, e.g. mailto:dmarc@example.com!10m.
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,;]+", value) is not None
