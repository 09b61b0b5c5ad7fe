"""Housekeeping: expired uploads and content no view references any more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arq import cron


async def collect_garbage(ctx: dict[str, Any]) -> dict[str, int]:
    """Sweep unreferenced uploads older than a day and orphaned message content."""
    content = ctx["system"].content
    return {
        "expired_uploads": await content.sweep_expired_uploads(datetime.now(UTC)),
        "orphan_messages": await content.sweep_orphans(),
    }


FUNCTIONS = [collect_garbage]
CRON_JOBS = [cron(collect_garbage, minute={0, 15, 30, 45}, run_at_startup=False)]
