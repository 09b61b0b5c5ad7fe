"""MongoDB connection (PyMongo's native async client) and error translation.

Only adapters import pymongo (an import-linter contract in pyproject.toml). Services build
bulk writes and index hints with the names re-exported here (``InsertOne``, ``UpdateOne``,
``UpdateMany``, ``DeleteOne``, ``ReturnDocument``, ``ASCENDING``, ``DESCENDING``) and ask
about a failure with the predicates below (``is_duplicate_key``, ``is_transient``,
``is_unreachable``), catching ``DatabaseError`` only where they must react to one. The edges
see ``ServiceUnavailable`` when the database cannot be reached (``as_domain_error``), so the
API can answer 503 / a typed GraphQL error within the server-selection timeout and recover
by itself once MongoDB returns.
``bson.ObjectId`` is not a client type but our id value type, used as such in every layer
(domain value types included).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    DeleteOne,
    InsertOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.write_concern import WriteConcern

from app.domain.errors import DomainError, ServiceUnavailable

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "DatabaseError",
    "DeleteOne",
    "InsertOne",
    "Mongo",
    "ReturnDocument",
    "UpdateMany",
    "UpdateOne",
    "as_domain_error",
    "connect",
    "in_transaction",
    "is_duplicate_key",
    "is_transient",
    "is_unreachable",
    "is_write_conflict",
    "retrying_conflicts",
]

log = structlog.get_logger(__name__)

# Every failure the database client raises; services catch it only to react (retry a batch).
DatabaseError = PyMongoError

_UNAVAILABLE = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    WTimeoutError,
)


def connect(
    uri: str, *, timeout_ms: int = 3000, event_listeners: Sequence[Any] = ()
) -> AsyncMongoClient[dict[str, Any]]:
    # Journaled majority writes: a 250 or a "sent" answer is only given for data that survives
    # a crash (DESIGN.md §6). Timeouts bound how long a request waits for a dead server.
    # ``event_listeners``: PyMongo command listeners of this client only (tests, benchmarks).
    return AsyncMongoClient(
        uri,
        event_listeners=list(event_listeners),
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 5, 15000),
        w="majority",
        journal=True,
        tz_aware=True,
        retryWrites=True,
        uuidRepresentation="standard",
    )


class CollectionsDatabase(AsyncDatabase[dict[str, Any]]):
    """An ``AsyncDatabase`` that makes each ``db.<name>`` collection once.

    PyMongo's ``AsyncDatabase.__getattr__`` builds a new ``AsyncCollection`` on every access
    (4.4 µs: codec, read and write options copied); services write ``self.db.messages`` at
    every call, dozens of times a stored message. The first access keeps its collection in the
    instance's ``__dict__``, where attribute lookup finds it before ``__getattr__`` is asked
    again. A collection holds no state of an operation (sessions are passed per call), so one
    object serves every caller, as a module-level ``coll = db.coll`` would.
    ``db["name"]`` and ``get_collection`` still build a new one, as before.
    """

    def __getattr__(self, name: str) -> Any:
        collection = super().__getattr__(name)  # AttributeError for "_…" names, as PyMongo's
        self.__dict__[name] = collection
        return collection


@dataclass
class Mongo:
    client: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]

    @classmethod
    def open(
        cls, uri: str, database: str, *, timeout_ms: int = 3000, event_listeners: Sequence[Any] = ()
    ) -> Mongo:
        client = connect(uri, timeout_ms=timeout_ms, event_listeners=event_listeners)
        return cls(
            client,
            CollectionsDatabase(client, database, write_concern=WriteConcern("majority", j=True)),
        )

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False


def is_duplicate_key(exc: BaseException) -> bool:
    """A unique index refused the write (11000), alone or inside a bulk write."""
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        return any(err.get("code") == 11000 for err in exc.details.get("writeErrors", []))
    return isinstance(exc, PyMongoError) and getattr(exc, "code", None) == 11000


def is_transient(exc: BaseException) -> bool:
    """The server says the transaction may simply be run again (a write conflict, ...)."""
    return isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError")


def is_write_conflict(exc: BaseException) -> bool:
    """Another transaction wrote the same document first (112): running again may succeed."""
    return isinstance(exc, PyMongoError) and getattr(exc, "code", None) == 112


def is_unreachable(exc: BaseException) -> bool:
    """The database could not be reached or answered too late: retrying now will not help."""
    return isinstance(exc, _UNAVAILABLE)


def as_domain_error(exc: BaseException) -> DomainError | None:
    """Translate a database failure into our vocabulary; None if it is not one we know."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return ServiceUnavailable(
            "the mail store is temporarily unavailable", retry_after_seconds=5
        )
    if (
        isinstance(exc, PyMongoError)
        and getattr(exc, "has_error_label", None)
        and (
            exc.has_error_label("TransientTransactionError")  # type: ignore[attr-defined]
        )
    ):
        return ServiceUnavailable("the mail store is busy, retry", retry_after_seconds=1)
    return None


def storage_failure(
    store: str, *, retry_after_seconds: int
) -> Callable[[BaseException], DomainError]:
    """What a writer's callers are told when its write failed (a batcher's ``failed``): a known
    database failure as ``as_domain_error`` translates it, anything else logged and answered
    "the ``store`` failed; try again later"."""

    def answer(exc: BaseException) -> DomainError:
        translated = as_domain_error(exc)
        if translated is not None:
            return translated
        structlog.get_logger(__name__).error(f"{store} failed", error=repr(exc)[:500])
        return ServiceUnavailable(
            f"the {store} failed; try again later", retry_after_seconds=retry_after_seconds
        )

    return answer


# seconds before the 2nd, 3rd, 4th... attempt of a transaction that hit a write conflict,
# each drawn from half to one and a half times this: the other transaction usually holds the
# document for milliseconds, and attempts straight after each other all met it again (a
# mailbox move refused as busy while a new message was being filed, in the browser tests)
RETRY_DELAYS = (0.01, 0.04, 0.16)


async def in_transaction(mongo: Mongo, work: Any, attempts: int = 4) -> Any:
    """Run ``await work(session)`` in one transaction; retried on write conflicts only,
    after a short randomized wait (``RETRY_DELAYS``, about 0.2 s in all).

    Not PyMongo's ``with_transaction``: that retries for up to two minutes, and a request
    must fail fast (ServiceUnavailable) when the database is gone.
    """
    for attempt in range(attempts):
        async with mongo.client.start_session() as session:
            try:
                async with await session.start_transaction():
                    return await work(session)
            except PyMongoError as e:
                transient = e.has_error_label("TransientTransactionError")
                if transient and attempt < attempts - 1 and not isinstance(e, _UNAVAILABLE):
                    delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    continue
                raise
    raise AssertionError("unreachable")


async def update_and_read(
    collection: Any,
    query: dict[str, Any],
    update: dict[str, Any],
    session: Any,
    projection: dict[str, Any] | None = None,
    *,
    upsert: bool = False,
    outside_transaction: bool = False,
) -> dict[str, Any] | None:
    """``find_one_and_update(query, update, upsert=upsert, return_document=AFTER)`` inside a
    transaction, as ``update_one`` and a read: the same document, since the update holds it
    against every other writer until the transaction ends and the transaction reads its own
    writes. The read is by ``_id`` (the query's, or the upserted one's); a query without
    ``_id`` must name at most one document (a unique key) whose matched fields the update
    leaves alone, and is read again as it is.

    ``outside_transaction``: without one, for a caller that acts on the document as it is
    just after the update, another writer's change in between included (the campaign
    sender's batch lease and log: a pause or cancel read there is one that landed).

    Two round trips instead of one, because the database the tests and benchmarks run on
    (SecantusDB) runs a ``findAndModify`` by ``_id`` as a scan of the whole collection: 433 ms
    against 2.5 ms for this at 30,000 documents, and ~150 ms per mailbox action with 10,000
    users. (One by a unique secondary index does not scan: 1-2 ms at 30,000 documents.)
    """
    if not outside_transaction and (session is None or not session.in_transaction):
        raise ValueError("update_and_read runs inside a transaction")
    result = await collection.update_one(query, update, upsert=upsert, session=session)
    if result.upserted_id is not None:
        again: dict[str, Any] = {"_id": result.upserted_id}
    elif result.matched_count:
        again = {"_id": query["_id"]} if "_id" in query else query
    else:
        return None
    return await collection.find_one(again, projection, session=session)  # type: ignore[no-any-return]


T = TypeVar("T")
CONFLICT_RETRIES = 8  # attempts of a group commit whose batch conflicted with another writer


async def retrying_conflicts(attempt: Callable[[], Awaitable[T]], *, what: str, size: int) -> T:
    """``await attempt()`` (a group commit's reads, then its transaction), again after a short
    random backoff while it fails on a transient error or a write conflict with a concurrent
    writer (the same users' counters), up to ``CONFLICT_RETRIES`` times; an unreachable
    database is raised at once (ServiceUnavailable / 451 now, not after the retries)."""
    for n in range(CONFLICT_RETRIES):
        try:
            return await attempt()
        except DatabaseError as e:
            retry = (is_transient(e) or is_write_conflict(e)) and not is_unreachable(e)
            if not retry or n == CONFLICT_RETRIES - 1:
                raise
            log.info(f"{what} conflicted; retrying", attempt=n, size=size)
            await asyncio.sleep(random.uniform(0.005, 0.05) * (n + 1))
    raise AssertionError("unreachable")
