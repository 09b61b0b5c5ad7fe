"""Retry backoff, queue lifetime and the one-time delay notice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.errors import ValidationError
from app.domain.retry import (
    DEFAULT_QUEUE_LIFETIME,
    DEFAULT_SCHEDULE,
    is_expired,
    next_attempt_at,
    next_delay,
    retry_until,
    should_send_delay_notice,
)

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [
        (1, 120),
        (2, 300),
        (3, 600),
        (4, 900),
        (5, 1800),
        (6, 3600),
        (7, 7200),
        (8, 7200),
        (50, 7200),
    ],
)
def test_schedule_grows_then_repeats_every_two_hours(attempts, seconds):
    assert next_delay(attempts, jitter=0) == seconds


def test_first_attempt_is_immediate():
    assert next_delay(0) == 0.0


def test_default_schedule_is_the_documented_one():
    assert DEFAULT_SCHEDULE == (120, 300, 600, 900, 1800, 3600, 7200)


def test_jitter_stays_within_the_fraction_and_varies():
    rng = random.Random(7)
    delays = [next_delay(3, jitter=0.1, rng=rng) for _ in range(500)]
    assert all(540 <= d <= 660 for d in delays)
    assert max(delays) - min(delays) > 60  # actually spread, not constant
    assert abs(sum(delays) / len(delays) - 600) < 10


def test_jitter_is_reproducible_with_a_seeded_rng():
    first = [next_delay(2, rng=random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert first[0] != 300


def test_custom_schedule_is_honoured():
    assert [next_delay(n, schedule=(10, 20), jitter=0) for n in (1, 2, 3)] == [10, 20, 20]


@pytest.mark.parametrize(
    ("attempts", "kwargs"),
    [
        (-1, {}),
        (1, {"schedule": ()}),
        (1, {"schedule": (10, 0)}),
        (1, {"jitter": 1.0}),
        (1, {"jitter": -0.1}),
    ],
)
def test_invalid_arguments_are_rejected(attempts, kwargs):
    with pytest.raises(ValidationError):
        next_delay(attempts, **kwargs)


def test_next_attempt_at_adds_the_delay_to_now():
    assert next_attempt_at(T0, 4, jitter=0) == T0 + timedelta(minutes=15)
    jittered = next_attempt_at(T0, 4, rng=random.Random(1))
    assert T0 + timedelta(seconds=810) <= jittered <= T0 + timedelta(seconds=990)


@pytest.mark.parametrize(
    ("age", "lifetime", "expired"),
    [
        (timedelta(days=4, hours=23), DEFAULT_QUEUE_LIFETIME, False),
        (timedelta(days=5), DEFAULT_QUEUE_LIFETIME, True),
        (timedelta(days=6), DEFAULT_QUEUE_LIFETIME, True),
        (timedelta(hours=2), timedelta(hours=1), True),
        (timedelta(0), timedelta(hours=1), False),
    ],
)
def test_recipient_expires_after_its_queue_lifetime(age, lifetime, expired):
    assert is_expired(T0, T0 + age, lifetime) is expired


def test_retry_until_is_queue_time_plus_lifetime():
    assert retry_until(T0) == T0 + timedelta(days=5)
    assert retry_until(T0, timedelta(days=1)) == T0 + timedelta(days=1)


@pytest.mark.parametrize(
    ("age", "already_sent", "after", "expected"),
    [
        (timedelta(hours=3, minutes=59), False, timedelta(hours=4), False),
        (timedelta(hours=4), False, timedelta(hours=4), True),
        (timedelta(hours=30), False, timedelta(hours=4), True),
        (timedelta(hours=30), True, timedelta(hours=4), False),
        (timedelta(minutes=31), False, timedelta(minutes=30), True),
    ],
)
def test_delay_notice_is_sent_once_after_the_threshold(age, already_sent, after, expected):
    assert should_send_delay_notice(T0, T0 + age, already_sent, after) is expected


def test_delay_notice_default_threshold_is_four_hours():
    assert not should_send_delay_notice(T0, T0 + timedelta(hours=3), False)
    assert should_send_delay_notice(T0, T0 + timedelta(hours=4), False)
