"""Suppressions as a user sees and manages them through the API (seed §9).

Two kinds of entry (``SuppressionService``, checked at send time and before each attempt):
- the system's (scope ``global``: hard bounces, complaints): they stop everyone's mail to the
  address. The users whose mail caused one see it (``visible_to``), read-only: one user must
  never let mail flow again to an address that bounced or complained for everyone;
- a user's own (scope ``user:<id>``, ``addSuppression``): they stop only that user's mail. Each
  user has their own row, so two users suppressing one address never share (or remove) an entry.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.addresses import normalize_email, parse_address
from app.domain.errors import NotFound, ValidationError
from app.domain.viewer import Viewer
from app.services.feedback.suppression import GLOBAL, SuppressionService, user_scope

MAX_PAGE = 200


class SuppressionViews:
    def __init__(self, mongo: Mongo, suppression: SuppressionService) -> None:
        self.db = mongo.db
        self.suppression = suppression

    async def list(
        self, viewer: Viewer, *, first: int = 50, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The viewer's suppressions, by address (keyset: ``after`` is the last address seen)."""
        query: dict[str, Any] = {
            "$or": [
                {"scope": user_scope(viewer.user_id)},
                {"scope": GLOBAL, "visible_to": viewer.user_id},
            ]
        }
        if after:
            query["address"] = {"$gt": after}
        return (
            await self.db.suppressions.find(query)
            .sort("address", 1)
            .limit(  # type: ignore[no-any-return]
                max(1, min(first, MAX_PAGE))
            )
            .to_list()
        )

    async def add(self, viewer: Viewer, address: str, note: str | None = None) -> dict[str, Any]:
        """The viewer's own suppression: the viewer's mail to this address stops until removed."""
        email = parse_address(address, "address").email
        doc = await self.suppression.add(
            email,
            reason="manual",
            rule="manual",
            scope=user_scope(viewer.user_id),
            added_by=viewer.user_id,
        )
        if note:
            await self.db.suppressions.update_one(
                {"_id": doc["_id"]}, {"$set": {"note": note[:500]}}
            )
        return await self.db.suppressions.find_one({"_id": doc["_id"]}) or doc

    async def remove(self, viewer: Viewer, address: str) -> str:
        """Remove the viewer's own entry; the system's entries are refused, nobody else's seen."""
        key = normalize_email(address)
        result = await self.db.suppressions.delete_one(
            {"address": key, "scope": user_scope(viewer.user_id)}
        )
        if result.deleted_count == 1:
            return key
        shared = await self.db.suppressions.find_one(
            {"address": key, "scope": GLOBAL, "visible_to": viewer.user_id}, {"reason": 1}
        )
        if shared is not None:
            raise ValidationError.on(
                "address",
                f"{key} is suppressed for everyone ({shared.get('reason')}); "
                "only an operator can lift it",
            )
        raise NotFound(f"{address} is not on your suppression list")

    async def event(self, event_id: ObjectId | None) -> dict[str, Any] | None:
        if event_id is None:
            return None
        return await self.db.delivery_events.find_one({"_id": event_id})  # type: ignore[no-any-return]
