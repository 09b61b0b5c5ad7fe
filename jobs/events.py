"""Event log and webhook jobs: thin, one service call each (services/events/)."""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import func


async def deliver_webhook(ctx: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    """POST an endpoint's next events (it holds the endpoint's lease while it does)."""
    result: dict[str, Any] = await ctx["system"].webhooks.deliver(endpoint_id)
    return result


async def dispatch_webhooks(ctx: dict[str, Any]) -> int:
    """Enqueue a delivery for every endpoint that is due and has events; the sweep too."""
    return int(await ctx["system"].webhooks.dispatch())


async def expire_events(ctx: dict[str, Any]) -> int:
    """Drop events older than MAILHUB_EVENT_RETENTION_DAYS."""
    return int(await ctx["system"].event_log.expire())


FUNCTIONS = [
    # keep_result=0: the next job for the endpoint may take the same id as soon as this ends
    func(deliver_webhook, name="deliver_webhook", keep_result=0, max_tries=5, timeout=90),
    func(dispatch_webhooks, name="dispatch_webhooks", keep_result=0),
    func(expire_events, name="expire_events", keep_result=0),
]
CRON_JOBS = [
    cron(dispatch_webhooks, second=set(range(60)), run_at_startup=True, timeout=30, unique=True),
    cron(expire_events, hour={3}, minute={17}, second={0}, timeout=600),
]
