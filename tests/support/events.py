"""Reading ``delivery_events`` in tests: buckets (app/services/events/buckets.py) opened into
the events they hold."""

from __future__ import annotations

from typing import Any

from app.services.events.buckets import expand_all


async def events_of(db: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The events matching ``query`` (equalities and ``$in`` on an event's own fields), in id
    order: a bucket matches when one of its events does, and only those events count."""
    found = await db.delivery_events.find(_bucket_query(query)).sort("_id", 1).to_list()
    return [e for e in expand_all(found) if all(_matches(e.get(k), v) for k, v in query.items())]


def _bucket_query(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` for whole documents: a bucket holds the fields its events share, the message
    ids of all of them and the rest of each event's fields in ``events``."""
    conditions = [
        {key: want} if key == "message_id" else {"$or": [{key: want}, {f"events.{key}": want}]}
        for key, want in query.items()
    ]
    return {"$and": conditions} if conditions else {}


def _matches(value: Any, want: Any) -> bool:
    if isinstance(want, dict) and set(want) == {"$in"}:
        return value in want["$in"]
    return bool(value == want)
