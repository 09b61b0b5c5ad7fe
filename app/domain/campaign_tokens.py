"""Signed per-recipient tokens of campaign mail (issue 15): unsubscribe, open pixel, click.

A token names one campaign recipient (its ObjectId, which is also the id of the message sent to
it) and, for a click, the index of the link in that message; a truncated HMAC-SHA256 keyed by
``MAILHUB_SECRET_KEY`` makes it unforgeable. Each kind has its own MAC context, so an open
token is never a valid unsubscribe token. Lowercase base32 like the VERP tokens
(app/domain/verp.py): the unsubscribe token is also the local part of the mailto address
(``unsubscribe+<token>@<domain>``), and remote MTAs may case-fold local parts.

The click token carries only the link's index: the URL itself is read from what was stored
for that message, so a token can only ever redirect to a link that was in the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from bson import ObjectId

UNSUBSCRIBE_PREFIX = "unsubscribe"
_MAC_BYTES = 10
_CONTEXT = {
    "u": b"mailhub-unsubscribe-v1\x00",
    "o": b"mailhub-open-v1\x00",
    "c": b"mailhub-click-v1\x00",
}
_TOKEN = re.compile(r"[a-z2-7]{20,80}")
MAX_LINKS = 65_535  # the link index is two bytes


def _encode(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _decode(token: str) -> bytes | None:
    if not _TOKEN.fullmatch(token):
        return None
    try:
        data = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    # one spelling per token: the unused low bits of the last character must be zero
    return data if _encode(data) == token else None


def _mac(secret: bytes, kind: str, payload: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT[kind] + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _sign(secret: bytes, kind: str, payload: bytes) -> str:
    if not secret:
        raise ValueError("a secret key is required to sign campaign tokens")
    return _encode(payload + _mac(secret, kind, payload))


def _verify(secret: bytes, kind: str, token: str, size: int) -> bytes | None:
    data = _decode(token.lower()) if secret else None
    if data is None or len(data) != size + _MAC_BYTES:
        return None
    payload, mac = data[:size], data[size:]
    return payload if hmac.compare_digest(mac, _mac(secret, kind, payload)) else None


def unsubscribe_token(secret: bytes, recipient_id: ObjectId) -> str:
    return _sign(secret, "u", recipient_id.binary)


def parse_unsubscribe_token(secret: bytes, token: str) -> ObjectId | None:
    payload = _verify(secret, "u", token, 12)
    return ObjectId(payload) if payload else None


def open_token(secret: bytes, recipient_id: ObjectId) -> str:
    return _sign(secret, "o", recipient_id.binary)


def parse_open_token(secret: bytes, token: str) -> ObjectId | None:
    payload = _verify(secret, "o", token, 12)
    return ObjectId(payload) if payload else None


def click_token(secret: bytes, recipient_id: ObjectId, link_index: int) -> str:
    if not 0 <= link_index < MAX_LINKS:
        raise ValueError("link index out of range")
    return _sign(secret, "c", recipient_id.binary + link_index.to_bytes(2, "big"))


def parse_click_token(secret: bytes, token: str) -> tuple[ObjectId, int] | None:
    payload = _verify(secret, "c", token, 14)
    if payload is None:
        return None
    return ObjectId(payload[:12]), int.from_bytes(payload[12:], "big")


def unsubscribe_address(secret: bytes, recipient_id: ObjectId, domain: str) -> str:
    """The mailto address of List-Unsubscribe: mail to it unsubscribes (through our MX)."""
    return unsubscribe_mailbox(unsubscribe_token(secret, recipient_id), domain)


def unsubscribe_mailbox(token: str, domain: str) -> str:
    """``unsubscribe_address`` of the recipient whose ``unsubscribe_token`` is ``token``."""
    return f"{UNSUBSCRIBE_PREFIX}+{token}@{domain}"


def parse_unsubscribe_address(secret: bytes, address: str) -> ObjectId | None:
    """The campaign recipient an ``unsubscribe+<token>@…`` address names, if its MAC verifies."""
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    prefix, plus, token = local.partition("+")
    if prefix != UNSUBSCRIBE_PREFIX or not plus:
        return None
    return parse_unsubscribe_token(secret, token)


_MESSAGE_ID = re.compile(r"<?([0-9a-f]{24})\.[0-9a-f]{24}@[^>]*>?")


def campaign_message_id(recipient_id: ObjectId, campaign_id: ObjectId, hostname: str) -> str:
    """The Message-ID of the campaign message sent to one recipient."""
    return f"<{recipient_id}.{campaign_id}@{hostname}>"


def campaign_row_id(message_id: str) -> ObjectId | None:
    """The recipient (and delivery row) id a campaign message's Message-ID names, else None:
    complaint reports quote the Message-ID, and campaign mail keeps no message document to
    find it by."""
    found = _MESSAGE_ID.fullmatch(message_id.strip())
    return ObjectId(found.group(1)) if found else None
