"""IMAP flags ↔ the state of a mailbox view (pure).

``\\Seen`` is ``read``, ``\\Flagged`` is ``starred``, ``\\Answered`` is ``answered``, ``\\Draft``
is a view whose role is ``draft`` (read-only: a message does not become a draft by a flag), and
every other flag — ``\\Deleted`` and keywords such as ``$Forwarded`` — is kept in the view's
``keywords`` list, so every session (and the GraphQL API) sees the same set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.domain.errors import ValidationError

SEEN, FLAGGED, ANSWERED, DRAFT, DELETED = (
    "\\Seen",
    "\\Flagged",
    "\\Answered",
    "\\Draft",
    "\\Deleted",
)
SYSTEM_FLAGS = (SEEN, FLAGGED, ANSWERED, DRAFT, DELETED)
PERMANENT_FLAGS = (SEEN, FLAGGED, ANSWERED, DELETED, "\\*")
MAX_KEYWORDS = 50
_KEYWORD = re.compile(r"^[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]{1,64}$")  # atom chars (RFC 3501 §9)
_CANONICAL = {f.lower(): f for f in SYSTEM_FLAGS}


def flags_of(item: Mapping[str, Any]) -> list[str]:
    flags = []
    if item.get("read"):
        flags.append(SEEN)
    if item.get("starred"):
        flags.append(FLAGGED)
    if item.get("answered"):
        flags.append(ANSWERED)
    if item.get("role") == "draft":
        flags.append(DRAFT)
    flags.extend(item.get("keywords") or ())
    return flags


def canonical_flag(flag: str) -> str:
    """System flags are case-insensitive (stored in their RFC spelling); keywords are atoms."""
    if flag.startswith("\\"):
        known = _CANONICAL.get(flag.lower())
        if known is None:
            raise ValidationError.on("flags", f"unknown system flag {flag}")
        return known
    if not _KEYWORD.match(flag):
        raise ValidationError.on("flags", f"invalid keyword {flag!r}")
    return flag


def flag_change(current: Iterable[str], flags: Iterable[str], mode: str) -> dict[str, Any]:
    """The state change that makes a view's flags ``current`` → (mode: set/add/remove ``flags``).

    Returns keyword arguments for ``StateChange`` (read/starred/answered/add_keywords/
    remove_keywords); ``\\Draft`` is ignored (not a permanent flag here).
    """
    wanted = {canonical_flag(f) for f in flags}
    have = set(current)
    if mode == "set":
        after = set(wanted)
    elif mode == "add":
        after = have | wanted
    elif mode == "remove":
        after = have - wanted
    else:  # pragma: no cover - the parser only produces the three modes
        raise ValueError(mode)
    after.discard(DRAFT)
    if DRAFT in have:
        after.add(DRAFT)
    out: dict[str, Any] = {}
    for flag, field in ((SEEN, "read"), (FLAGGED, "starred"), (ANSWERED, "answered")):
        if (flag in after) != (flag in have):
            out[field] = flag in after
    keywords_before = have - set(SYSTEM_FLAGS[:4])
    keywords_after = after - set(SYSTEM_FLAGS[:4])
    add = sorted(keywords_after - keywords_before)
    remove = sorted(keywords_before - keywords_after)
    if len(keywords_after) > MAX_KEYWORDS:
        raise ValidationError.on("flags", f"at most {MAX_KEYWORDS} keywords per message")
    if add:
        out["add_keywords"] = tuple(add)
    if remove:
        out["remove_keywords"] = tuple(remove)
    return out
