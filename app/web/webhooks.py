"""``POST /webhooks/events``: a provider's delivery events (delivered, bounced, complained).

Authentication: ``X-Mailhub-Timestamp`` (Unix seconds) and ``X-Mailhub-Signature: sha256=<hex>``,
the HMAC-SHA256 of ``"<timestamp>.<raw body>"`` keyed with ``MAILHUB_WEBHOOK_SECRET``. A stale
timestamp (outside ``webhook_tolerance_seconds``) or a signature already seen is a replay and is
refused (``BounceProcessor.process_signed_webhook``); events then go through the same code as
DSNs and ARF reports (``BounceProcessor.apply``). Without a secret configured the endpoint
does not exist (404).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.domain.errors import Conflict, ValidationError
from app.services.failures import as_domain_error

MAX_BODY = 256 * 1024


def signature_for(secret: bytes, timestamp: str, body: bytes) -> str:
    """The expected ``X-Mailhub-Signature`` value (providers and tests compute the same)."""
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def webhook_routes(system: Any) -> list[Route]:
    settings = system.settings

    async def events(request: Request) -> Response:
        if settings.webhook_secret is None:
            return _error(404, "NOT_FOUND", "webhooks are not configured")
        secret = settings.webhook_secret.get_secret_value().encode()
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, "PAYLOAD_TOO_LARGE", "event body too large")
        timestamp = request.headers.get("x-mailhub-timestamp", "")
        given = request.headers.get("x-mailhub-signature", "")
        if not timestamp.isdigit() or not hmac.compare_digest(
            given, signature_for(secret, timestamp, body)
        ):
            return _error(401, "UNAUTHENTICATED", "bad or missing signature")
        if abs(time.time() - int(timestamp)) > settings.webhook_tolerance_seconds:
            return _error(401, "UNAUTHENTICATED", "timestamp outside the allowed window (replay?)")
        try:
            results = await system.bounces.process_signed_webhook(given, body)
        except Conflict as e:
            return _error(409, e.code, e.message)
        except ValidationError as e:
            return _error(400, e.code, e.message)
        except Exception as e:
            return _unavailable(e)
        return JSONResponse(
            {
                "results": [
                    {"applied": r.applied, "event": r.reason, "suppressed": r.suppressed}
                    for r in results
                ]
            }
        )

    return [Route("/webhooks/events", events, methods=["POST"])]


def _unavailable(e: Exception) -> JSONResponse:
    domain = as_domain_error(e)
    if domain is None:
        raise e
    return JSONResponse(
        {"error": {"code": domain.code, "message": domain.message}},
        status_code=503,
        headers={"Retry-After": "5"},
    )
