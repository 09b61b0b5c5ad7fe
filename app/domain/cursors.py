"""Opaque keyset cursors: (sort key, id) signed so a client cannot forge or splice them.

A cursor carries no viewer identity: every query that uses one is still filtered by the
viewer, so a cursor taken from another user only ever pages through the holder's own data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite

from app.domain.errors import ValidationError


@dataclass(frozen=True)
class Cursor:
    at: datetime
    id: str
    span: float | None = None  # seconds the previous page covered: sizes the next page's window


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, hashlib.sha256)[:12]


def encode_cursor(cursor: Cursor, key: bytes, kind: str = "m") -> str:
    # One cursor per edge, 50 a page: the JSON is written by hand when the parts need no
    # escaping (kinds and ObjectId hex never do); the bytes are what json.dumps writes.
    millis = int(cursor.at.timestamp() * 1000)
    if kind.isalnum() and cursor.id.isalnum() and (cursor.span is None or isfinite(cursor.span)):
        span = "" if cursor.span is None else f",{round(cursor.span, 3)!r}"
        payload = f'["{kind}",{millis},"{cursor.id}"{span}]'.encode()
    else:
        parts: list[object] = [kind, millis, cursor.id]
        if cursor.span is not None:
            parts.append(round(cursor.span, 3))
        payload = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload + _sign(key, payload)).decode().rstrip("=")


def decode_cursor(text: str, key: bytes, kind: str = "m", field: str = "after") -> Cursor:
    invalid = ValidationError.on(field, "invalid cursor: pass an endCursor from a previous page")
    if not text or len(text) > 200:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise invalid from None
    payload, signature = raw[:-12], raw[-12:]
    if len(raw) <= 12 or not hmac.compare_digest(signature, _sign(key, payload)):
        raise invalid
    try:
        got_kind, millis, ident, *rest = json.loads(payload)
        at = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
        span = float(rest[0]) if rest else None
    except (ValueError, TypeError, OverflowError, OSError):
        raise invalid from None
    if got_kind != kind or not isinstance(ident, str) or (span is not None and not span >= 0):
        raise invalid
    return Cursor(at, ident, span)
