"""The search index in Typesense: the only module that imports the typesense client.

Uses only what Typesense 0.24 (tests) and v30 (production) both have: collections, documents
import with ``action=upsert``, delete by filter, multi_search, aliases and scoped search keys.

- Searches go to an **alias** (``settings.typesense_collection``), so `mailhub reindex` can build
  a new collection and swap it in without a moment where search fails.
- Every search runs with a **scoped key** whose embedded ``filter_by`` is the viewer's owner
  clause: Typesense itself ANDs it onto whatever filter the request carries, so isolation does not
  rest on the query compiler alone.
- Searches are sent as multi_search (POST): long filters never hit URL length limits.
- Client exceptions become ``ServiceUnavailable`` (server down, timeouts) or ``IndexMissing``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import typesense
from typesense import exceptions as ts
from typesense.async_.api_call import AsyncApiCall
from typesense.async_.multi_search import AsyncMultiSearch
from typesense.configuration import Configuration

from app.domain.errors import ServiceUnavailable

# Every ASCII punctuation character separates words, as in app/domain/search_terms.words, so
# Typesense's own tokens for ``q`` agree with the term arrays the filters use.
TOKEN_SEPARATORS = list(string.punctuation)
IMPORT_BATCH = 500
DELETE_BATCH = 100


def collection_schema(name: str) -> dict[str, Any]:
    """One document per mailbox item (see app/services/search_indexing.py for the values)."""

    def f(field_name: str, kind: str, **options: Any) -> dict[str, Any]:
        return {"name": field_name, "type": kind, **options}

    return {
        "name": name,
        "fields": [
            f("owner", "string", facet=True),
            f("folder", "string"),
            f("role", "string"),
            f("thread_id", "string", index=False, optional=True),
            f("label_keys", "string[]"),
            f("read", "bool"),
            f("starred", "bool"),
            # Optional: collections created before it existed accept documents without it.
            f("probable_spam", "bool", optional=True),
            f("has_attachment", "bool"),
            f("from", "string"),
            f("to", "string[]"),
            f("cc", "string[]"),
            f("bcc", "string[]"),
            f("from_keys", "string[]"),
            f("to_keys", "string[]"),
            f("cc_keys", "string[]"),
            f("bcc_keys", "string[]"),
            f("subject", "string"),
            f("subject_terms", "string[]"),
            f("body", "string"),
            f("filenames", "string[]"),
            f("filename_keys", "string[]"),
            f("terms", "string[]"),
            f("size", "int64"),
            f("received_ms", "int64"),
            f("tiebreak", "int64"),
            f("version", "int64"),
        ],
        "default_sorting_field": "received_ms",
        "token_separators": TOKEN_SEPARATORS,
    }


class IndexMissing(Exception):
    """The alias or collection does not exist (yet): callers create it and retry once."""


def _unavailable(error: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"search is unavailable right now ({type(error).__name__})", retry_after_seconds=5
    )


async def _call(awaitable: Any) -> Any:
    """Await one client call, translating its exceptions into ours (STYLE.md §2)."""
    try:
        return await awaitable
    except ts.ObjectNotFound as e:
        raise IndexMissing(str(e)) from e
    except (
        ts.RequestMalformed,
        ts.ObjectUnprocessable,
        ts.RequestUnauthorized,
        ts.RequestForbidden,
        ts.ObjectAlreadyExists,
        ts.InvalidParameter,
    ):
        raise  # our bug or a conflict the caller handles: never a "try later"
    except (ts.TypesenseClientError, httpx.HTTPError, OSError) as e:
        raise _unavailable(e) from e


class TypesenseIndex:
    """Collections behind one alias, and the calls the search service needs."""

    def __init__(self, url: str, api_key: str, alias: str, *, timeout_seconds: float = 2.0) -> None:
        self.url = url
        self.alias = alias
        self._api_key = api_key
        self._timeout = timeout_seconds
        # One connection pool for the admin client and every per-search scoped client.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds), limits=httpx.Limits(max_connections=100)
        )
        self.admin = self._client(api_key)
        # The parent of the scoped keys: derived, so every process computes the same value
        # without storing it; it can only search this alias.
        self.search_key = hmac.new(
            api_key.encode(), f"search:{alias}".encode(), hashlib.sha256
        ).hexdigest()
        self._ready = False

    def _config(self, api_key: str) -> Any:  # the client's ConfigDict
        return {
            "api_key": api_key,
            "nodes": [self.url],
            "connection_timeout_seconds": self._timeout,
            "num_retries": 1,
            "retry_interval_seconds": 0.05,
        }

    def _client(self, api_key: str) -> typesense.AsyncClient:
        with warnings.catch_warnings():
            # The client builds its v30 analytics helper eagerly and warns about its v1 one.
            warnings.simplefilter("ignore", DeprecationWarning)
            return typesense.AsyncClient(self._config(api_key), http_client=self._http)

    def _collection(self, name: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its v1 overrides helper
            return self.admin.collections[name]

    def _scoped_search(self, api_key: str) -> AsyncMultiSearch:
        """Only the multi_search endpoint, under a scoped key: cheap enough per request."""
        return AsyncMultiSearch(AsyncApiCall(Configuration(self._config(api_key)), self._http))

    async def close(self) -> None:
        await self._http.aclose()

    # --- lifecycle ----------------------------------------------------------------------

    async def healthy(self) -> bool:
        try:
            return bool(await _call(self.admin.operations.is_healthy()))
        except (ServiceUnavailable, IndexMissing):
            return False

    def new_collection_name(self) -> str:
        return f"{self.alias}_{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"

    async def create_collection(self, name: str) -> None:
        schema: Any = collection_schema(name)
        await _call(self.admin.collections.create(schema))

    async def drop_collection(self, name: str) -> None:
        try:
            await _call(self._collection(name).delete())
        except IndexMissing:
            pass

    async def alias_target(self) -> str | None:
        try:
            alias = await _call(self.admin.aliases[self.alias].retrieve())
        except IndexMissing:
            return None
        return str(alias["collection_name"])

    async def point_alias(self, collection: str) -> None:
        await _call(self.admin.aliases.upsert(self.alias, {"collection_name": collection}))

    async def ensure(self) -> None:
        """Create the first collection, the alias and the parent search key if missing."""
        if self._ready:
            return
        target = await self.alias_target()
        if target is None:
            name = self.new_collection_name()
            await self.create_collection(name)
            await self.point_alias(name)
        else:
            await self.add_missing_fields(target)
        try:
            await _call(
                self.admin.keys.create(
                    {
                        "description": f"mailhub search ({self.alias})",
                        "actions": ["documents:search"],
                        "collections": [self.alias],
                        "value": self.search_key,
                    }
                )
            )
        except ts.ObjectAlreadyExists:
            pass
        self._ready = True

    async def add_missing_fields(self, collection: str) -> None:
        """Add the optional fields the schema gained since ``collection`` was created
        (``probable_spam``), in place: a filter on a field a collection lacks is an error, and
        an optional field needs no value in the documents already there (they get one as they
        are next indexed, or at `mailhub reindex`)."""
        current = await _call(self._collection(collection).retrieve())
        have = {f["name"] for f in current.get("fields", [])}
        missing = [
            f
            for f in collection_schema(collection)["fields"]
            if f["name"] not in have and f.get("optional")
        ]
        if missing:
            await _call(self._collection(collection).update({"fields": missing}))

    def forget(self) -> None:
        """The alias vanished under us (dropped by hand): the next ``ensure`` recreates it."""
        self._ready = False

    async def drop_all(self) -> None:
        """Remove the alias and its collection (tests, and `reindex` clean-up)."""
        target = await self.alias_target()
        try:
            await _call(self.admin.aliases[self.alias].delete())
        except IndexMissing:
            pass
        if target:
            await self.drop_collection(target)
        self._ready = False

    # --- writes -------------------------------------------------------------------------

    async def upsert(self, documents: list[dict[str, Any]], collection: str | None = None) -> None:
        """Bulk import with ``action=upsert``; any document the server rejects is an error."""
        name = collection or self.alias
        for start in range(0, len(documents), IMPORT_BATCH):
            batch = documents[start : start + IMPORT_BATCH]
            results = await _call(
                self._collection(name).documents.import_(batch, {"action": "upsert"})
            )
            failed = [r for r in results if not r.get("success")]
            if failed:
                raise RuntimeError(f"Typesense rejected {len(failed)} documents: {failed[0]}")

    async def delete(self, ids: list[str], collection: str | None = None) -> int:
        """Delete documents by id (ObjectId hex); missing ones are ignored."""
        name = collection or self.alias
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            batch = ids[start : start + DELETE_BATCH]
            if any(not c.isalnum() for i in batch for c in i):
                raise ValueError("document ids are ObjectId hex")
            result = await _call(
                self._collection(name).documents.delete({"filter_by": f"id:[{','.join(batch)}]"})
            )
            deleted += int(result.get("num_deleted", 0))
        return deleted

    # --- reads --------------------------------------------------------------------------

    def scoped_key(self, owner_filter: str) -> str:
        """A key that can only ever see documents matching ``owner_filter``."""
        key = self.admin.keys.generate_scoped_search_key(
            self.search_key, {"filter_by": owner_filter}
        )
        return key.decode() if isinstance(key, bytes) else str(key)

    async def search(
        self, searches: list[dict[str, Any]], *, owner_filter: str | None
    ) -> list[dict[str, Any]]:
        """Run searches on the alias in one multi_search; with ``owner_filter`` under a scoped key.

        multi_search answers 200 with per-search errors, so those are raised here.
        """
        searcher = (
            self._scoped_search(self.scoped_key(owner_filter))
            if owner_filter
            else self.admin.multi_search
        )
        body: Any = {"searches": [{"collection": self.alias, **s} for s in searches]}
        response = await _call(searcher.perform(body, {}))
        results: list[dict[str, Any]] = response["results"]
        for result in results:
            if "error" in result:
                code = int(result.get("code") or 500)
                if code == 404:
                    raise IndexMissing(result["error"])
                if code >= 500 or code == 503:
                    raise _unavailable(RuntimeError(result["error"]))
                raise RuntimeError(f"Typesense rejected a search ({code}): {result['error']}")
        return results

    async def count_by_owner(self, collection: str | None = None) -> dict[str, int]:
        """Documents per owner, from one faceted search."""
        params = {
            "q": "*",
            "query_by": "subject",
            "per_page": 0,
            "facet_by": "owner",
            "max_facet_values": 1_000_000,
        }
        result = await _call(self._collection(collection or self.alias).documents.search(params))
        counts = (result.get("facet_counts") or [{}])[0].get("counts") or []
        return {c["value"]: int(c["count"]) for c in counts}

    async def ids_of_owner(self, owner_filter: str) -> list[str]:
        """Every document id of one owner (export: no pagination limit)."""
        text = await _call(
            self._collection(self.alias).documents.export(
                {"filter_by": owner_filter, "include_fields": "id"}
            )
        )
        return [json.loads(line)["id"] for line in str(text).splitlines() if line.strip()]

    async def document(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return await _call(self._collection(self.alias).documents[doc_id].retrieve())  # type: ignore[no-any-return]
        except IndexMissing:
            return None
