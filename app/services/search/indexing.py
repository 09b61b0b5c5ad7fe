"""Keeping the search index in step with the mailboxes (seed §13: an inverted index fed by
indexing events, never a scan of mailbox tables).

Flow: a committed change → ``on_change`` enqueues an index job (nothing else: mail flow never
waits for, or fails because of, Typesense) → the job reads the items' *current* state and
upserts one document per item → ``indexed_version`` on the item records the version the index
holds. Every change bumps ``version``, so ``indexed_version < version`` is exactly "the index is
behind"; the sweep (``repair``) finds those after a lost job or a Typesense outage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import ObjectId
from prometheus_client import Counter, Gauge

from app.adapters import metrics
from app.adapters.mongo import Mongo, UpdateOne
from app.adapters.queue import JobQueue
from app.adapters.typesense_index import TypesenseIndex
from app.domain.changes import Change
from app.domain.ids import parse_object_id
from app.domain.search_terms import address_terms, filename_terms, label_term, word_terms
from app.services.mailbox.content import ContentService

log = structlog.get_logger(__name__)

JOB_BATCH = 200  # item ids per index job
MAX_TERMS = 5000  # distinct words per document; body text is bounded before this anyway
SWEEP_SCAN = 20_000  # items the sweep looks at per run (a rolling scan by _id)
MARK_START, MARK_END = "\ue000", "\ue001"  # highlight sentinels (private use; never indexed)
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000\ue001]")

INDEXED = Counter("mailhub_search_documents_indexed_total", "Documents upserted into the index")
REMOVED = Counter("mailhub_search_documents_removed_total", "Documents deleted from the index")
BACKLOG = Gauge(
    "mailhub_search_backlog_items",
    "Items the last sweep found behind the index (indexed_version < version)",
)


def tiebreak_of(item_id: ObjectId) -> int:
    """A numeric second sort key from the id (its last 7 bytes fit a signed int64)."""
    return int.from_bytes(item_id.binary[5:], "big")


def _clean(text: str | None, limit: int | None = None) -> str:
    return _UNSAFE.sub(" ", (text or "")[:limit] if limit else text or "")


def _display(address: dict[str, Any] | None) -> str:
    if not address:
        return ""
    return _clean(" ".join(p for p in (address.get("name"), address.get("email")) if p))


def search_document(
    item: dict[str, Any], message: dict[str, Any], body: str | None, *, body_chars: int
) -> dict[str, Any]:
    """The index document of one mailbox item: content from the message, state from the item.

    Bcc is indexed only on the sender's own views (sent, draft): a recipient must not find
    a message by a Bcc they cannot see.
    """
    sender_view = item.get("role") in ("sent", "draft")
    sender = message.get("from") or item.get("from")
    to = list(message.get("to") or item.get("to") or [])
    cc = list(message.get("cc") or item.get("cc") or [])
    bcc = list(message.get("bcc") or []) if sender_view else []
    subject = _clean(
        item.get("subject") if item.get("subject") is not None else message.get("subject")
    )
    text = _clean(body, body_chars)
    filenames = [
        _clean(a.get("filename")) for a in message.get("attachments") or [] if a.get("filename")
    ]
    people_text = [_display(p) for p in [sender, *to, *cc, *bcc]]
    terms = sorted(word_terms([subject, text, *people_text, *filenames]))[:MAX_TERMS]

    def keys(addresses: Iterable[dict[str, Any] | None]) -> list[str]:
        return sorted({k for a in addresses for k in address_terms(a)})

    received: datetime = item["received_at"]
    return {
        "id": str(item["_id"]),
        "owner": str(item["user_id"]),
        "folder": item["folder"],
        "role": item.get("role") or "",
        "thread_id": str(item.get("thread_id") or ""),
        "label_keys": sorted({label_term(label) for label in item.get("labels") or ()}),
        "read": bool(item.get("read")),
        "starred": bool(item.get("starred")),
        "probable_spam": bool((item.get("spam") or {}).get("probable")),
        "has_attachment": bool(item.get("has_attachments") or message.get("has_attachments")),
        "from": _display(sender),
        "to": [_display(a) for a in to],
        "cc": [_display(a) for a in cc],
        "bcc": [_display(a) for a in bcc],
        "from_keys": keys([sender]),
        "to_keys": keys(to),
        "cc_keys": keys(cc),
        "bcc_keys": keys(bcc),
        "subject": subject,
        "subject_terms": sorted(word_terms([subject])),
        "body": text,
        "filenames": filenames,
        "filename_keys": sorted({k for name in filenames for k in filename_terms(name)}),
        "terms": terms,
        "size": int(item.get("size") or message.get("size") or 0),
        "received_ms": int(received.timestamp() * 1000),
        "tiebreak": tiebreak_of(item["_id"]),
        "version": int(item.get("version") or 1),
    }


@dataclass(frozen=True)
class SweepReport:
    scanned: int
    behind: int
    indexed: int


class SearchIndexer:
    """Index jobs, deletions and the repair sweep for one alias."""

    def __init__(
        self,
        mongo: Mongo,
        index: TypesenseIndex,
        queue: JobQueue,
        content: ContentService,
        *,
        body_chars: int,
    ) -> None:
        self.db = mongo.db
        self.index = index
        self.queue = queue
        self.content = content
        self.body_chars = body_chars
        self.state_id = f"reindex:{index.alias}"
        self.sweep_id = f"sweep:{index.alias}"

    # --- the after-commit listener: enqueue only ----------------------------------------

    async def on_change(self, changes: list[Change]) -> None:
        """Enqueue index/delete jobs for committed changes; never waits on Typesense."""
        now = time.time()
        upserts = list(dict.fromkeys(str(c.item_id) for c in changes if c.kind != "deleted"))
        deletes = list(dict.fromkeys(str(c.item_id) for c in changes if c.kind == "deleted"))
        for start in range(0, len(upserts), JOB_BATCH):
            await self.queue.enqueue("index_items", upserts[start : start + JOB_BATCH], now)
        for start in range(0, len(deletes), JOB_BATCH):
            await self.queue.enqueue("remove_from_index", deletes[start : start + JOB_BATCH], now)

    # --- documents -----------------------------------------------------------------------

    async def documents(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Index documents for items: one read of their messages, bodies from blobs if large."""
        ids = list({i["message_id"] for i in items})
        messages = {
            m["_id"]: m
            async for m in self.db.messages.find(
                {"_id": {"$in": ids}}, {"raw_blob_id": 0, "html_body": 0, "auth_results": 0}
            )
        }
        out = []
        for item in items:
            message = messages.get(item["message_id"], {})
            body = message.get("text_body")
            if body is None and message.get("text_blob_id"):
                body = await self.content.text_body(message)
            out.append(search_document(item, message, body, body_chars=self.body_chars))
        return out

    async def _targets(self) -> list[str | None]:
        """The alias, plus the collection a running `mailhub reindex` is filling."""
        state = await self.db.search_state.find_one({"_id": self.state_id})
        return [None, state["target"]] if state and state.get("target") else [None]

    async def _note_for_reindex(self, targets: list[str | None], ids: list[ObjectId]) -> None:
        if len(targets) > 1 and ids:
            await self.db.search_reindex_touched.bulk_write(
                [
                    UpdateOne({"_id": i}, {"$set": {"alias": self.index.alias}}, upsert=True)
                    for i in ids
                ],
                ordered=False,
            )

    # --- index jobs ----------------------------------------------------------------------

    async def index_items(
        self, item_ids: Iterable[str | ObjectId], enqueued_at: float | None = None
    ) -> int:
        """Upsert the current state of these items; items gone from MongoDB leave the index.

        A job that read version v may upsert after a faster job wrote v+1; so after writing,
        versions are read again and anything that moved on is indexed once more. Only a write
        that is still current sets ``indexed_version``.
        """
        oids = [o for o in (parse_object_id(i) for i in item_ids) if o is not None]
        if not oids:
            return 0
        await self.index.ensure()
        indexed = 0
        for _ in range(3):
            items = await self.db.mailbox_items.find({"_id": {"$in": oids}}).to_list()
            targets = await self._targets()
            gone = sorted(set(oids) - {i["_id"] for i in items})
            if gone:
                await self._delete([str(g) for g in gone], targets)
            if not items:
                break
            docs = await self.documents(items)
            for target in targets:
                await self.index.upsert(docs, target)
            await self._note_for_reindex(targets, [i["_id"] for i in items])
            written = {i["_id"]: int(i.get("version") or 1) for i in items}
            current = {
                d["_id"]: int(d.get("version") or 1)
                async for d in self.db.mailbox_items.find(
                    {"_id": {"$in": list(written)}}, {"version": 1}
                )
            }
            moved = [oid for oid, v in written.items() if oid in current and current[oid] != v]
            updates = [
                UpdateOne({"_id": oid, "version": v}, {"$max": {"indexed_version": v}})
                for oid, v in written.items()
                if oid not in moved
            ]
            updates += [
                UpdateOne({"_id": oid}, {"$min": {"indexed_version": written[oid]}})
                for oid in moved
            ]
            await self.db.mailbox_items.bulk_write(updates, ordered=False)
            indexed += len(written) - len(moved)
            INDEXED.inc(len(docs))
            if not moved:
                break
            oids = moved
        if enqueued_at is not None and indexed:
            lag = max(0.0, time.time() - enqueued_at)
            for _ in range(indexed):
                metrics.index_lag(lag)
        return indexed

    async def remove(self, item_ids: Iterable[str], enqueued_at: float | None = None) -> int:
        """Delete documents of items deleted from MongoDB (an id still stored is re-indexed)."""
        oids = [o for o in (parse_object_id(i) for i in item_ids) if o is not None]
        if not oids:
            return 0
        await self.index.ensure()
        alive = {
            d["_id"] async for d in self.db.mailbox_items.find({"_id": {"$in": oids}}, {"_id": 1})
        }
        if alive:
            await self.index_items(list(alive))
        return await self._delete([str(o) for o in oids if o not in alive], await self._targets())

    async def _delete(self, ids: list[str], targets: list[str | None]) -> int:
        if not ids:
            return 0
        removed = 0
        for target in targets:
            removed += await self.index.delete(ids, target)
        await self._note_for_reindex(targets, [ObjectId(i) for i in ids])
        REMOVED.inc(len(ids))
        return removed

    # --- the repair sweep ----------------------------------------------------------------

    async def repair(self, scan: int = SWEEP_SCAN) -> SweepReport:
        """Index every item whose ``indexed_version`` is behind ``version``.

        A rolling scan by ``_id`` (the position is kept in ``search_state``), ``scan`` items per
        run, wrapping at the end: bounded work per run, and every item is visited in turn. The
        comparison of two fields of one document cannot use an index, so it is done here on a
        small projection instead of a collection-wide ``$expr`` query.
        """
        state = await self.db.search_state.find_one({"_id": self.sweep_id}) or {}
        after = state.get("after")
        query: dict[str, Any] = {"_id": {"$gt": after}} if after else {}
        rows = (
            await self.db.mailbox_items.find(query, {"version": 1, "indexed_version": 1})
            .sort("_id", 1)
            .limit(scan)
            .to_list()
        )
        behind = [
            r["_id"]
            for r in rows
            if int(r.get("indexed_version") or 0) < int(r.get("version") or 1)
        ]
        indexed = 0
        for start in range(0, len(behind), 500):
            indexed += await self.index_items(behind[start : start + 500])
        position = rows[-1]["_id"] if len(rows) == scan else None  # None: start over next run
        await self.db.search_state.update_one(
            {"_id": self.sweep_id},
            {"$set": {"after": position, "swept_at": datetime.now(UTC)}},
            upsert=True,
        )
        BACKLOG.set(len(behind))
        if behind:
            log.info("search sweep repaired items", behind=len(behind), indexed=indexed)
        return SweepReport(len(rows), len(behind), indexed)
