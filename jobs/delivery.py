"""Delivery jobs: the fast path of the outbox (MongoDB says what is due; these say "now").

``deliver_domain`` keeps no result (keep_result=0) so a recipient that is due again can be
re-enqueued under the same deterministic id as soon as the previous job is gone; the sweep runs
at startup and every 15 seconds (its full search for lost jobs less often after a long one,
with a large backlog, and the domains nobody holds meanwhile: sweep.py), so a killed worker or
a flushed Redis delays mail, never loses it.
"""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import func

from app.domain.ids import parse_object_id


async def deliver_domain(ctx: dict[str, Any], message_id: str, domain: str) -> dict[str, Any]:
    """Mail for ``domain`` is due: wake its lane, which leases and sends all that is due there."""
    result: dict[str, Any] = await ctx["system"].delivery.deliver_domain(message_id, domain)
    return result


async def release_scheduled(ctx: dict[str, Any], message_id: str) -> bool:
    """A scheduled send's time has come: queue its recipients, deliver the local ones."""
    oid = parse_object_id(message_id)
    return oid is not None and bool(await ctx["system"].scheduling.release(oid))


async def sweep_deliveries(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue due recipients whose job or lease was lost."""
    result: dict[str, int] = await ctx["system"].delivery.sweep(paced=True)
    return result


FUNCTIONS = [
    # max_tries: a job cancelled by a shutdown is retried; its recipients are also in MongoDB.
    func(deliver_domain, name="deliver_domain", keep_result=0, max_tries=20),
    func(release_scheduled, name="release_scheduled", keep_result=0, max_tries=20),
    sweep_deliveries,
]
CRON_JOBS = [cron(sweep_deliveries, second={0, 15, 30, 45}, run_at_startup=True, timeout=60)]
