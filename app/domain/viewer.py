"""The authenticated user a request acts for (every query is scoped to its ``user_id``)."""

from __future__ import annotations

from dataclasses import dataclass

from bson import ObjectId


@dataclass(frozen=True)
class Viewer:
    """The authenticated user a request acts for; every query is scoped to ``user_id``.

    ``scopes`` is None for a person's login token (everything the user may do) and the key's
    scopes for an API key, which acts as the user that created it within those only."""

    user_id: ObjectId
    email: str
    name: str | None = None
    token_id: str | None = None
    scopes: frozenset[str] | None = None
    api_key_id: ObjectId | None = None

    def allows(self, scope: str | None) -> bool:
        """May this viewer use an operation that needs ``scope`` (None: login tokens only)?"""
        if self.scopes is None:
            return True
        return scope is not None and scope in self.scopes
