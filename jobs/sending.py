"""The batched send path's job: accepted sends become messages queued for delivery.

``materialize_sends`` is enqueued after every intake commit under one id, so one runs at a
time; it keeps no result, so the next intake can enqueue it again as soon as it ends. The
sweep runs it at worker start and every 15 seconds: what a killed worker left is resumed.
"""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import func

# a round of a few hundred messages takes seconds; a job stops starting rounds after this,
# inside the worker's job timeout (120 s), and a large backlog goes on in the next sweep
DRAIN_SECONDS = 80


async def materialize_sends(ctx: dict[str, Any]) -> int:
    """Store every accepted send as a message (many of one sender per transaction)."""
    return int(await ctx["system"].materializer.drain(max_seconds=DRAIN_SECONDS))


async def sweep_accepted_sends(ctx: dict[str, Any]) -> int:
    """Resume accepted sends whose job was lost (a killed worker, a flushed Redis)."""
    return int(await ctx["system"].materializer.drain(max_seconds=DRAIN_SECONDS))


FUNCTIONS = [
    func(materialize_sends, name="materialize_sends", keep_result=0, max_tries=20),
    sweep_accepted_sends,
]
CRON_JOBS = [
    cron(
        sweep_accepted_sends,
        second={10, 25, 40, 55},
        run_at_startup=True,
        timeout=110,
        unique=True,
    )
]
