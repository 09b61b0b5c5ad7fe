"""The authenticated user a request acts for (every query is scoped to its ``user_id``)."""

from __future__ import annotations

from dataclasses import dataclass

from bson import ObjectId


@dataclass(frozen=True)
class Viewer:
    """The authenticated user a request acts for; every query is scoped to ``user_id``."""

    user_id: ObjectId
    email: str
    name: str | None = None
    token_id: str | None = None
