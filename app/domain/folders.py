"""Folders, labels and the counter arithmetic of mailbox views (seed §11).

A view (mailbox item) counts toward its folder and each of its labels; unread when not read.
Every change to a view is a (before, after) pair, and the counters move by the difference —
so totals stay exact through moves, label edits, read changes and deletions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from app.domain.errors import ValidationError


class Folder(StrEnum):
    INBOX = "INBOX"
    SENT = "SENT"
    DRAFTS = "DRAFTS"
    TRASH = "TRASH"
    SPAM = "SPAM"
    ARCHIVE = "ARCHIVE"


# Folders a user may move items into with updateMessages. DRAFTS holds only drafts, and
# SENT only what the user sent, so neither is a free move target.
MOVABLE = {Folder.INBOX, Folder.TRASH, Folder.SPAM, Folder.ARCHIVE}
ROLE_HOME = {"sent": Folder.SENT, "received": Folder.INBOX, "draft": Folder.DRAFTS}

_LABEL = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
MAX_LABELS = 50


def parse_folder(value: str, field: str = "folder") -> Folder:
    try:
        return Folder(value.upper())
    except ValueError:
        names = ", ".join(f.value.lower() for f in Folder)
        raise ValidationError.on(field, f"unknown folder {value!r}; one of {names}") from None


def check_label(label: str, field: str = "labels") -> str:
    label = label.strip()
    if not _LABEL.match(label) or label.upper() in Folder.__members__:
        raise ValidationError.on(
            field, f"invalid label {label!r}: 1–64 printable characters, not a folder name"
        )
    return label


CounterKey = tuple[str, str]  # ("folder", "INBOX") or ("label", "Work")


def view_counters(view: Mapping[str, Any] | None) -> Counter[tuple[CounterKey, str]]:
    """What one view contributes: {((kind, name), "total"|"unread"): 1}."""
    out: Counter[tuple[CounterKey, str]] = Counter()
    if view is None:
        return out
    keys: list[CounterKey] = [("folder", view["folder"])]
    keys += [("label", label) for label in view.get("labels", ())]
    for key in keys:
        out[(key, "total")] += 1
        if not view.get("read", False):
            out[(key, "unread")] += 1
    return out


def counter_deltas(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[CounterKey, dict[str, int]]:
    """Per counter, how total/unread move when a view goes from ``before`` to ``after``."""
    diff = view_counters(after)
    diff.subtract(view_counters(before))
    deltas: dict[CounterKey, dict[str, int]] = {}
    for (key, field), n in diff.items():
        if n:
            deltas.setdefault(key, {"total": 0, "unread": 0})[field] += n
    return deltas


def merge_deltas(
    into: dict[CounterKey, dict[str, int]], more: dict[CounterKey, dict[str, int]]
) -> None:
    for key, change in more.items():
        slot = into.setdefault(key, {"total": 0, "unread": 0})
        slot["total"] += change["total"]
        slot["unread"] += change["unread"]
