"""How errors leave GraphQL.

Mutations: a DomainError whose GraphQL type is in the field's result union becomes that union
member (exception handlers). Anything else becomes a top-level error with ``extensions.code``;
a variable that cannot be coerced to its type (``first: 2147483648``, ``sendAt: "yesterday"``)
is the client's ``VALIDATION_ERROR``; an unexpected exception is masked ("Internal error", with
a request id) and logged in full. Client errors are logged as one info line each
(``log_client_errors``), never with a traceback: anyone can cause them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import strawberry
import structlog
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from app.domain import errors as E
from app.services.failures import as_domain_error
from schema import types as T

log = structlog.get_logger(__name__)


class ValidationHandler(strawberry.ExceptionHandler[E.ValidationError, T.ValidationErrorType]):
    def handle(
        self, exception: E.ValidationError, *, field: Any, info: Any
    ) -> T.ValidationErrorType:
        return T.ValidationErrorType(
            message=exception.message,
            fields=[T.FieldError(field=f.field, message=f.message) for f in exception.fields],
        )


class NotFoundHandler(strawberry.ExceptionHandler[E.NotFound, T.NotFoundType]):
    def handle(self, exception: E.NotFound, *, field: Any, info: Any) -> T.NotFoundType:
        return T.NotFoundType(message=exception.message)


class RateLimitedHandler(strawberry.ExceptionHandler[E.RateLimited, T.RateLimitedType]):
    def handle(self, exception: E.RateLimited, *, field: Any, info: Any) -> T.RateLimitedType:
        return T.RateLimitedType(
            message=exception.message, retry_after_seconds=exception.retry_after_seconds
        )


class AuthErrorHandler(strawberry.ExceptionHandler[E.AuthError, T.AuthErrorType]):
    def handle(self, exception: E.AuthError, *, field: Any, info: Any) -> T.AuthErrorType | None:
        # Only login answers AuthError in its union; elsewhere it is a top-level error.
        return T.AuthErrorType(message=exception.message)


EXCEPTION_HANDLERS: list[strawberry.ExceptionHandler[Any, Any]] = [
    ValidationHandler(),
    NotFoundHandler(),
    RateLimitedHandler(),
    AuthErrorHandler(),
]


_VARIABLE = re.compile(r"Variable '\$(\w+)'")
# What graphql-core and Strawberry's scalars raise while coercing a variable's value
_COERCION_ERRORS = (GraphQLError, ValueError, TypeError, OverflowError)


def client_error(error: GraphQLError) -> E.DomainError | None:
    """The client's mistake behind ``error``, or None when it is a bug (or needs no code)."""
    original = error.original_error
    if original is None:
        return None
    domain = as_domain_error(original)
    if domain is not None:
        return domain
    if error.path is None and isinstance(original, _COERCION_ERRORS):
        # raised before any resolver ran: a variable's value does not fit its declared type
        match = _VARIABLE.search(error.message)
        return E.ValidationError.on(match.group(1) if match else "variables", error.message)
    return None


def log_client_errors(errors: list[GraphQLError]) -> None:
    """One info line per client error; bugs are logged by ``shape_error`` (with a request id)."""
    for error in errors:
        if (error.extensions or {}).get("code") == "INTERNAL_SERVER_ERROR":
            continue
        if error.original_error is None:  # syntax, validation, limits
            log.info("client error", code="GRAPHQL_VALIDATION_FAILED", message=error.message[:200])
            continue
        domain = client_error(error)
        if domain is not None:
            log.info("client error", code=domain.code, message=domain.message[:200])


def shape_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if original is None:  # syntax, validation, depth/alias/token limits: already clear
        return error
    domain = client_error(error)
    if domain is not None:
        extensions: dict[str, Any] = {"code": domain.code}
        if isinstance(domain, E.ValidationError):
            extensions["fields"] = [{"field": f.field, "message": f.message} for f in domain.fields]
        if isinstance(domain, E.RateLimited | E.ServiceUnavailable):
            extensions["retryAfterSeconds"] = domain.retry_after_seconds
        return GraphQLError(
            domain.message,
            nodes=error.nodes,
            path=error.path,
            original_error=domain,
            extensions=extensions,
        )
    request_id = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error in resolver",
        request_id=request_id,
        path=error.path,
        exc_info=(type(original), original, original.__traceback__),
    )
    return GraphQLError(
        f"Internal error (request id {request_id})",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


class ErrorShaping(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None) if result is not None else None
        if errors:
            result.errors = [shape_error(e) for e in errors]  # type: ignore[union-attr]
