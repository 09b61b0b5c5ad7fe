from datetime import UTC, datetime

import pytest

from app.domain.cursors import Cursor, decode_cursor, encode_cursor
from app.domain.errors import ValidationError

KEY = b"k" * 32


def test_cursor_round_trips_to_the_millisecond():
    c = Cursor(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "65a1b2c3d4e5f60718293a4b")
    assert decode_cursor(encode_cursor(c, KEY), KEY) == c


@pytest.mark.parametrize("bad", ["", "x", "!!!!", "A" * 300, "eyJ0IjoxfQ", "bnVsbA"])
def test_malformed_cursor_is_a_validation_error(bad):
    with pytest.raises(ValidationError) as e:
        decode_cursor(bad, KEY)
    assert e.value.fields[0].field == "after"


def test_tampered_or_foreign_key_cursor_is_rejected():
    c = encode_cursor(Cursor(datetime.now(UTC), "abc"), KEY)
    with pytest.raises(ValidationError):
        decode_cursor(c, b"other-key")
    flipped = c[:-2] + ("A" if c[-2] != "A" else "B") + c[-1]
    with pytest.raises(ValidationError):
        decode_cursor(flipped, KEY)


def test_cursor_of_another_kind_is_rejected():
    c = encode_cursor(Cursor(datetime.now(UTC), "abc"), KEY, kind="t")
    with pytest.raises(ValidationError):
        decode_cursor(c, KEY, kind="m")
