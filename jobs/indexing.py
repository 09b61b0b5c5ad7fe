"""Search indexing jobs: follow committed changes into Typesense, and repair what was missed.

A job that finds Typesense down asks arq to retry with a growing delay; after the last try the
sweep (``repair_search_index``) still finds every item whose ``indexed_version`` is behind.
"""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import Retry, func

from app.domain.errors import ServiceUnavailable

MAX_TRIES = 8  # with the delays below: about 8 minutes of outage before the sweep takes over


def _retry(ctx: dict[str, Any]) -> Retry:
    tries = int(ctx.get("job_try") or 1)
    return Retry(defer=min(2**tries, 240))


async def index_items(
    ctx: dict[str, Any], item_ids: list[str], enqueued_at: float | None = None
) -> int:
    """Upsert the current state of these mailbox items into the search index."""
    try:
        return await ctx["system"].search.indexer.index_items(item_ids, enqueued_at)  # type: ignore[no-any-return]
    except ServiceUnavailable:
        raise _retry(ctx) from None


async def remove_from_index(
    ctx: dict[str, Any], item_ids: list[str], enqueued_at: float | None = None
) -> int:
    """Delete the documents of mailbox items that were deleted."""
    try:
        return await ctx["system"].search.indexer.remove(item_ids, enqueued_at)  # type: ignore[no-any-return]
    except ServiceUnavailable:
        raise _retry(ctx) from None


async def repair_search_index(ctx: dict[str, Any]) -> dict[str, int]:
    """Sweep: index items the index is behind on (lost jobs, Typesense outages)."""
    search = ctx["system"].search
    if search is None:
        return {}
    try:
        report = await search.indexer.repair()
    except ServiceUnavailable:
        return {"unavailable": 1}  # the next run tries again; the position is not advanced
    return {"scanned": report.scanned, "behind": report.behind, "indexed": report.indexed}


async def check_search_health(ctx: dict[str, Any]) -> dict[str, int]:
    """Per-user documents vs items as metrics; users out of sync are repaired."""
    search = ctx["system"].search
    if search is None:
        return {}
    try:
        bad = await search.check_health()
    except ServiceUnavailable:
        return {"unavailable": 1}
    return {"out_of_sync": len(bad)}


FUNCTIONS = [
    func(index_items, max_tries=MAX_TRIES),
    func(remove_from_index, max_tries=MAX_TRIES),
    repair_search_index,
    check_search_health,
]
CRON_JOBS = [
    cron(repair_search_index, second={5}, run_at_startup=False),  # every minute
    cron(check_search_health, minute=set(range(3, 60, 10)), second={30}, run_at_startup=False),
]
