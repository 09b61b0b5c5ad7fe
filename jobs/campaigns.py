"""Campaign jobs: thin, one service call each (services/campaigns/)."""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import func

from app.domain.ids import parse_object_id


async def campaign_batch(ctx: dict[str, Any], campaign_id: str) -> dict[str, Any]:
    """Send a campaign's next batch (under its batch lease), and those after it while they
    are due at once (an unpaced campaign, for up to ``CHAIN_SECONDS``); schedule the next."""
    oid = parse_object_id(campaign_id)
    if oid is None:
        return {"ran": False}
    result: dict[str, Any] = await ctx["system"].campaign_sender.run_batches(oid)
    return result


async def sweep_campaigns(ctx: dict[str, Any]) -> int:
    """Wake sending campaigns whose next batch is overdue (a killed worker, a Redis flush)."""
    return int(await ctx["system"].campaign_sender.sweep())


async def verify_domains(ctx: dict[str, Any]) -> int:
    """The daily re-check of every hosted domain's SPF, DKIM, DMARC and MX records."""
    return int(await ctx["system"].domain_verifier.verify_all())


FUNCTIONS = [
    # keep_result=0: the job id of the next batch of the same number may be reused at once
    func(campaign_batch, name="campaign_batch", keep_result=0, max_tries=5, timeout=120),
    func(sweep_campaigns, name="sweep_campaigns", keep_result=0),
    func(verify_domains, name="verify_domains", keep_result=0, timeout=600),
]
CRON_JOBS = [
    cron(sweep_campaigns, second={5, 20, 35, 50}, run_at_startup=True, timeout=60, unique=True),
    cron(verify_domains, hour={4}, minute={11}, second={0}, timeout=600, unique=True),
]
