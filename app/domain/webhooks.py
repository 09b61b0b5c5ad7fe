"""Outbound webhooks: the URL policy, the signature, the retry schedule, the event shape.

Signature (CONTRACT.md): ``Mailhub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>`` — the timestamp is signed with the body so a captured request cannot be
replayed later with another time. Receivers should compare in constant time and refuse
timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app.domain.errors import ValidationError

EVENT_TYPES = (
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "suppressed",
    "unsubscribed",
    "opened",
    "clicked",
    "expired",
    "canceled",
)
SIGNATURE_HEADER = "Mailhub-Signature"
MAX_URL = 2000


def check_event_types(types: list[str], field: str = "events") -> list[str]:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValidationError.on(
            field, f"unknown event types {', '.join(unknown)}; known: {' '.join(EVENT_TYPES)}"
        )
    return [t for t in EVENT_TYPES if t in types]


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL: http(s), a host, no credentials, no fragment."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL:
        raise ValidationError.on("url", f"give a URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError.on("url", "not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError.on("url", "the URL must start with http:// or https://")
    if not parts.hostname:
        raise ValidationError.on("url", "the URL has no host")
    if parts.username or parts.password:
        raise ValidationError.on("url", "credentials in the URL are not allowed")
    if parts.fragment:
        raise ValidationError.on("url", "the URL must not have a #fragment")
    if any(c in url for c in "\r\n\t "):
        raise ValidationError.on("url", "the URL contains whitespace")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def is_public_address(address: str) -> bool:
    """Is this IP a public unicast address (not loopback, private, link-local, multicast,
    reserved, shared/CGNAT, documentation, or an IPv6 form of one of those)?"""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(str(mapped))
    return bool(ip.is_global) and not ip.is_multicast


def refused_addresses(addresses: list[str]) -> list[str]:
    """The addresses a webhook may not be sent to (all must pass: DNS may answer several)."""
    return [a for a in addresses if not is_public_address(a)]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes) -> bool:
    """What a receiver does (used by our tests and shown in docs/sending-api.md)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, f"t={timestamp},v1={fields.get('v1', '')}")


def retry_delay(failures: int, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff: base, 2·base, 4·base … capped (failures counts from 1)."""
    return float(min(max_seconds, base_seconds * (2 ** max(failures - 1, 0))))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # ObjectId and the like


def public_event(doc: dict[str, Any]) -> dict[str, Any]:
    """A delivery_events document as the API and webhooks show it (CONTRACT.md ``Event``)."""
    meta = dict(doc.get("metadata") or {})
    at: datetime = doc["occurred_at"]
    return {
        "id": str(doc["_id"]),
        "type": doc["event_type"],
        "at": at.isoformat().replace("+00:00", "Z"),
        "messageId": str(doc["message_id"]) if doc.get("message_id") else None,
        "recipient": doc.get("recipient"),
        "campaignId": str(doc["campaign_id"]) if doc.get("campaign_id") else None,
        "machine": bool(meta.pop("machine", False) or doc.get("machine")),
        "data": _jsonable(meta),
    }
