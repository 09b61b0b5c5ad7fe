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


@pytest.mark.parametrize(
    ("ident", "span", "kind"),
    [
        ("65a1b2c3d4e5f60718293a4b", None, "m"),
        ("65a1b2c3d4e5f60718293a4b", 12.3456789, "m"),
        ("65a1b2c3d4e5f60718293a4b", 0.0, "t"),
        ("65a1b2c3d4e5f60718293a4b", 1e-7, "m"),
        ("65a1b2c3d4e5f60718293a4b", 123456789.5, "m"),
        ('needs "escaping" é', 3.0, "s"),
    ],
)
def test_cursor_bytes_are_the_json_encoding(ident, span, kind):
    """Cursors handed out earlier stay valid: the hand-written fast path writes the bytes
    json.dumps writes."""
    import base64
    import hashlib
    import hmac
    import json

    at = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    parts: list[object] = [kind, int(at.timestamp() * 1000), ident]
    if span is not None:
        parts.append(round(span, 3))
    payload = json.dumps(parts, separators=(",", ":")).encode()
    signature = hmac.new(KEY, payload, hashlib.sha256).digest()[:12]
    expected = base64.urlsafe_b64encode(payload + signature).decode().rstrip("=")
    assert encode_cursor(Cursor(at, ident, span), KEY, kind) == expected
    assert decode_cursor(expected, KEY, kind) == Cursor(
        at, ident, None if span is None else round(span, 3)
    )
