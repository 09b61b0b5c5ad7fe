"""Email addresses: strict parsing of user input, tolerant parsing of inbound headers.

User input (``parse_address``) is held to RFC 5322 §3.4 addr-spec syntax, extended with UTF-8
local parts (RFC 6531 §3.3) and internationalized domains. Inbound headers
(``parse_header_addresses``) are whatever the internet sends, so that parser never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import getaddresses

from app.domain.encoded_words import decode_header_words, encode_header_words
from app.domain.errors import FieldProblem, ValidationError

# RFC 5322 §3.2.3 atext; RFC 6531 §3.3 adds any non-ASCII UTF-8 character.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# RFC 5322 §3.2.4 quoted-string: qtext or quoted-pair, whitespace allowed inside the quotes.
_QUOTED_STRING = re.compile(
    r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e\u0080-\U0010ffff])*"'
)
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A display name that needs no quoting: atoms separated by single spaces (RFC 5322 §3.2.5 phrase).
_PLAIN_PHRASE = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
)
_BARE_ADDR_SPEC = re.compile(r"[^\s<>\"(),;:@\[\]]+@[^\s<>\"(),;:@\[\]]+\.[^\s<>\"(),;:@\[\]]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # TAB is fine; LF is judged separately
# Bidirectional controls (Unicode TR 9: marks, embeddings, overrides, isolates) and invisible
# characters make an address display as another one ("Trojan Source", CVE-2021-42574). ZWNJ
# and ZWJ stay: Persian names and emoji sequences need them.
_DECEPTIVE = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LIST_OR_BRACKET = re.compile(r"[,;<>\s]")  # what _reject_lists refuses outside quotes

_Fail = Callable[[str], ValidationError]

MAX_ADDRESS_OCTETS = 254  # RFC 5321 §4.5.3.1.3 path limit (256) minus the angle brackets
MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 §2.3.4, without the trailing root dot


@dataclass(frozen=True)
class Address:
    """One mailbox: ``email`` is local part as given + lowercased (unicode) domain."""

    email: str
    name: str | None = None


def parse_address(text: str, field: str = "address") -> Address:
    """Parse one user-supplied address (``Name <a@b.c>``, ``"Last, First" <a@b.c>`` or ``a@b.c``).

    Raises ``ValidationError`` naming ``field`` for anything that is not exactly one valid address.
    """

    def fail(message: str) -> ValidationError:
        return ValidationError.on(field, f"{field}: {message}")

    if text is None or not text.strip():
        raise fail("address is empty")
    # Header injection: a CR or LF would let the value start a new header line (RFC 5322 §2.2).
    if "\r" in text or "\n" in text:
        raise fail("address must not contain line breaks")
    if "\x00" in text:
        raise fail("address must not contain NUL characters")
    if _CONTROL.search(text):
        raise fail("address must not contain control characters")
    if _DECEPTIVE.search(text):
        raise fail("address must not contain bidirectional control or invisible characters")

    name, addr_spec = _split_name_and_spec(text.strip(), fail)
    email = _validate_addr_spec(addr_spec, fail)
    return Address(email=email, name=name or None)


def parse_address_list(values: Iterable[str], field: str) -> list[Address]:
    """Parse many user-supplied addresses; errors name ``field[i]``; duplicates dropped, order kept.

    Every bad entry is reported at once, so a form can mark all of them.
    """
    result: list[Address] = []
    seen: set[str] = set()
    problems: list[FieldProblem] = []
    for i, value in enumerate(values):
        try:
            address = parse_address(value, f"{field}[{i}]")
        except ValidationError as e:
            problems.extend(e.fields)
            continue
        key = normalize_email(address.email)
        if key not in seen:
            seen.add(key)
            result.append(address)
    if problems:
        raise ValidationError(message="; ".join(p.message for p in problems), fields=problems)
    return result


def normalize_email(email: str) -> str:
    """The lookup key for an address: stripped and casefolded as a whole.

    RFC 5321 lets local parts be case-sensitive, but no real mailbox provider treats them so,
    and users expect ``Bob@x`` and ``bob@x`` to be one person.
    """
    return email.strip().casefold()


def domain_of(email: str) -> str:
    """The lowercased domain of an address ("" when there is no ``@``)."""
    _, at, domain = email.strip().rpartition("@")
    return domain.lower() if at else ""


def format_address(a: Address) -> str:
    """RFC 5322 header form: ``Name <local@domain>`` with the name quoted or RFC 2047-encoded.

    An ASCII local part gets its domain in IDNA (``xn--``) form so the header stays 7-bit; a UTF-8
    local part needs SMTPUTF8 anyway (RFC 6532), so the domain stays unicode too.
    """
    local, _, domain = a.email.rpartition("@")
    if local.isascii() and not domain.isascii():
        domain = _to_ascii_domain(domain) or domain
    addr_spec = f"{local}@{domain}"
    if not a.name:
        return addr_spec
    return f"{_format_display_name(a.name)} <{addr_spec}>"


def parse_header_addresses(value: str | None) -> list[Address]:
    """Tolerant parsing of an inbound address header (From, To, Cc, ...). Never raises.

    Entries that are not recognisably an address (no ``@``, empty local part) are skipped;
    domains are lowercased but otherwise kept as sent.
    """
    if not value:
        return []
    try:
        pairs = getaddresses([value.replace("\r", " ").replace("\n", " ")])
    except Exception:  # hostile headers must never break ingestion
        return []
    result: list[Address] = []
    for raw_name, raw_addr in pairs:
        addr = raw_addr.strip().strip("<>").strip()
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in addr):
            continue
        domain = domain.rstrip(".").lower()
        if domain.startswith("xn--") or ".xn--" in domain:
            domain = _to_unicode_domain(domain) or domain
        # Decoding can reveal CR/LF/NUL (=?utf-8?q?a=0D=0Ab?=); a name kept for replies must not.
        name = _ANY_CONTROL.sub(" ", decode_header_words(raw_name)).strip() or None
        result.append(Address(email=f"{local}@{domain}", name=name))
    if not result:
        # Unparseable syntax (an unclosed quote, say) still usually contains the address itself.
        for found in _BARE_ADDR_SPEC.findall(value):
            local, _, domain = found.rpartition("@")
            result.append(Address(email=f"{local}@{domain.rstrip('.').lower()}"))
    return result


# --- internals -------------------------------------------------------------------------------


def _split_name_and_spec(text: str, fail: _Fail) -> tuple[str | None, str]:
    """Split ``Name <spec>`` into its parts, honouring quotes so commas inside them are names."""
    if not text.endswith(">"):
        _reject_lists(text, fail)
        return None, text
    open_at = _find_unquoted(text, "<")
    if open_at is None:
        raise fail("unbalanced quotes" if text.count('"') % 2 else "unbalanced angle brackets")
    spec = text[open_at + 1 : -1].strip()
    if "<" in spec or ">" in spec:
        raise fail("more than one address given; enter one address per entry")
    phrase = text[:open_at].strip()
    if not phrase:
        return None, spec
    if phrase.startswith('"') and phrase.endswith('"') and len(phrase) >= 2:
        if not _QUOTED_STRING.fullmatch(phrase):
            raise fail("display name has unbalanced quotes")
        return _unquote(phrase[1:-1]).strip() or None, spec
    if '"' in phrase:
        raise fail("display name has unbalanced quotes")
    if "<" in phrase or ">" in phrase:
        raise fail("more than one address given; enter one address per entry")
    if "," in phrase or ";" in phrase:
        raise fail(
            "more than one address given (unquoted comma in the name); "
            'quote the name, e.g. "Last, First" <a@b.c>'
        )
    return " ".join(phrase.split()), spec


def _outside_quotes(text: str) -> Iterator[tuple[int, str]]:
    """Each character (with its index) outside a quoted string, skipping the quotes
    themselves and backslash escapes: the one place the quoting rule is read."""
    in_quotes = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes:
            yield i, ch


def _reject_lists(text: str, fail: _Fail) -> None:
    chars: Iterable[str]
    if '"' in text or "\\" in text:
        chars = (ch for _, ch in _outside_quotes(text))
    else:  # nothing quoted or escaped (nearly every address): the first such character at once
        found = _LIST_OR_BRACKET.search(text)
        chars = (found.group(),) if found else ()
    for ch in chars:
        if ch in ",;" or ch.isspace():
            raise fail("more than one address given; enter one address per entry")
        if ch in "<>":
            raise fail("unbalanced angle brackets")


def _find_unquoted(text: str, target: str) -> int | None:
    """Index of the last ``target`` outside a quoted string."""
    found: int | None = None
    for i, ch in _outside_quotes(text):
        if ch == target:
            found = i
    return found


def _unquote(inner: str) -> str:
    return re.sub(r"\\(.)", r"\1", inner)


def _validate_addr_spec(spec: str, fail: _Fail) -> str:
    if not spec:
        raise fail("address is empty")
    local, at, domain = spec.rpartition("@")
    if not at:
        raise fail(f"'{spec}' is missing an @")
    if not local:
        raise fail("local part (before @) is empty")
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        raise fail(f"invalid local part '{local}'")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise fail(f"local part is longer than {MAX_LOCAL_OCTETS} octets")
    domain = _validate_domain(domain, fail)
    email = f"{local}@{domain}"
    if len(email.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise fail(f"address is longer than {MAX_ADDRESS_OCTETS} octets")
    return email


def _validate_domain(domain: str, fail: _Fail) -> str:
    if not domain:
        raise fail("domain (after @) is empty")
    if domain.startswith("["):
        # RFC 5321 §4.1.3 address literals bypass DNS; we never deliver to them.
        raise fail("address literals like [192.0.2.1] are not accepted")
    domain = domain.lower()
    ascii_domain = _to_ascii_domain(domain)
    if ascii_domain is None:
        raise fail(f"invalid domain '{domain}'")
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise fail(f"domain is longer than {MAX_DOMAIN_OCTETS} characters")
    if ascii_domain.endswith("."):
        raise fail(f"domain '{domain}' must not end with a dot")
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise fail(f"domain '{domain}' needs at least two labels (like example.com)")
    for label in labels:
        if len(label) > 63:
            raise fail(f"domain label '{label[:20]}…' is longer than 63 characters")
        if not _LDH_LABEL.fullmatch(label):
            raise fail(f"invalid domain label '{label}' in '{domain}'")
    # RFC 3696 §2: a top-level domain is never all-numeric; this also rejects bare IPv4.
    if labels[-1].isdigit():
        raise fail(f"domain '{domain}' has a numeric top-level label")
    if ascii_domain != domain or "xn--" in domain:
        return _to_unicode_domain(ascii_domain) or domain
    return domain


def _to_ascii_domain(domain: str) -> str | None:
    """IDNA (RFC 3490) form of a domain, or None if it cannot be encoded."""
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def _to_unicode_domain(domain: str) -> str | None:
    try:
        return domain.encode("ascii").decode("idna").lower()
    except UnicodeError:
        return None


def _format_display_name(name: str) -> str:
    if not name.isascii():
        return encode_header_words(name)
    if _PLAIN_PHRASE.fullmatch(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
