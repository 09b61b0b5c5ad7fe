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
GLOBAL = "global"


class SuppressionService:
    def __init__(self, mongo: Mongo) -> None:
        self.db = mongo.db

    async def suppressed(
        self, addresses: list[str], *, scope: str = GLOBAL, session: Any = None
    ) -> set[str]:
        """The normalized addresses among ``addresses`` that are suppressed now."""
        if not addresses:
            return set()
        keys = sorted({normalize_email(a) for a in addresses})
        docs = await self.db.suppressions.find(
            {"address": {"$in": keys}, "scope": {"$in": [GLOBAL, scope]}},
            {"address": 1, "expires_at": 1},
            session=session,
        ).to_list()
        now = datetime.now(UTC)
        return {d["address"] for d in docs if not d.get("expires_at") or d["expires_at"] > now}

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
