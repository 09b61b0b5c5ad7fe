"""Classify SMTP failure replies into bounce classes (DESIGN.md §5 "Bounces and complaints").

A 5xx reply is *not* evidence that an address is bad: remote servers answer 5xx for blocklisted
sending IPs, spam filters, DMARC failures and oversized messages too. Suppressing a recipient for
those would punish the recipient for our reputation problem. So a reply is matched against an
ordered rule table keyed on the RFC 3463 enhanced status code and on the reply text, and only the
classes that say something about the *address* (unknown mailbox, unknown domain) suppress it.

Permanence comes from the basic reply code (RFC 5321 §4.2.1: 4yz transient, 5yz permanent) unless
a rule overrides it for a documented reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import ValidationError


class BounceClass(StrEnum):
    INVALID_MAILBOX = "invalid_mailbox"
    MAILBOX_FULL = "mailbox_full"
    INVALID_DOMAIN = "invalid_domain"
    REPUTATION_BLOCK = "reputation_block"
    POLICY_BLOCK = "policy_block"
    CONTENT_REJECTED = "content_rejected"
    SPAM_BLOCK = "spam_block"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    RELAY_DENIED = "relay_denied"
    AUTH_FAILURE = "auth_failure"  # SPF / DKIM / DMARC
    TRANSIENT = "transient"
    NETWORK = "network"
    UNKNOWN = "unknown"


# Only these say the address itself is undeliverable; everything else is about us or the message.
DEFAULT_SUPPRESS_CLASSES: frozenset[BounceClass] = frozenset(
    {BounceClass.INVALID_MAILBOX, BounceClass.INVALID_DOMAIN}
)

# Code 0 means "no SMTP reply at all" (connection refused, timeout, TLS failure): the caller
# builds an outcome for it so that transport failures go through the same classification.
NO_REPLY = 0


@dataclass(frozen=True)
class SmtpOutcome:
    code: int
    enhanced: str | None
    text: str


@dataclass(frozen=True)
class Classification:
    bounce_class: BounceClass
    permanent: bool  # True → bounced; False → deferred / retry
    suppress: bool  # add the address to the suppression list
    rule: str  # id of the rule that matched, for auditing


# RFC 3463 §2: class "." subject "." detail, subject and detail 1–3 digits. The look-arounds keep
# IP addresses and version numbers ("10.5.1.100", "4.16.55.1") from matching.
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_LINE_PREFIX = re.compile(r"^\s*(\d{3})(?:[ -]|$)")
_LEADING_ENHANCED = re.compile(r"^\s*#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)\s*")


def parse_reply(code: int, message: str | bytes) -> SmtpOutcome:
    """An SMTP reply as an outcome, with its RFC 3463 enhanced status code pulled out of the text.

    Accepts the text as aiosmtplib gives it (lines joined by newlines, codes stripped) or raw
    multi-line replies ("550-5.1.1 ...\\n550 5.1.1 ..."). The enhanced code is the one that starts
    a line (RFC 2034 §4 puts it first); failing that, one of the reply's class anywhere in the
    text (qmail writes "(#5.1.1)" at the end). The returned text has the codes removed and its
    whitespace collapsed.
    """
    if not (code == NO_REPLY or 200 <= code <= 599):
        raise ValidationError.on("code", f"not an SMTP reply code: {code}")
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    enhanced: str | None = None
    parts: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line
        prefix = _LINE_PREFIX.match(line)
        if prefix and (code == NO_REPLY or int(prefix.group(1)) == code):
            line = line[prefix.end() :]
        leading = _LEADING_ENHANCED.match(line)
        if leading:
            enhanced = enhanced or _normalize_status(leading.group(1))
            line = line[leading.end() :]
        parts.append(line.strip())
    if enhanced is None:
        enhanced = _enhanced_anywhere(text, code)
    cleaned = " ".join(p for p in parts if p)
    if code != NO_REPLY:
        # Multi-line replies unfolded onto one line (DSN Diagnostic-Code) repeat "550-5.1.1".
        cleaned = re.sub(rf"(?<!\S){code}[ -][245]\.\d{{1,3}}\.\d{{1,3}}(?:\s+|$)", "", cleaned)
    return SmtpOutcome(code=code, enhanced=enhanced, text=" ".join(cleaned.split()))


def parse_diagnostic(diagnostic: str) -> SmtpOutcome | None:
    """The SMTP reply inside a DSN Diagnostic-Code value ("550 5.1.1 <bob@x>: User unknown").

    None when the text carries no three-digit reply code (e.g. "X-Postfix; Host not found").
    """
    match = re.match(r"\s*(?:[A-Za-z0-9-]+\s*;\s*)?([245]\d\d)(?=[ -]|$)", diagnostic)
    if not match:
        return None
    return parse_reply(int(match.group(1)), diagnostic[match.start(1) :])


def outcome_from_dsn(status: str, diagnostic: str | None) -> SmtpOutcome:
    """An outcome for a recipient reported in a DSN: its diagnostic reply, else its Status field.

    Used when a bounce arrives asynchronously (relay, or a remote that accepted then bounced):
    the status decides the class digit when the diagnostic has no SMTP code (RFC 3464 §2.3.4).
    """
    found = _ENHANCED.search(status)
    status_code = _normalize_status(found.group(0)) if found else None
    parsed = parse_diagnostic(diagnostic) if diagnostic else None
    if parsed is not None:
        if parsed.enhanced is None and status_code is not None:
            return SmtpOutcome(parsed.code, status_code, parsed.text)
        return parsed
    if status_code is None or status_code[0] not in "45":
        raise ValidationError.on("status", f"not a failure status: {status!r}")
    code = 550 if status_code.startswith("5") else 450
    return SmtpOutcome(code=code, enhanced=status_code, text=" ".join((diagnostic or "").split()))


@dataclass(frozen=True)
class BounceRule:
    """One row of the rule table. Every condition given must hold; alternatives are new rows."""

    rule_id: str
    bounce_class: BounceClass
    statuses: tuple[str, ...] = ()  # enhanced codes, "*" wildcards per part: "5.1.1", "*.7.*"
    text: re.Pattern[str] | None = None
    reply_class: int | None = None  # 4 or 5: only replies of that class
    reply_codes: tuple[int, ...] = ()  # basic reply codes, e.g. (421,)
    permanent: bool | None = None  # None: the basic reply code decides (RFC 5321 §4.2.1)

    def matches(self, outcome: SmtpOutcome) -> bool:
        """Whether this rule applies to the outcome."""
        if self.reply_class is not None and outcome.code // 100 != self.reply_class:
            return False
        if self.reply_codes and outcome.code not in self.reply_codes:
            return False
        if self.statuses and not any(_status_matches(p, outcome.enhanced) for p in self.statuses):
            return False
        return self.text is None or self.text.search(outcome.text) is not None


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


_R = BounceRule
_C = BounceClass

_AUTH_TEXT = _words(r"\bdmarc\b", r"\bspf\b", r"\bdkim\b", r"unauthenticated", r"sender policy")
_SIZE_TEXT = _words(
    r"message (size )?(is )?too (large|big)",
    r"size (limit|exceeds)",
    r"exceed\w* (\S+ )?(maximum |fixed )?(message )?size",
    r"message size",
    r"message length exceeds",
)
# Named blocklists and reputation verdicts: the problem is our sending IP/domain, never the
# recipient. Checked before the spam words so "blocked using zen.spamhaus.org" is not "spam".
_REPUTATION_TEXT = _words(
    r"spamhaus",
    r"spamcop",
    r"barracuda",
    r"\bsorbs\b",
    r"\brbl\b",
    r"dnsbl",
    r"black ?list",
    r"block ?list",
    r"blocklisted",
    r"reputation",
    r"permanently deferred",
    r"\blisted (at|in|on|by) [\w-]+(\.[\w-]+)+",  # "listed at dnsbl.example.net"
    r"not accepted from (this|your) ip",
    r"banned sending ip",
)
_RATE_TEMPORARY_TEXT = _words(
    r"rate.?limit",
    r"too many",
    r"try again later",
    r"throttl",
    r"unusual rate",
    r"receiving mail (at a rate|too quickly)",
    r"temporarily deferred",
    r"server busy",
    r"exceeded .*(rate|limit)",
)
# 5xx replies that mean "not now" rather than "never": RFC 5321 §4.5.3.1.10 asks clients to treat
# 552 "too many recipients" as temporary, and providers document sending quotas as resetting.
_RATE_PERMANENT_CODE_TEXT = _words(
    r"rate.?limit",
    r"too many (recipients|messages|connections|concurrent)",
    r"sending (quota|limit)",
    r"receiving mail (at a rate|too quickly)",
)
_RELAY_TEXT = _words(
    r"relay(ing)? (access )?(denied|not permitted|prohibited)",
    r"(unable|not permitted|not allowed) to relay",
    r"we do not relay",
)
_SPAM_TEXT = _words(r"\bspam\b", r"unsolicited", r"junk mail", r"bulk mail", r"\buce\b", r"phish")
_CONTENT_TEXT = _words(
    r"message content",
    r"content (rejected|not accepted|filter|policy)",
    r"its content",
    r"virus",
    r"malware",
    r"infected",
    r"security issue",
    r"attachment",
)
_MAILBOX_FULL_TEXT = _words(
    r"mailbox (is )?full",
    r"over ?quota",
    r"quota (exceeded|full)",
    r"exceeded (the |its |their )?(storage|quota)",
    r"mailbox size limit",
    r"insufficient (disk|storage) space",
    r"out of storage",
    r"full mailbox",
)
_INVALID_DOMAIN_TEXT = _words(
    r"host (or domain name )?not found",
    r"domain (name )?(not found|does not exist|doesn't exist)",
    r"domain \S+ does not exist",
    r"nxdomain",
    r"no (mx|mail exchanger)",
    r"null mx",
    r"unrouteable (mail )?domain",
    r"no such domain",
    r"unknown domain",
    r"name service error",
    r"^host unknown",  # Sendmail's wording for a destination domain that does not resolve
)
_INVALID_MAILBOX_TEXT = _words(
    r"user (is )?unknown",
    r"unknown (user|recipient|mailbox)",
    r"no such (user|recipient|mailbox|address|account)",
    r"(user|recipient|mailbox|address|account) (\S+ )?not found",
    r"does not exist",
    r"doesn't exist",
    r"doesn't have a \S+ account",
    r"no mailbox here",
    r"mailbox unavailable",
    r"mailbox (is )?(disabled|inactive|not available)",
    r"account (is |has been )?(disabled|deactivated|suspended|inactive)",
    r"invalid (recipient|mailbox|address)",
    r"not a valid (recipient|mailbox|user)",
    r"recipient address rejected: (user unknown|undeliverable)",
    r"unrouteable address",
    r"address (unknown|rejected: user)",
)
_NETWORK_TEXT = _words(
    r"connection (refused|timed out|reset|lost|closed|dropped)",
    r"timed? ?out",
    r"no route to host",
    r"network (is )?unreachable",
    r"tls (handshake|negotiation)",
    r"lost connection",
)
_POLICY_TEXT = _words(
    r"policy",
    r"access denied",
    r"not authori[sz]ed",
    r"administrative prohibition",
    r"prohibited",
    r"not allowed",
    r"refused",
)

# Order matters: the first matching rule wins. Specific evidence (authentication, size, named
# blocklists) comes before broad words ("blocked", "does not exist") that those replies contain.
DEFAULT_RULES: tuple[BounceRule, ...] = (
    # RFC 7372 §3: 5.7.20–5.7.24 DKIM/SPF failures, 5.7.26 multiple authentication checks failed.
    _R(
        "auth.status", _C.AUTH_FAILURE, ("*.7.20", "*.7.21", "*.7.22", "*.7.23", "*.7.24", "*.7.26")
    ),
    _R("auth.text", _C.AUTH_FAILURE, text=_AUTH_TEXT),
    # RFC 3463: x.3.4 message too big for system, x.2.3 message length exceeds limit.
    _R("size.status", _C.MESSAGE_TOO_LARGE, ("*.3.4", "*.2.3")),
    _R("size.text", _C.MESSAGE_TOO_LARGE, text=_SIZE_TEXT),
    _R("reputation.text", _C.REPUTATION_BLOCK, text=_REPUTATION_TEXT),
    _R("rate.temporary", _C.RATE_LIMITED, reply_class=4, text=_RATE_TEMPORARY_TEXT),
    _R("rate.5xx", _C.RATE_LIMITED, reply_class=5, text=_RATE_PERMANENT_CODE_TEXT, permanent=False),
    # Exchange Online 5.7.64 "TenantAttribution; Relay Access Denied".
    _R("relay.status", _C.RELAY_DENIED, ("*.7.64",)),
    _R("relay.text", _C.RELAY_DENIED, text=_RELAY_TEXT),
    _R("spam.text", _C.SPAM_BLOCK, text=_SPAM_TEXT),
    # RFC 3463 subject 6: message content or media status.
    _R("content.status", _C.CONTENT_REJECTED, ("*.6.*",)),
    _R("content.text", _C.CONTENT_REJECTED, text=_CONTENT_TEXT),
    # Exchange Online answers 5.4.1 "Recipient address rejected: Access denied" for recipients
    # that do not exist in a tenant using directory-based edge blocking.
    _R(
        "mailbox.exchange_dbeb",
        _C.INVALID_MAILBOX,
        ("5.4.1",),
        _words(r"recipient address rejected"),
    ),
    # x.7.x replies with blocking words: a verdict on the sender, never on the recipient.
    _R("reputation.blocked", _C.REPUTATION_BLOCK, ("*.7.*",), _words(r"\bblock", r"\bbanned")),
    # RFC 3463 x.7.25 reverse DNS validation failed, x.7.27 sender address has null MX,
    # x.1.7 / x.1.8 bad sender mailbox / system: all about our side.
    _R("policy.sender", _C.POLICY_BLOCK, ("*.7.25", "*.7.27", "*.1.7", "*.1.8")),
    _R("rate.status", _C.RATE_LIMITED, ("4.7.*",), reply_class=4),
    _R("policy.status", _C.POLICY_BLOCK, ("*.7.*",)),
    # RFC 3463 x.2.2: mailbox full. Often temporary in practice even as 5.2.2, so never suppressed.
    _R("mailbox_full.status", _C.MAILBOX_FULL, ("*.2.2",)),
    _R("mailbox_full.text", _C.MAILBOX_FULL, text=_MAILBOX_FULL_TEXT),
    # RFC 3463 x.1.2 bad destination system address, x.4.4 unable to route.
    _R("domain.status", _C.INVALID_DOMAIN, ("*.1.2", "*.4.4")),
    _R("domain.text", _C.INVALID_DOMAIN, text=_INVALID_DOMAIN_TEXT),
    # RFC 3463 x.1.1 bad destination mailbox, x.1.3 bad address syntax, x.1.6 mailbox moved;
    # Exchange's x.1.10 "RecipientNotFound"; x.2.1 mailbox disabled.
    _R("mailbox.status", _C.INVALID_MAILBOX, ("*.1.1", "*.1.3", "*.1.6", "*.1.10", "5.2.1")),
    _R("mailbox.text", _C.INVALID_MAILBOX, text=_INVALID_MAILBOX_TEXT),
    # RFC 3463 subject 4: network and routing (loops, no answer, expired in transit).
    _R("network.status", _C.NETWORK, ("*.4.*",)),
    _R("network.text", _C.NETWORK, text=_NETWORK_TEXT),
    _R("network.no_reply", _C.NETWORK, reply_codes=(NO_REPLY,)),
    # RFC 5321 §3.8: 421 is the server closing the channel, mostly load shedding or throttling.
    _R("rate.421", _C.RATE_LIMITED, reply_codes=(421,)),
    _R("policy.text", _C.POLICY_BLOCK, reply_class=5, text=_POLICY_TEXT),
    _R("transient.4xx", _C.TRANSIENT, reply_class=4),
    _R("unknown.5xx", _C.UNKNOWN, reply_class=5),
)


def classify(
    outcome: SmtpOutcome,
    *,
    rules: Sequence[BounceRule] = DEFAULT_RULES,
    suppress_classes: Iterable[BounceClass] = DEFAULT_SUPPRESS_CLASSES,
) -> Classification:
    """Classify a failed delivery attempt; the first matching rule wins.

    Only a permanent failure in ``suppress_classes`` suppresses: a 4xx "user unknown" (Postfix
    soft_bounce, unverified address) may still succeed later.
    """
    if 200 <= outcome.code < 400:
        raise ValidationError.on("code", f"reply {outcome.code} is not a failure")
    suppressing = frozenset(suppress_classes)
    for rule in rules:
        if rule.matches(outcome):
            permanent = rule.permanent if rule.permanent is not None else outcome.code >= 500
            return Classification(
                bounce_class=rule.bounce_class,
                permanent=permanent,
                suppress=permanent and rule.bounce_class in suppressing,
                rule=rule.rule_id,
            )
    return Classification(BounceClass.UNKNOWN, outcome.code >= 500, False, "fallback")


def _normalize_status(status: str) -> str:
    return ".".join(str(int(part)) for part in status.strip().split("."))


def _status_matches(pattern: str, enhanced: str | None) -> bool:
    if enhanced is None:
        return False
    want, have = pattern.split("."), enhanced.split(".")
    if len(want) != 3 or len(have) != 3:
        return False
    return all(w in ("*", h) for w, h in zip(want, have, strict=True))


def _enhanced_anywhere(text: str, code: int) -> str | None:
    for match in _ENHANCED.finditer(text):
        if code == NO_REPLY or int(match.group(1)) == code // 100:
            return _normalize_status(match.group(0))
    return None
