"""Retry schedule and queue lifetime for deferred recipients (DESIGN.md §5 "Deliver", seed §8).

Temporary failures are retried with a growing delay, then every two hours, until the queue
lifetime runs out (RFC 5321 §4.5.4.1: give up after 4–5 days; Postfix's default is 5 days). The
sender gets one "delayed" DSN after a few hours (RFC 3464 action "delayed") and a failure DSN
when the recipient expires.

All datetimes are expected to be timezone-aware UTC; mixing naive and aware raises TypeError.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from app.domain.errors import ValidationError

# Seconds before the 2nd, 3rd, ... attempt: 2m, 5m, 10m, 15m, 30m, 1h, 2h, then every 2h.
DEFAULT_SCHEDULE: tuple[int, ...] = (120, 300, 600, 900, 1800, 3600, 7200)
DEFAULT_QUEUE_LIFETIME = timedelta(days=5)
DEFAULT_DELAY_NOTICE_AFTER = timedelta(hours=4)

_shared_rng = random.Random()


def next_delay(
    attempts: int,
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt number ``attempts + 1``.

    ``attempts`` counts attempts already made; 0 means none yet, so the first attempt is
    immediate. Past the end of the schedule its last step repeats. The delay is spread by
    ±``jitter`` (a fraction) so that recipients deferred together by one outage (a whole domain
    answering 421) do not all retry in the same second.
    """
    if attempts < 0:
        raise ValidationError.on("attempts", "must not be negative")
    if not schedule or any(step <= 0 for step in schedule):
        raise ValidationError.on("schedule", "must be a non-empty sequence of positive delays")
    if not 0 <= jitter < 1:
        raise ValidationError.on("jitter", "must be a fraction in [0, 1)")
    if attempts == 0:
        return 0.0
    base = float(schedule[min(attempts, len(schedule)) - 1])
    if jitter == 0:
        return base
    return base * (1 + (rng or _shared_rng).uniform(-jitter, jitter))


def next_attempt_at(
    now: datetime,
    attempts: int,
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> datetime:
    """When attempt number ``attempts + 1`` is due (see ``next_delay``)."""
    delay = next_delay(attempts, schedule=schedule, jitter=jitter, rng=rng)
    return now + timedelta(seconds=delay)


def is_expired(
    first_attempt_or_queued_at: datetime,
    now: datetime,
    lifetime: timedelta = DEFAULT_QUEUE_LIFETIME,
) -> bool:
    """Whether a recipient has been in the queue for its whole lifetime and must stop retrying."""
    return now - first_attempt_or_queued_at >= lifetime


def retry_until(queued_at: datetime, lifetime: timedelta = DEFAULT_QUEUE_LIFETIME) -> datetime:
    """The moment retrying stops: the Will-Retry-Until of a delay DSN (RFC 3464 §2.3.7)."""
    return queued_at + lifetime


def should_send_delay_notice(
    queued_at: datetime,
    now: datetime,
    already_sent: bool,
    after: timedelta = DEFAULT_DELAY_NOTICE_AFTER,
) -> bool:
    """Whether the sender is owed its one "still trying" DSN for this recipient now."""
    return not already_sent and now - queued_at >= after
