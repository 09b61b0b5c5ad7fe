"""Search use cases: a viewer's query, index health, and `mailhub reindex`.

A search is always confined to the viewer's own items twice over: the compiled filter starts
with the owner clause, and the request runs under a scoped key that embeds the same clause,
so Typesense ANDs it on by itself. Hits are then read back from MongoDB (one ``$in`` query,
again filtered by owner): results show the *live* folder/read/labels state, an item deleted
since it was indexed never appears, and a hit the index has not caught up with (moved to
TRASH a moment ago, say) is dropped when its current state contradicts the query.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId
from prometheus_client import Gauge, Histogram

from app.adapters.mongo import Mongo
from app.adapters.typesense_index import IndexMissing, TypesenseIndex
from app.config import Settings
from app.domain.cursors import Cursor, decode_cursor, encode_cursor
from app.domain.search_query import (
    QUERY_BY,
    compile_query,
    live_values,
    live_verdict,
    owner_filter,
    parse_query,
    viewer_filter,
)
from app.domain.viewer import Viewer
from app.services.mailbox.queries import check_page_size
from app.services.search.indexing import MARK_END, MARK_START, SearchIndexer, tiebreak_of

log = structlog.get_logger(__name__)

HIGHLIGHT_ORDER = ("subject", "from", "to", "cc", "bcc", "filenames", "body")
MAX_REPAIRED_USERS = 20  # per health check: bounded work, the next run continues
MAX_DRIFT_LABELS = 50  # per-user series only for users that are out of sync (bounded cardinality)

SEARCH_LATENCY = Histogram(
    "mailhub_search_latency_seconds",
    "Search requests, end to end in the service",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DOCUMENTS = Gauge(
    "mailhub_search_index_documents", "Documents in the search index (last health check)"
)
ITEMS = Gauge("mailhub_search_mailbox_items", "Mailbox items in MongoDB (last health check)")
OUT_OF_SYNC = Gauge(
    "mailhub_search_users_out_of_sync",
    "Users whose index document count differs from their mailbox item count",
)
USER_DRIFT = Gauge(
    "mailhub_search_user_drift_documents",
    "Index documents minus mailbox items, for users out of sync",
    ["user_id"],
)


@dataclass(frozen=True)
class SearchHit:
    item: dict[str, Any]  # the live mailbox item
    highlights: list[str]  # HTML-escaped snippets, matches wrapped in <mark>
    cursor: str


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    has_next: bool
    end_cursor: str | None
    total: int


@dataclass(frozen=True)
class IndexHealth:
    user_id: str
    documents: int  # in Typesense
    items: int  # in MongoDB

    @property
    def in_sync(self) -> bool:
        return self.documents == self.items


@dataclass(frozen=True)
class ReindexReport:
    collection: str
    previous: str | None
    documents: int
    caught_up: int
    seconds: float


def search_params(q: str, filter_by: str, first: int) -> dict[str, Any]:
    """Typesense parameters: exact words (no typos, prefixes or dropped words), newest first."""
    return {
        "q": q,
        "query_by": QUERY_BY,
        "filter_by": filter_by,
        "sort_by": "received_ms:desc,tiebreak:desc",
        "per_page": first,
        "page": 1,
        "num_typos": 0,
        "prefix": "false",
        "drop_tokens_threshold": 0,
        "typo_tokens_threshold": 0,
        "split_join_tokens": "off",
        # Highlights are made only from returned fields: the sort keys plus the searched text.
        "include_fields": "id,received_ms,tiebreak," + QUERY_BY,
        "highlight_start_tag": MARK_START,
        "highlight_end_tag": MARK_END,
        "highlight_affix_num_tokens": 8,
    }


def highlights_of(hit: dict[str, Any]) -> list[str]:
    """Snippets in a fixed field order, HTML-escaped, with <mark> around the matched words."""
    found: dict[str, list[str]] = {}
    for h in hit.get("highlights") or []:
        snippets = [h["snippet"]] if h.get("snippet") else [s for s in h.get("snippets") or [] if s]
        found.setdefault(h.get("field", ""), []).extend(snippets)
    out = []
    for name in sorted(
        found, key=lambda n: HIGHLIGHT_ORDER.index(n) if n in HIGHLIGHT_ORDER else 99
    ):
        for snippet in found[name]:
            out.append(
                html.escape(snippet, quote=False)
                .replace(MARK_START, "<mark>")
                .replace(MARK_END, "</mark>")
            )
    return out


class SearchService:
    def __init__(
        self, mongo: Mongo, index: TypesenseIndex, indexer: SearchIndexer, settings: Settings
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.index = index
        self.indexer = indexer
        self.settings = settings
        secret = settings.secret_key.get_secret_value() if settings.secret_key else "dev"
        self.cursor_key = secret.encode()

    async def close(self) -> None:
        await self.index.close()

    # --- search --------------------------------------------------------------------------

    async def search(
        self, viewer: Viewer, query: str, *, first: int = 20, after: str | None = None
    ) -> SearchPage:
        """One page of the viewer's items matching a Gmail-style query, newest first."""
        started = time.perf_counter()
        check_page_size(first)
        compiled = compile_query(parse_query(query, now=datetime.now(UTC)))
        owner = str(viewer.user_id)
        position = ""
        if after:
            c = decode_cursor(after, self.cursor_key, "s")
            at, tiebreak = int(c.at.timestamp() * 1000), tiebreak_of(ObjectId(c.id))
            position = f"received_ms:<{at} || (received_ms:={at} && tiebreak:<{tiebreak})"
        searches = [
            search_params(compiled.q, viewer_filter(owner, compiled.filter_by, position), first)
        ]
        if after:  # the total counts the whole result, not what is left after the cursor
            searches.append(
                {
                    **search_params(compiled.q, viewer_filter(owner, compiled.filter_by), 1),
                    "per_page": 0,
                }
            )
        results = await self._run(searches, owner)
        page = results[0]
        hits = page.get("hits") or []
        ids = [ObjectId(h["document"]["id"]) for h in hits]
        live = {
            d["_id"]: d
            for d in await self.db.mailbox_items.find(
                {"_id": {"$in": ids}, "user_id": viewer.user_id}
            ).to_list()
        }
        out = []
        for hit, item_id in zip(hits, ids, strict=True):
            item = live.get(item_id)
            if item is None or live_verdict(compiled.conditions, live_values(item)) is False:
                continue  # deleted, or its state moved away from the query since it was indexed
            out.append(SearchHit(item, highlights_of(hit), self._cursor(hit["document"])))
        end = self._cursor(hits[-1]["document"]) if hits else None
        SEARCH_LATENCY.observe(time.perf_counter() - started)
        return SearchPage(
            out, int(page.get("found") or 0) > len(hits), end, int(results[-1].get("found") or 0)
        )

    def _cursor(self, document: dict[str, Any]) -> str:
        at = datetime.fromtimestamp(int(document["received_ms"]) / 1000, tz=UTC)
        return encode_cursor(Cursor(at, str(document["id"])), self.cursor_key, "s")

    async def _run(self, searches: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
        try:
            await self.index.ensure()
            return await self.index.search(searches, owner_filter=owner_filter(owner))
        except IndexMissing:
            self.index.forget()  # the alias was removed under us: recreate, then retry once
            await self.index.ensure()
            return await self.index.search(searches, owner_filter=owner_filter(owner))

    # --- health --------------------------------------------------------------------------

    async def health(self, user_id: ObjectId) -> IndexHealth:
        """Documents in the index vs items in MongoDB, for one user."""
        await self.index.ensure()
        result = await self.index.search(
            [{"q": "*", "query_by": "subject", "per_page": 0}],
            owner_filter=owner_filter(str(user_id)),
        )
        items = await self.db.mailbox_items.count_documents({"user_id": user_id})
        return IndexHealth(str(user_id), int(result[0].get("found") or 0), items)

    async def check_health(self) -> list[IndexHealth]:
        """Compare every user's counts, export them as metrics, and repair users out of sync.

        Repair means: documents whose item is gone are deleted, items without a document are
        indexed. Returns the users found out of sync (before repair).
        """
        await self.index.ensure()
        documents = await self.index.count_by_owner()
        items = {
            str(d["_id"]): int(d["n"])
            async for d in await self.db.mailbox_items.aggregate(
                [{"$group": {"_id": "$user_id", "n": {"$sum": 1}}}]
            )
        }
        drift = [
            IndexHealth(u, documents.get(u, 0), items.get(u, 0))
            for u in sorted(set(documents) | set(items))
        ]
        bad = [h for h in drift if not h.in_sync]
        DOCUMENTS.set(sum(documents.values()))
        ITEMS.set(sum(items.values()))
        OUT_OF_SYNC.set(len(bad))
        USER_DRIFT.clear()
        for h in sorted(bad, key=lambda h: -abs(h.documents - h.items))[:MAX_DRIFT_LABELS]:
            USER_DRIFT.labels(user_id=h.user_id).set(h.documents - h.items)
        for h in bad[:MAX_REPAIRED_USERS]:
            await self.repair_user(ObjectId(h.user_id))
        return bad

    async def repair_user(self, user_id: ObjectId) -> tuple[int, int]:
        """Make one user's documents match their items; returns (deleted, indexed)."""
        in_index = set(await self.index.ids_of_owner(owner_filter(str(user_id))))
        stored = {
            str(d["_id"])
            async for d in self.db.mailbox_items.find({"user_id": user_id}, {"_id": 1})
        }
        orphans, missing = sorted(in_index - stored), sorted(stored - in_index)
        if orphans:
            await self.index.delete(orphans)
        indexed = 0
        for start in range(0, len(missing), 500):
            indexed += await self.indexer.index_items(missing[start : start + 500])
        return len(orphans), indexed

    # --- reindex -------------------------------------------------------------------------

    async def reindex(self, batch: int = 500) -> ReindexReport:
        """Rebuild into a new collection, then swap the alias (search keeps answering from the
        old one until the swap). Changes made meanwhile are written to both collections by the
        index jobs and re-indexed once more after the swap, so none is lost to the copy."""
        started = time.perf_counter()
        await self.index.ensure()
        previous = await self.index.alias_target()
        target = self.index.new_collection_name()
        await self.index.create_collection(target)
        state_id = self.indexer.state_id
        await self.db.search_state.update_one(
            {"_id": state_id},
            {"$set": {"target": target, "started_at": datetime.now(UTC)}},
            upsert=True,
        )
        copied = 0
        try:
            last: ObjectId | None = None
            while True:
                query = {"_id": {"$gt": last}} if last else {}
                items = (
                    await self.db.mailbox_items.find(query).sort("_id", 1).limit(batch).to_list()
                )
                if not items:
                    break
                await self.index.upsert(await self.indexer.documents(items), target)
                copied += len(items)
                last = items[-1]["_id"]
            await self.index.point_alias(target)
        except BaseException:
            await self.db.search_state.delete_one({"_id": state_id})
            await self.index.drop_collection(target)
            raise
        await self.db.search_state.delete_one({"_id": state_id})
        touched = [
            d["_id"]
            async for d in self.db.search_reindex_touched.find(
                {"alias": self.index.alias}, {"_id": 1}
            )
        ]
        for start in range(0, len(touched), 500):
            await self.indexer.index_items(touched[start : start + 500])
        await self.db.search_reindex_touched.delete_many({"alias": self.index.alias})
        if previous and previous != target:
            await self.index.drop_collection(previous)
        return ReindexReport(target, previous, copied, len(touched), time.perf_counter() - started)
