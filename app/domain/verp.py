"""VERP return paths: a bounce names the exact message and recipient it is about.

Every outgoing envelope gets MAIL FROM ``bounces+<token>@<domain>``, where the token carries the
message id, the recipient id and a truncated HMAC-SHA256 of both. A bounce or an ARF report sent
back to that address identifies the recipient even when the DSN itself is unparsable, and the
HMAC stops anyone from forging bounces that would suppress arbitrary recipients.

The token is lowercase base32 without padding: remote MTAs may case-fold local parts (RFC 5321
§2.4 allows it in practice), and base32 survives that where base64 would not. Two 12-byte
ObjectIds plus a 10-byte (80-bit) MAC give a 55-character token and a 63-octet local part, inside
the 64-octet limit of RFC 5321 §4.5.3.1.1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

from app.domain.errors import ValidationError

VERP_PREFIX = "bounces"
_MAC_BYTES = 10
_ID_BYTES = 12
_TOKEN_CHARS = 55  # ceil((2 * 12 + 10) * 8 / 5)
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
_TOKEN = re.compile(rf"[a-z2-7]{{{_TOKEN_CHARS}}}")
# Domain separation: the same secret may sign other things (unsubscribe links, tracking URLs).
_MAC_CONTEXT = b"mailhub-verp-v1\x00"


def make_verp_address(*, domain: str, message_id: str, recipient_id: str, secret: bytes) -> str:
    """The envelope sender for one (message, recipient): ``bounces+<token>@<domain>``."""
    for field, value in (("message_id", message_id), ("recipient_id", recipient_id)):
        if not _OBJECT_ID.fullmatch(value):
            raise ValidationError.on(field, "must be a 24-hex-character ObjectId")
    domain = domain.strip().rstrip(".").lower()
    if not domain or "@" in domain or any(c.isspace() for c in domain):
        raise ValidationError.on("domain", "must be a domain name")
    if not secret:
        raise ValidationError.on("secret", "must not be empty")
    ids = bytes.fromhex(message_id) + bytes.fromhex(recipient_id)
    return f"{VERP_PREFIX}+{_encode(ids + _mac(secret, ids))}@{domain}"


def parse_verp_address(
    address: str,
    *,
    secret: bytes,
    previous_secrets: Sequence[bytes] = (),
    domain: str | None = None,
) -> tuple[str, str] | None:
    """``(message_id, recipient_id)`` from a VERP address whose MAC verifies, else None.

    Accepts angle brackets and any letter case. ``previous_secrets`` lets bounces for mail sent
    before a key rotation still verify; ``domain``, when given, must match the address's domain.
    """
    addr = address.strip().removeprefix("<").removesuffix(">").strip()
    local, at, addr_domain = addr.rpartition("@")
    if not at:
        return None
    if domain is not None and addr_domain.rstrip(".").lower() != domain.rstrip(".").lower():
        return None
    prefix, plus, token = local.lower().partition("+")
    if prefix != VERP_PREFIX or not plus or not _TOKEN.fullmatch(token):
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    if _encode(raw) != token:
        return None  # non-canonical spelling (stray bits in the last character)
    ids, mac = raw[: 2 * _ID_BYTES], raw[2 * _ID_BYTES :]
    if not any(hmac.compare_digest(mac, _mac(key, ids)) for key in (secret, *previous_secrets)):
        return None
    return ids[:_ID_BYTES].hex(), ids[_ID_BYTES:].hex()


def _mac(secret: bytes, ids: bytes) -> bytes:
    return hmac.new(secret, _MAC_CONTEXT + ids, hashlib.sha256).digest()[:_MAC_BYTES]


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()
