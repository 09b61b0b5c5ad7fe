"""Suppressions as a user sees and manages them through the API (seed §9).

The suppression list itself is global (``SuppressionService``: one entry per address, checked at
send time). A user sees the entries that concern them — caused by a bounce or complaint about
mail they sent, or added by them — through ``visible_to``, and may add or remove only those.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.addresses import normalize_email, parse_address
from app.domain.errors import NotFound
from app.domain.viewer import Viewer
from app.services.feedback.suppression import GLOBAL, SuppressionService

MAX_PAGE = 200


class SuppressionViews:
    def __init__(self, mongo: Mongo, suppression: SuppressionService) -> None:
        self.db = mongo.db
        self.suppression = suppression

    async def share_with(self, address: str, user_id: ObjectId | None, session: Any = None) -> None:
        """Make an entry visible to the user whose mail (or request) caused it."""
        if user_id is not None:
            await self.db.suppressions.update_one(
                {"address": normalize_email(address), "scope": GLOBAL},
                {"$addToSet": {"visible_to": user_id}},
                session=session,
            )

    async def list(
        self, viewer: Viewer, *, first: int = 50, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The viewer's suppressions, by address (keyset: ``after`` is the last address seen)."""
        query: dict[str, Any] = {"visible_to": viewer.user_id}
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
        """A manual suppression: nobody here mails this address until it is removed."""
        email = parse_address(address, "address").email
        doc = await self.suppression.add(
            email, reason="manual", rule="manual", added_by=viewer.user_id
        )
        await self.share_with(email, viewer.user_id)
        if note:
            await self.db.suppressions.update_one(
                {"_id": doc["_id"]}, {"$set": {"note": note[:500]}}
            )
        return await self.db.suppressions.find_one({"_id": doc["_id"]}) or doc

    async def remove(self, viewer: Viewer, address: str) -> str:
        key = normalize_email(address)
        result = await self.db.suppressions.delete_one(
            {"address": key, "scope": GLOBAL, "visible_to": viewer.user_id}
        )
        if result.deleted_count != 1:
            raise NotFound(f"{address} is not on your suppression list")
        return key

    async def event(self, event_id: ObjectId | None) -> dict[str, Any] | None:
        if event_id is None:
            return None
        return await self.db.delivery_events.find_one({"_id": event_id})  # type: ignore[no-any-return]
