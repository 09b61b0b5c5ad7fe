"""Domain verification (seed §17, issue 15), pure: are a sending domain's SPF, DKIM, DMARC and
MX records what we asked the owner to publish?

Each record is ``ok``, ``missing`` (nothing of that kind published) or ``wrong`` (published,
but it would not pass: SPF not naming our sending host, a DKIM key that is not ours, a DMARC
record without a valid policy, MX hosts that are not ours). ``expected`` is always the exact
record to publish. A domain is verified when SPF, DKIM and DMARC are all ok (MX is shown but
only matters for receiving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OK, MISSING, WRONG = "ok", "missing", "wrong"
DMARC_POLICIES = ("none", "quarantine", "reject")
REQUIRED = ("SPF", "DKIM", "DMARC")


@dataclass(frozen=True)
class RecordCheck:
    kind: str  # SPF DKIM DMARC MX
    type: str  # the DNS type: TXT or MX
    name: str
    expected: str  # the exact record to publish
    status: str  # ok missing wrong
    found: tuple[str, ...] = ()  # what is published now
    detail: str = ""  # why it is wrong; the DMARC policy when ok


def tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` tag lists (DKIM, DMARC), keys lowercased, whitespace removed in values."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip().lower()] = "".join(value.split())
    return out


def check_spf(domain: str, host: str, txt: Sequence[str], expected: str) -> RecordCheck:
    spf = [r for r in txt if r.strip().lower().startswith("v=spf1")]
    if not spf:
        return RecordCheck("SPF", "TXT", domain, expected, MISSING)
    if len(spf) > 1:  # RFC 7208 §4.5: more than one record is a permerror
        return RecordCheck("SPF", "TXT", domain, expected, WRONG, tuple(spf), "several SPF records")
    host = host.lower().rstrip(".")
    terms = [t.lstrip("+").lower().rstrip(".") for t in spf[0].split()[1:]]
    ours = {f"a:{host}", f"include:{host}"}
    if ours & set(terms):
        return RecordCheck("SPF", "TXT", domain, expected, OK, tuple(spf))
    return RecordCheck("SPF", "TXT", domain, expected, WRONG, tuple(spf), f"does not name a:{host}")


def check_dkim(name: str, txt: Sequence[str], expected: str) -> RecordCheck:
    keys = [r for r in txt if "p=" in r.replace(" ", "")]
    if not keys:
        return RecordCheck("DKIM", "TXT", name, expected, MISSING, tuple(txt))
    want = tags(expected).get("p")
    if any(tags(r).get("p") == want for r in keys):
        return RecordCheck("DKIM", "TXT", name, expected, OK, tuple(keys))
    return RecordCheck(
        "DKIM", "TXT", name, expected, WRONG, tuple(keys), "the public key is not this domain's"
    )


def check_dmarc(name: str, txt: Sequence[str], expected: str) -> RecordCheck:
    dmarc = [r for r in txt if r.strip().lower().startswith("v=dmarc1")]
    if not dmarc:
        return RecordCheck("DMARC", "TXT", name, expected, MISSING)
    policy = tags(dmarc[0]).get("p", "").lower()
    if len(dmarc) > 1 or policy not in DMARC_POLICIES:
        return RecordCheck(
            "DMARC", "TXT", name, expected, WRONG, tuple(dmarc), "no valid p= policy"
        )
    return RecordCheck("DMARC", "TXT", name, expected, OK, tuple(dmarc), f"p={policy}")


def check_mx(domain: str, host: str, hosts: Sequence[str], expected: str) -> RecordCheck:
    if not hosts:
        return RecordCheck("MX", "MX", domain, expected, MISSING)
    if host.lower().rstrip(".") in {h.lower().rstrip(".") for h in hosts}:
        return RecordCheck("MX", "MX", domain, expected, OK, tuple(hosts))
    return RecordCheck("MX", "MX", domain, expected, WRONG, tuple(hosts), f"not {host}")


def verified(checks: Sequence[RecordCheck]) -> bool:
    status = {c.kind: c.status for c in checks}
    return all(status.get(kind) == OK for kind in REQUIRED)
