"""REST error mapping: DomainError → status + JSON; anything else masked (never a stack trace)."""

from __future__ import annotations

import uuid

import structlog
from starlette.responses import JSONResponse

from app.domain import errors as E
from app.services.failures import as_domain_error

log = structlog.get_logger(__name__)

STATUS = {
    "VALIDATION_ERROR": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "SERVICE_UNAVAILABLE": 503,
}


def error_response(exc: BaseException) -> JSONResponse:
    domain = as_domain_error(exc)
    if domain is None:
        request_id = uuid.uuid4().hex[:12]
        log.error(
            "unexpected error in REST handler",
            request_id=request_id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return JSONResponse(
            {
                "error": {
                    "code": "INTERNAL_SERVER_ERROR",
                    "requestId": request_id,
                    "message": f"Internal error (request id {request_id})",
                    "fields": [],
                }
            },
            status_code=500,
        )
    body = {
        "error": {
            "code": domain.code,
            "message": domain.message,
            "fields": [
                {"field": f.field, "message": f.message} for f in getattr(domain, "fields", [])
            ],
        }
    }
    headers = {}
    if isinstance(domain, E.RateLimited | E.ServiceUnavailable):
        headers["Retry-After"] = str(domain.retry_after_seconds)
    if isinstance(domain, E.AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=STATUS.get(domain.code, 400), headers=headers)
