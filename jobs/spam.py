"""Periodic retraining of the global spam model from the corpus plus users' feedback, adapted
(semi-supervised EM) to the deployment's own recent inbound mail."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from arq import cron


async def retrain_spam_model(ctx: dict[str, Any]) -> dict[str, Any]:
    """Retrain (corpus + labels + EM over the last weeks of inbound mail); promote the result
    only if it is not worse on the held-out period."""
    system = ctx["system"]
    outcome = await system.spam_feedback.retrain(system.settings.data_dir / "models")
    return asdict(outcome)


FUNCTIONS = [retrain_spam_model]
# Weekly, Sunday 03:17: retraining is CPU-heavy and feedback accumulates slowly.
CRON_JOBS = [
    cron(retrain_spam_model, weekday=6, hour=3, minute=17, run_at_startup=False, timeout=3600)
]
