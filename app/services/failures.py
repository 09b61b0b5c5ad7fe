"""What an exception means in our error vocabulary, for the edges (GraphQL, REST, webhooks).

Services let an unexpected failure of a backing service (a database gone mid-request) travel
up as the client library raised it: wrapping every read to translate it would cost each call,
and only the edge decides what the client is told. The adapter that owns the library knows its
errors (``app.adapters.mongo.as_domain_error``); the edges ask through this module, so they
never import an adapter (the import-linter contracts in pyproject.toml).
"""

from __future__ import annotations

from app.adapters.mongo import as_domain_error as _from_mongo
from app.domain.errors import DomainError


def as_domain_error(exc: BaseException) -> DomainError | None:
    """A DomainError as it is, a known backing-service failure translated (the database is
    unavailable or busy: ServiceUnavailable), or None for anything unexpected."""
    return _from_mongo(exc)
