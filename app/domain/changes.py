"""Committed mailbox changes: typed events addressed to their owner (STYLE.md §5).

A service records a ``Change`` inside the transaction that made it; listeners (realtime,
search indexing, content GC) receive it only after that transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId


@dataclass
class Change:
    """A committed change to one view, addressed to its owner (STYLE.md §5)."""

    user_id: ObjectId
    item_id: ObjectId
    kind: str  # created | updated | deleted
    thread_id: ObjectId | None = None
    folders: tuple[str, ...] = ()
    item: dict[str, Any] | None = field(default=None, repr=False)
    state: int | None = None  # the owner's sync state after this change (set when recorded)
