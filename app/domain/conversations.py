"""Conversation threading rules (seed §12).

Messages join a thread through Message-ID / In-Reply-To / References first (RFC 5322 §3.6.4),
and only fall back to the base subject (RFC 5256 §2.1, as JMAP does in RFC 8621 §3) when a
message carries no reference headers at all and shares a participant with the thread — so two
unrelated "Hello" mails from strangers never merge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from app.domain.addresses import normalize_email

# Reply/forward prefixes in the languages mail clients localize them into: English, German
# (AW, WG), Scandinavian (SV, VS, VB, FS), Dutch (Antw, Doorst), Italian (R, RIF), French (TR),
# Spanish/Portuguese (RV, RES, ENC), Polish (ODP, PD), Turkish (YNT, ILT), Greek, Chinese, Hebrew.
_PREFIX = re.compile(
    r"^(?:re|fwd?|aw|wg|sv|vs|vb|fs|antw|doorst|rif|r|tr|rv|res|enc|odp|pd|ynt|ilt"
    r"|απ|σχετ|προώθ|回复|回覆|答复|转发|轉寄|השב|הועבר)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
_BLOB = re.compile(r"^\[[^\[\]]*\]\s*")  # RFC 5256 subj-blob: "[list-name] "
_TRAILER = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)  # RFC 5256 subj-trailer
_FWD_WRAPPER = re.compile(r"^\[fwd:\s*(.*)\]$", re.IGNORECASE | re.DOTALL)  # RFC 5256 §2.1 (6)

_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_ID_TEXT = re.compile(r"[!-~\u0080-\U0010ffff]+")  # visible characters, no space or controls
MAX_MESSAGE_ID_LENGTH = 995  # a header line is at most 998 octets (RFC 5322 §2.1.1)


def normalize_subject(subject: str) -> str:
    """The base subject used as a thread key: prefixes, list tags and "(fwd)" removed, casefolded.

    Follows RFC 5256 §2.1: strip repeatedly until nothing changes; a ``[tag]`` is only removed
    when something remains after it.
    """
    if not subject:
        return ""
    text = " ".join(subject.split())
    while True:
        before = text
        text = _TRAILER.sub("", text).strip()
        wrapped = _FWD_WRAPPER.match(text)
        if wrapped:
            text = wrapped.group(1).strip()
        text = _PREFIX.sub("", text, count=1)
        blob = _BLOB.match(text)
        if blob and text[blob.end() :].strip():
            text = text[blob.end() :]
        text = text.strip()
        if text == before:
            break
    return text.casefold()


def normalize_message_id(value: str | None) -> str | None:
    """Canonical ``<local@domain>`` form of one Message-ID, or None when it is junk.

    Comments and folding whitespace are removed; ``<...>`` is added when missing (some senders
    omit it). An unbracketed value must look like ``local@domain`` to count.
    """
    if not value:
        return None
    text = _strip_comments(value) if "(" in value else value  # (no comment without one)
    match = _BRACKETED_ID.search(text)
    if match:
        inner = "".join(match.group(1).split())
    else:
        inner = "".join(text.split())
        local, at, domain = inner.partition("@")
        if not (at and local and domain):
            return None
    if not inner or len(inner) > MAX_MESSAGE_ID_LENGTH or not _ID_TEXT.fullmatch(inner):
        return None
    return f"<{inner}>"


def parse_message_ids(value: str | None) -> tuple[str, ...]:
    """All Message-IDs in a References or In-Reply-To value, in order, without duplicates."""
    if not value:
        return ()
    text = _strip_comments(value)
    bracketed = _BRACKETED_ID.findall(text)
    if bracketed:
        candidates = [f"<{inner}>" for inner in bracketed]
    else:
        candidates = [token for token in re.split(r"[\s,]+", text) if "@" in token]
    return _normalized_unique(candidates)


def thread_lookup_ids(in_reply_to: str | None, references: Sequence[str]) -> tuple[str, ...]:
    """Message-IDs whose threads this message belongs to, most specific first.

    In-Reply-To names the direct parent; References runs oldest → newest (RFC 5322 §3.6.4), so it
    is read backwards to try the closest ancestor first.
    """
    return _normalized_unique([in_reply_to, *reversed(list(references))])


def _normalized_unique(values: Iterable[str | None]) -> tuple[str, ...]:
    """The values as normalized Message-IDs, in order, each once; unreadable ones dropped."""
    ids: list[str] = []
    for value in values:
        normalized = normalize_message_id(value)
        if normalized and normalized not in ids:
            ids.append(normalized)
    return tuple(ids)


def may_join_by_subject(
    *,
    has_reference_headers: bool,
    subject_key: str,
    thread_participants: set[str],
    participants: set[str],
) -> bool:
    """Whether a message may join an existing thread on its base subject alone.

    Only messages without In-Reply-To/References qualify (a message that names its parent but
    whose parent we never saw must not be glued to a stranger's thread), the base subject must be
    non-empty, and at least one participant must be shared.
    """
    if has_reference_headers or not subject_key.strip():
        return False
    ours = {normalize_email(p) for p in participants if p}
    theirs = {normalize_email(p) for p in thread_participants if p}
    return bool(ours & theirs)


def _strip_comments(value: str) -> str:
    """Remove RFC 5322 §3.2.2 comments "(...)" outside angle brackets and quotes."""
    out: list[str] = []
    depth = 0
    in_angle = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and depth:
            escaped = True
        elif depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif ch == "(" and not in_angle:
            depth = 1
        else:
            if ch == "<":
                in_angle = True
            elif ch == ">":
                in_angle = False
            out.append(ch)
    return "".join(out)
