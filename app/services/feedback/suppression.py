"""The suppression list (seed §9, §19): addresses we must not mail.

Checked against MongoDB (never a cache) when a send is accepted and again right before each
delivery attempt. Only hard bounces, complaints, unsubscribes and manual entries add to it —
never a blanket 5xx (see app/domain/bounces.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo
from app.domain.addresses import normalize_email, parse_address
from app.domain.errors import NotFound

REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual")
GLOBAL = "global"  # the system's entries: they stop everyone's mail to the address


def user_scope(user_id: ObjectId) -> str:
    """The scope of one user's own entries: they stop only that user's mail to the address."""
    return f"user:{user_id}"


class SuppressionService:
    def __init__(self, mongo: Mongo) -> None:
        self.db = mongo.db

    async def suppressed(
        self, addresses: list[str], *, scope: str = GLOBAL, session: Any = None
    ) -> set[str]:
        """The normalized addresses among ``addresses`` suppressed now for mail in ``scope``
        (a user's scope: their own entries and the global ones)."""
        found = await self.suppressed_in_scopes(addresses, [scope], session=session)
        return {address for address, _ in found}

    async def suppressed_in_scopes(
        self, addresses: list[str], scopes: list[str], *, session: Any = None
    ) -> set[tuple[str, str]]:
        """``(address, scope)`` for each entry in force among ``addresses`` in ``scopes`` (the
        global scope always included): one query for the senders of a whole delivery batch."""
        if not addresses:
            return set()
        keys = sorted({normalize_email(a) for a in addresses})
        docs = await self.db.suppressions.find(
            {"address": {"$in": keys}, "scope": {"$in": sorted({GLOBAL, *scopes})}},
            {"address": 1, "scope": 1, "expires_at": 1},
            session=session,
        ).to_list()
        now = datetime.now(UTC)
        return {
            (d["address"], d["scope"])
            for d in docs
            if not d.get("expires_at") or d["expires_at"] > now
        }

    async def add(
        self,
        address: str,
        *,
        reason: str,
        scope: str = GLOBAL,
        bounce_class: str | None = None,
        rule: str | None = None,
        source_message_id: ObjectId | None = None,
        event_id: ObjectId | None = None,
        expires_at: datetime | None = None,
        added_by: ObjectId | None = None,
        session: Any = None,
    ) -> dict[str, Any]:
        """Add (or refresh) a suppression; idempotent per (address, scope)."""
        if reason not in REASONS:
            raise ValueError(f"unknown suppression reason {reason!r}")
        key = normalize_email(parse_address(address, "address").email)
        now = datetime.now(UTC)
        doc = await self.db.suppressions.find_one_and_update(
            {"address": key, "scope": scope},
            {
                "$set": {
                    "reason": reason,
                    "bounce_class": bounce_class,
                    "rule": rule,
                    "source_message_id": source_message_id,
                    "event_id": event_id,
                    "expires_at": expires_at,
                    "added_by": added_by,
                    "updated_at": now,
                },
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            return_document=True,
            session=session,
        )
        return doc  # type: ignore[return-value]

    async def remove(self, address: str, *, scope: str = GLOBAL) -> None:
        result = await self.db.suppressions.delete_one(
            {"address": normalize_email(address), "scope": scope}
        )
        if result.deleted_count != 1:
            raise NotFound(f"{address} is not suppressed")

    async def list(
        self, *, scope: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if scope:
            query["scope"] = {"$in": [GLOBAL, scope]}
        if after:
            query["address"] = {"$gt": after}
        return await self.db.suppressions.find(query).sort("address", 1).limit(limit).to_list()  # type: ignore[no-any-return]
