"""Campaign rules (issue 15), pure: recipient lists, CSV uploads, pacing and the warm-up ramp.

Nothing here touches a database or a clock of its own: the services pass ``now`` in.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.addresses import normalize_email, parse_address
from app.domain.errors import ValidationError

MAX_RECIPIENTS = 1_000_000  # per campaign
MAX_RECIPIENTS_PER_CALL = 1_000  # addCampaignRecipients
MAX_BATCH = 500  # recipients claimed, rendered and queued together
MIN_INTERVAL_SECONDS = 0.2  # between batches when pacing allows more than MAX_BATCH a batch
MAX_VARIABLE_COLUMNS = 100
MAX_CSV_ROWS = MAX_RECIPIENTS

# draft → (start) scheduled | sending → paused ⇄ sending → completed; any but completed → canceled
STATUSES = ("draft", "scheduled", "sending", "paused", "completed", "canceled")
TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"draft": "sending"},
    "pause": {"sending": "paused", "scheduled": "paused"},
    "resume": {"paused": "sending"},
    "cancel": {
        "draft": "canceled",
        "scheduled": "canceled",
        "sending": "canceled",
        "paused": "canceled",
    },
}


def next_status(action: str, status: str) -> str:
    """The status after ``action`` (start, pause, resume, cancel), or a ValidationError."""
    target = TRANSITIONS[action].get(status)
    if target is None:
        raise ValidationError.on("id", f"cannot {action} a campaign that is {status}")
    return target


@dataclass(frozen=True)
class RecipientRow:
    email: str  # as given (display spelling)
    key: str  # normalized: the uniqueness key of the list
    variables: dict[str, Any]


@dataclass
class RecipientCheck:
    """What an added list contained: the rows to store, and the rejected ones reported."""

    accepted: list[RecipientRow] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # already in this call (or the list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (as given, why)


def check_recipients(
    rows: Iterable[tuple[str, Any]], already: set[str] | None = None
) -> RecipientCheck:
    """Validate (email, variables) rows: bad addresses and repeats are reported, not kept."""
    out = RecipientCheck()
    seen: set[str] = set(already or ())
    for raw_email, variables in rows:
        try:
            address = parse_address(str(raw_email), "email")
            key = normalize_email(address.email)
        except ValidationError as e:
            out.invalid.append((str(raw_email), e.message))
            continue
        if variables is not None and not isinstance(variables, dict):
            out.invalid.append((str(raw_email), "variables must be a JSON object"))
            continue
        if key in seen:
            out.duplicates.append(address.email)
            continue
        seen.add(key)
        out.accepted.append(RecipientRow(address.email, key, dict(variables or {})))
    return out


def parse_recipient_csv(text: str) -> list[tuple[str, dict[str, str]]]:
    """Rows of a CSV upload: a header row with an ``email`` column (any letter case); every
    other column is a variable of that name (empty cells are left out). A row whose cell
    count does not match the header is kept with what it has (its email is then checked)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationError.on("file", "the CSV file is empty") from None
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]
    if "email" not in lowered:
        raise ValidationError.on("file", "the first row must name the columns, one of them email")
    if len(names) > MAX_VARIABLE_COLUMNS + 1:
        raise ValidationError.on("file", f"at most {MAX_VARIABLE_COLUMNS} variable columns")
    email_at = lowered.index("email")
    rows: list[tuple[str, dict[str, str]]] = []
    for line in reader:
        if not any(cell.strip() for cell in line):
            continue
        if len(rows) >= MAX_CSV_ROWS:
            raise ValidationError.on("file", f"at most {MAX_CSV_ROWS} rows")
        email = line[email_at].strip() if email_at < len(line) else ""
        variables = {
            names[i]: cell
            for i, cell in enumerate(line)
            if i != email_at and i < len(names) and names[i] and cell != ""
        }
        rows.append((email, variables))
    return rows


@dataclass(frozen=True)
class BatchPlan:
    """How many recipients one batch takes and how long after it the next one starts."""

    size: int
    interval_seconds: float

    def per_minute(self) -> float:
        return self.size * 60.0 / self.interval_seconds if self.interval_seconds else math.inf


def batch_plan(rate_per_minute: int | None, max_batch: int = MAX_BATCH) -> BatchPlan:
    """Pacing: ``rate_per_minute`` recipients a minute as evenly as batches allow.

    A batch every second of ``rate/60`` recipients (at least one, at most ``max_batch``), and
    for slow rates one recipient every ``60/rate`` seconds; without a rate, full batches back to
    back (the per-domain throttles of delivery still apply)."""
    if rate_per_minute is None:
        return BatchPlan(max_batch, 0.0)
    if rate_per_minute < 1:
        raise ValidationError.on("ratePerMinute", "ratePerMinute must be at least 1")
    size = max(1, min(max_batch, math.ceil(rate_per_minute / 60)))
    return BatchPlan(size, size * 60.0 / rate_per_minute)


def aware(at: datetime) -> datetime:
    """A datetime read back from MongoDB (naive, UTC) as an aware one."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def check_rate(rate_per_minute: int | None) -> None:
    if rate_per_minute is not None and not 1 <= rate_per_minute <= 1_000_000:
        raise ValidationError.on("ratePerMinute", "ratePerMinute must be 1 to 1,000,000")


# --- warm-up ---------------------------------------------------------------------------------

DEFAULT_RAMP = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def next_day_start(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def warmup_limit(ramp: Sequence[int], sending_days: int) -> int | None:
    """The domain's campaign volume allowed today: the ramp's entry for its ``sending_days``-th
    day of sending (0 = the first); None (no limit) after the ramp or with an empty ramp."""
    if not ramp or sending_days >= len(ramp):
        return None
    return int(ramp[sending_days])


def warmup_allowance(ramp: Sequence[int], sending_days: int, sent_today: int) -> int | None:
    """How many more campaign recipients the domain may send today (None: no limit)."""
    limit = warmup_limit(ramp, sending_days)
    return None if limit is None else max(0, limit - sent_today)
