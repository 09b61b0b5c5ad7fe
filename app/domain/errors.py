"""One error vocabulary for the whole system (STYLE.md §4).

Every edge maps a ``DomainError`` to its own wire form: GraphQL → a union error type,
REST → status + JSON, SMTP → reply code + enhanced status, jobs → retry or fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


@dataclass
class DomainError(Exception):
    message: str
    code: str = "ERROR"

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationError(DomainError):
    fields: list[FieldProblem] = field(default_factory=list)
    code: str = "VALIDATION_ERROR"

    @classmethod
    def on(cls, field_name: str, message: str) -> ValidationError:
        """A validation error about one input field."""
        return cls(message=message, fields=[FieldProblem(field_name, message)])


@dataclass
class NotFound(DomainError):
    code: str = "NOT_FOUND"


@dataclass
class AuthError(DomainError):
    code: str = "UNAUTHENTICATED"


@dataclass
class Forbidden(DomainError):
    code: str = "FORBIDDEN"


@dataclass
class RateLimited(DomainError):
    retry_after_seconds: int = 1
    code: str = "RATE_LIMITED"


@dataclass
class PayloadTooLarge(DomainError):
    code: str = "PAYLOAD_TOO_LARGE"


@dataclass
class Conflict(DomainError):
    code: str = "CONFLICT"


@dataclass
class ServiceUnavailable(DomainError):
    """A backing service (MongoDB, Redis, Typesense) cannot be reached right now."""

    retry_after_seconds: int = 5
    code: str = "SERVICE_UNAVAILABLE"
