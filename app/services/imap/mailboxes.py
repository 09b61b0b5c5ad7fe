"""IMAP's view of the mailboxes: UIDs, MODSEQs and IMAP operations over the same views.

There is no second copy of any message. What IMAP needs beyond the views is numbering:

- ``imap_mailboxes``: one document per (user, mailbox): ``uidvalidity``, ``uidnext`` and
  ``synced_state``, the user's change-log position (``users.state``) up to which the UIDs below
  are current.
- ``imap_uid_blocks``: the entries of a mailbox's numbering, UID_BLOCK consecutive UIDs a
  document (UID u is entry ``(u - 1) % UID_BLOCK`` of the block whose ``first`` is the block's
  first UID), each entry ``{u: uid, i: view id, m: modseq, g: gone}``: ``modseq`` is the
  change-log seq of the view's last change seen in this mailbox, ``gone`` that the view left
  the mailbox (an expunge, kept for QRESYNC's VANISHED); ``top`` is the block's highest
  modseq. One document per entry cost SecantusDB ~0.3 ms an insert (3 s for the first SELECT
  of 10,000 messages); twenty documents of 500 cost less than 0.1 s.

Views (flags, dates, message ids) are cached per user in this process, as of a change-log
position: before a read the cache compares that position with ``users.state`` (one small read)
and drops every view the log names since, so a cached view is never older than the log says
(``VIEW_CACHE`` below). A FETCH may accept a cache checked up to ``max_age`` seconds ago (a
client downloading one message per command would otherwise pay that read per message); any
change made through this service re-checks at the next read.

``sync`` brings a mailbox's numbering up to the user's current state by reading the change log
since ``synced_state`` (or, when the log was trimmed, comparing the whole mailbox). It runs in
one transaction that first writes the mailbox document, so concurrent syncs of one mailbox (two
sessions, or a session and an APPEND) serialise on that write: UIDs are handed out once, in
increasing order, and a UID a client has seen is never reused. MODSEQ is the change-log seq, so
HIGHESTMODSEQ is ``synced_state`` and CONDSTORE needs no counter of its own.

Every change to a view goes through ``MailboxChanges.update_items``/``delete_forever`` (the
same calls as GraphQL), so subscriptions and unread counts fire for IMAP changes, and IMAP
sees GraphQL's changes through the change log.

One module although over 400 lines: UID assignment, the sync of a mailbox's numbering with the
change log, and the reads and changes that depend on that numbering are one invariant (a UID a
client saw is never reused); its seams would cut through it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.blob_batches import blob_lengths, read_blobs
from app.adapters.blobs import BlobStore
from app.adapters.mongo import InsertOne, Mongo, UpdateOne, in_transaction, update_and_read
from app.domain.conversations import normalize_subject
from app.domain.errors import NotFound, ServiceUnavailable, ValidationError
from app.domain.folders import MOVABLE, ROLE_HOME, Folder
from app.domain.html_safety import make_snippet
from app.domain.imap_flags import DELETED, flag_change, flags_of
from app.domain.imap_names import FOLDER_NAMES, MailboxRef, folder_ref
from app.domain.parsing import parse_message
from app.domain.viewer import Viewer
from app.services.after_commit import Notifier
from app.services.mailbox.changes import MAX_BATCH, MailboxChanges, StateChange
from app.services.mailbox.content import received_attachments
from app.services.mailbox.filing import ViewSpec, file_message

SYNC_ATTEMPTS = 12
BLOB_ID_CACHE = 200_000
MAX_LOG_CHANGES = 5000  # beyond this many changes since the last sync, compare the mailbox whole
UID_BLOCK = 500  # numbering entries per imap_uid_blocks document
LAYOUT = "blocks"  # imap_mailboxes.layout of a numbering kept in imap_uid_blocks
WHOLE_MAILBOX = 500  # views missing from the cache beyond which a mailbox is read whole
NUMBERING_CACHE = 1000  # mailboxes whose UID numbering this process keeps
VIEW_CACHE = 200_000  # views cached in this process, over all users (least recently used go)
ITEM_FIELDS = {
    "_id": 1,
    "message_id": 1,
    "role": 1,
    "folder": 1,
    "labels": 1,
    "read": 1,
    "starred": 1,
    "answered": 1,
    "keywords": 1,
    "received_at": 1,
    "size": 1,
    "raw_blob_id": 1,  # views filed since it is kept there; older ones: the message names it
}


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int
    uidnext: int
    modseq: int  # the user's change-log position this numbering is current to (0: none yet)

    @property
    def highestmodseq(self) -> int:
        return max(1, self.modseq)  # RFC 7162: a mailbox with MODSEQ support reports >= 1


@dataclass(frozen=True)
class Entry:
    uid: int
    item_id: ObjectId
    modseq: int
    gone: bool = False


@dataclass(frozen=True)
class Listed:
    ref: MailboxRef
    special_use: str | None


@dataclass
class _UserViews:
    """One user's cached views, current as of change-log position ``state``."""

    state: int
    checked: float  # when ``state`` was last compared with users.state (monotonic)
    generation: int = 0  # bumped whenever views are dropped: a read begun earlier may be stale
    views: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)


class CannotDo(ValidationError):
    """An operation our model has no meaning for (IMAP answers NO [CANNOT])."""


class ImapMailboxService:
    def __init__(
        self, mongo: Mongo, blobs: BlobStore, mailbox: MailboxChanges, notifier: Notifier
    ) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.blobs = blobs
        self.mailbox = mailbox
        self.notifier = notifier
        self._blob_of: dict[ObjectId, ObjectId] = {}  # message id → raw blob id (immutable)
        # one sync at a time per mailbox in this process (weak: idle mailboxes cost nothing)
        self._locks: weakref.WeakValueDictionary[tuple[ObjectId, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._views: OrderedDict[ObjectId, _UserViews] = OrderedDict()
        self._cached_views = 0
        # (user, mailbox) → (uidvalidity, state, UID → entry): the last numbering read
        self._numbering: OrderedDict[tuple[ObjectId, str], tuple[int, int, dict[int, Entry]]] = (
            OrderedDict()
        )

    # --- mailboxes -----------------------------------------------------------------------

    async def list_mailboxes(self, viewer: Viewer) -> list[Listed]:
        """The six folders, every label in use, and labels created over IMAP."""
        out = [Listed(folder_ref(folder), attr) for _, folder, attr in FOLDER_NAMES]
        labels = {
            d["name"]
            async for d in self.db.mailbox_counters.find(
                {"user_id": viewer.user_id, "kind": "label", "total": {"$gt": 0}}, {"name": 1}
            )
        }
        async for d in self.db.imap_mailboxes.find(
            {"user_id": viewer.user_id, "created": True}, {"key": 1}
        ):
            labels.add(d["key"].split(":", 1)[1])
        out += [Listed(MailboxRef("label", name), None) for name in sorted(labels)]
        return out

    async def exists(self, viewer: Viewer, ref: MailboxRef) -> bool:
        if ref.is_folder:
            return True
        return any(m.ref == ref for m in await self.list_mailboxes(viewer))

    async def create(self, viewer: Viewer, ref: MailboxRef) -> None:
        if await self.exists(viewer, ref):
            raise CannotDo.on("mailbox", "mailbox already exists")
        await self.db.imap_mailboxes.update_one(
            {"user_id": viewer.user_id, "key": ref.key},
            {
                "$set": {"created": True},
                "$setOnInsert": _new_numbering(),
            },
            upsert=True,
        )

    async def delete(self, viewer: Viewer, ref: MailboxRef) -> None:
        """Deleting a label mailbox removes the label from its messages (they stay in their
        folders) and forgets its UIDs: recreated, it gets a new UIDVALIDITY."""
        if ref.is_folder:
            raise CannotDo.on("mailbox", "the standard folders cannot be deleted")
        if not await self.exists(viewer, ref):
            raise NotFound("no such mailbox")
        self._changed(viewer.user_id)
        while True:
            ids = [
                str(d["_id"])
                async for d in self.db.mailbox_items.find(
                    {"user_id": viewer.user_id, "labels": ref.name}, {"_id": 1}
                ).limit(MAX_BATCH)
            ]
            if not ids:
                break
            await self.mailbox.update_items(viewer, ids, StateChange(remove_labels=(ref.name,)))
        self._numbering.pop((viewer.user_id, ref.key), None)
        await self.db.imap_mailboxes.delete_one({"user_id": viewer.user_id, "key": ref.key})
        await self.db.imap_uid_blocks.delete_many({"user_id": viewer.user_id, "mailbox": ref.key})

    async def counts(self, viewer: Viewer, ref: MailboxRef) -> tuple[int, int]:
        """(messages, unseen) from the mailbox counters: STATUS without reading the mailbox."""
        doc = await self.db.mailbox_counters.find_one(
            {"user_id": viewer.user_id, "kind": ref.kind, "name": ref.name},
            {"total": 1, "unread": 1},
        )
        return max(0, int((doc or {}).get("total", 0))), max(0, int((doc or {}).get("unread", 0)))

    # --- numbering -----------------------------------------------------------------------

    async def sync(self, viewer: Viewer, ref: MailboxRef) -> MailboxState:
        """Number what arrived and record what changed or left since the last sync.

        Two reads when nothing changed (the common NOOP/IDLE case). Otherwise one transaction;
        syncs of one mailbox in this process queue on a lock, and across processes a write
        conflict is retried (the other sync did the work: the retry finds little to do)."""
        box = await self.db.imap_mailboxes.find_one(
            {"user_id": viewer.user_id, "key": ref.key},
            {"uidvalidity": 1, "uidnext": 1, "synced_state": 1, "layout": 1},
        )
        if box is not None and box.get("layout") == LAYOUT:
            user = await self.db.users.find_one({"_id": viewer.user_id}, {"state": 1})
            state = int((user or {}).get("state") or 0)
            if state == int(box.get("synced_state") or 0):
                return MailboxState(int(box["uidvalidity"]), int(box["uidnext"]), state)
        lock = self._locks.setdefault((viewer.user_id, ref.key), asyncio.Lock())
        async with lock:
            for attempt in range(SYNC_ATTEMPTS):
                try:
                    return await self._sync(viewer, ref)
                except Exception as e:  # the driver's error, asked by label (no pymongo here)
                    label = getattr(e, "has_error_label", None)
                    if label is None or not label("TransientTransactionError"):
                        raise
                    if attempt == SYNC_ATTEMPTS - 1:
                        raise ServiceUnavailable("mailbox busy; try again") from e
                    await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _sync(self, viewer: Viewer, ref: MailboxRef) -> MailboxState:
        user_id = viewer.user_id
        carried: list[tuple[int, int, list[Entry]]] = []  # (uidvalidity, from state, delta)
        read: list[dict[str, Any]] = []  # the mailbox's views, when it was read whole
        cache = self._views.get(user_id)
        before = (cache.generation, cache.state) if cache is not None else None
        started = time.monotonic()

        async def work(session: Any) -> MailboxState:
            carried.clear()  # a retried transaction starts over
            read.clear()
            box = await update_and_read(  # (user_id, key) is unique; the document after
                self.db.imap_mailboxes,
                {"user_id": user_id, "key": ref.key},
                {
                    "$inc": {"syncs": 1},  # the write that serialises concurrent syncs
                    "$setOnInsert": _new_numbering(),
                },
                session,
                upsert=True,
            )
            assert box is not None  # upserted
            if box.get("layout") != LAYOUT:
                box = await self._renumber(box, session)
            user = await self.db.users.find_one({"_id": user_id}, {"state": 1}, session=session)
            state = int((user or {}).get("state") or 0)
            synced = int(box.get("synced_state") or 0)
            uidnext = int(box["uidnext"])
            if state != synced:
                changed = await self._changed_since(user_id, synced, session) if synced else None
                if changed is None:
                    uidnext = await self._resync_whole(user_id, ref, uidnext, state, session, read)
                else:
                    delta: list[Entry] = []
                    uidnext, used_copy = await self._resync_changed(
                        user_id,
                        ref,
                        uidnext,
                        changed,
                        session,
                        uidvalidity=int(box["uidvalidity"]),
                        synced=synced,
                        delta=delta,
                    )
                    if used_copy:
                        carried.append((int(box["uidvalidity"]), synced, delta))
                await self.db.imap_mailboxes.update_one(
                    {"_id": box["_id"]},
                    {"$set": {"synced_state": state, "uidnext": uidnext}},
                    session=session,
                )
            return MailboxState(int(box["uidvalidity"]), uidnext, state)

        state: MailboxState = await in_transaction(self.mongo, work)
        if read:
            self._offer_views(user_id, state.modseq, read, before, started)
        key = (user_id, ref.key)
        cached = self._numbering.get(key)
        if carried and cached is not None and (cached[0], cached[1]) == carried[0][:2]:
            # committed: the copy plus this sync's writes is the numbering at the new state
            present = dict(cached[2])
            for e in carried[0][2]:
                if e.gone:
                    present.pop(e.uid, None)
                else:
                    present[e.uid] = e
            self._numbering[key] = (state.uidvalidity, state.modseq, present)
        return state

    async def _changed_since(
        self, user_id: ObjectId, since: int, session: Any
    ) -> dict[ObjectId, int] | None:
        """View id → seq of its last change after ``since``; None when the log cannot tell."""
        docs = (
            await self.db.mailbox_changes.find(
                {"user_id": user_id, "seq": {"$gt": since}},
                {"seq": 1, "item_id": 1},
                session=session,
            )
            .sort("seq", 1)
            .limit(MAX_LOG_CHANGES + 1)
            .to_list()
        )
        if not docs or docs[0]["seq"] != since + 1 or len(docs) > MAX_LOG_CHANGES:
            return None  # trimmed (TTL) or too long: compare the mailbox whole
        return {d["item_id"]: int(d["seq"]) for d in docs}

    async def _resync_changed(
        self,
        user_id: ObjectId,
        ref: MailboxRef,
        uidnext: int,
        changed: dict[ObjectId, int],
        session: Any,
        *,
        uidvalidity: int,
        synced: int,
        delta: list[Entry],
    ) -> tuple[int, bool]:
        """UIDNEXT after, and whether the copy of the numbering was used; then ``delta``
        holds every entry written (so that, once committed, the copy moves on with them)."""
        ids = list(changed)
        inside = {
            d["_id"]: d
            for d in await self.db.mailbox_items.find(
                {"_id": {"$in": ids}, "user_id": user_id, **ref.view_query()},
                {"_id": 1, "received_at": 1},
                session=session,
            ).to_list()
        }
        cached = self._numbering.get((user_id, ref.key))
        wanted = set(ids)
        if cached is not None and (cached[0], cached[1]) == (uidvalidity, synced):
            # This process read the numbering at exactly the state the mailbox is synced to,
            # and every change to it is a sync that moves that state (this one holds the
            # mailbox document): the copy is what reading the blocks would return.
            used_copy = True
            present = list(cached[2].values())
        else:
            used_copy = False
            present = [e for e in await self._read_numbering(user_id, ref, session) if not e.gone]
        uid_of = {e.item_id: e.uid for e in present if e.item_id in wanted}
        updates = [  # each changed view has its own MODSEQ
            Entry(uid, item_id, changed[item_id], item_id not in inside)
            for item_id, uid in uid_of.items()
        ]
        arrivals = sorted(
            (d for i, d in inside.items() if i not in uid_of),
            key=lambda d: (d["received_at"], d["_id"]),
        )
        new = [Entry(uidnext + n, d["_id"], changed[d["_id"]]) for n, d in enumerate(arrivals)]
        await self._write_numbering(user_id, ref, updates, new, session)
        delta += updates + new
        return uidnext + len(new), used_copy

    async def _resync_whole(
        self,
        user_id: ObjectId,
        ref: MailboxRef,
        uidnext: int,
        state: int,
        session: Any,
        read: list[dict[str, Any]],
    ) -> int:
        """Compare the whole mailbox with its numbering; its views (as FETCH reads them) are
        left in ``read``: a client's next command is usually a FETCH of every flag."""
        items = await (
            self.db.mailbox_items.find(
                {"user_id": user_id, **ref.view_query()}, ITEM_FIELDS, session=session
            )
            .sort([("received_at", 1), ("_id", 1)])
            .to_list()
        )
        numbered = {
            e.item_id: e.uid
            for e in await self._read_numbering(user_id, ref, session)
            if not e.gone
        }
        present = {d["_id"] for d in items}
        # we cannot tell which of the numbered views changed: all of them get this MODSEQ
        updates = [
            Entry(uid, item_id, state, item_id not in present) for item_id, uid in numbered.items()
        ]
        arrivals = [d["_id"] for d in items if d["_id"] not in numbered]
        new = [Entry(uidnext + n, item_id, state) for n, item_id in enumerate(arrivals)]
        await self._write_numbering(user_id, ref, updates, new, session)
        read += items
        return uidnext + len(new)

    async def _renumber(self, box: dict[str, Any], session: Any) -> dict[str, Any]:
        """A mailbox numbered before the block layout (one ``imap_uids`` document per UID)
        starts again under a new UIDVALIDITY: its clients download it again, as RFC 3501
        asks of a mailbox whose UIDs cannot be kept."""
        mailbox = {"user_id": box["user_id"], "mailbox": box["key"]}
        await self.db.imap_uids.delete_many(mailbox, session=session)
        await self.db.imap_uid_blocks.delete_many(mailbox, session=session)
        fresh = _new_numbering()  # a UIDVALIDITY its clients have not seen
        fresh["uidvalidity"] = max(fresh["uidvalidity"], int(box.get("uidvalidity") or 0) + 1)
        renumbered = await update_and_read(
            self.db.imap_mailboxes, {"_id": box["_id"]}, {"$set": fresh}, session
        )
        assert renumbered is not None  # written in this transaction
        return renumbered

    async def _read_numbering(
        self, user_id: ObjectId, ref: MailboxRef, session: Any, changed_after: int | None = None
    ) -> list[Entry]:
        """The mailbox's entries in UID order, present and gone (only the blocks holding an
        entry with MODSEQ above ``changed_after`` when given: the caller filters the rest)."""
        query: dict[str, Any] = {"user_id": user_id, "mailbox": ref.key}
        if changed_after is not None:
            query["top"] = {"$gt": changed_after}
        blocks = (
            await self.db.imap_uid_blocks.find(query, {"entries": 1}, session=session)
            .sort("first", 1)
            .to_list()
        )
        return [Entry(e["u"], e["i"], e["m"], e["g"]) for b in blocks for e in b["entries"]]

    async def _write_numbering(
        self,
        user_id: ObjectId,
        ref: MailboxRef,
        updates: list[Entry],
        new: list[Entry],
        session: Any,
    ) -> None:
        """Record ``updates`` (a new MODSEQ and gone of numbered entries) and append ``new``
        (the next UIDs, in order): one write per block touched, in one round trip. Every
        update names the entry it expects at the last position it writes, and every append
        the entry before it, so a block not laid out as UID_BLOCK consecutive UIDs fails the
        sync instead of recording a MODSEQ against the wrong view."""
        key = {"user_id": user_id, "mailbox": ref.key}
        ops: list[Any] = []
        for first, entries in _by_block(updates).items():
            changes: dict[str, Any] = {}
            for e in entries:
                at = e.uid - first
                changes[f"entries.{at}.m"] = e.modseq
                changes[f"entries.{at}.g"] = e.gone
            last = entries[-1]
            ops.append(
                UpdateOne(
                    {**key, "first": first, f"entries.{last.uid - first}.u": last.uid},
                    {"$set": changes, "$max": {"top": max(e.modseq for e in entries)}},
                )
            )
        for first, entries in _by_block(new).items():
            docs = [_entry_doc(e) for e in entries]
            top = max(e.modseq for e in entries)
            at = entries[0].uid - first
            if at == 0:  # a new block (the unique index refuses a second one)
                ops.append(InsertOne({**key, "first": first, "top": top, "entries": docs}))
            else:
                expected = {
                    f"entries.{at - 1}.u": entries[0].uid - 1,
                    f"entries.{at}": {"$exists": False},
                }
                ops.append(
                    UpdateOne(
                        {**key, "first": first, **expected},
                        {"$push": {"entries": {"$each": docs}}, "$max": {"top": top}},
                    )
                )
        if not ops:
            return
        result = await self.db.imap_uid_blocks.bulk_write(ops, ordered=True, session=session)
        updated = sum(1 for op in ops if isinstance(op, UpdateOne))
        if result.matched_count != updated:
            raise RuntimeError(f"IMAP numbering of {ref.key} is not laid out by UID: not synced")

    async def entries(
        self,
        viewer: Viewer,
        ref: MailboxRef,
        *,
        changed_after: int | None = None,
        state: MailboxState | None = None,
    ) -> list[Entry]:
        """The mailbox's numbered views in UID order: all present ones, or (``changed_after``)
        every entry, present or gone, whose MODSEQ is above it.

        All present ones, given the ``state`` a ``sync`` just returned, come from this
        process's copy of the numbering, brought up to date with the entries whose MODSEQ is
        above the copy's (every entry a sync touches gets a MODSEQ above the state it started
        from): a SELECT reads what changed, not the whole mailbox."""
        if changed_after is None and state is not None:
            return await self._entries_cached(viewer, ref, state)
        return await self._entries(viewer, ref, changed_after)

    async def _entries_cached(
        self, viewer: Viewer, ref: MailboxRef, state: MailboxState
    ) -> list[Entry]:
        key = (viewer.user_id, ref.key)
        cached = self._numbering.get(key)
        if cached is None or cached[0] != state.uidvalidity or cached[1] > state.modseq:
            present = {e.uid: e for e in await self._entries(viewer, ref, None)}
        else:
            present = dict(cached[2])
            if cached[1] < state.modseq:
                for e in await self._entries(viewer, ref, cached[1]):
                    if e.gone:
                        present.pop(e.uid, None)
                    else:
                        present[e.uid] = e
        out = sorted(present.values(), key=lambda e: e.uid)
        self._numbering[key] = (state.uidvalidity, state.modseq, {e.uid: e for e in out})
        self._numbering.move_to_end(key)
        while len(self._numbering) > NUMBERING_CACHE:
            self._numbering.popitem(last=False)
        return out

    async def _entries(
        self, viewer: Viewer, ref: MailboxRef, changed_after: int | None
    ) -> list[Entry]:
        entries = await self._read_numbering(viewer.user_id, ref, None, changed_after)
        if changed_after is None:
            return [e for e in entries if not e.gone]
        return [e for e in entries if e.modseq > changed_after]

    # --- content -------------------------------------------------------------------------

    async def views(
        self,
        viewer: Viewer,
        item_ids: list[ObjectId],
        *,
        max_age: float = 0.0,
        within: MailboxRef | None = None,
    ) -> dict[ObjectId, dict[str, Any]]:
        """The viewer's views by id (flags, dates, message ids); others' ids find nothing.

        From the cache where it holds them, once it is current with the change log (checked
        now, or up to ``max_age`` seconds ago); the rest in queries of 1000 ids, or, when
        more than WHOLE_MAILBOX of them are views of the mailbox ``within``, by reading that
        mailbox's views in one index range (several times cheaper a view than ids)."""
        cache = await self._current_views(viewer.user_id, max_age)
        generation = cache.generation
        out: dict[ObjectId, dict[str, Any]] = {}
        missing = []
        for item_id in item_ids:
            view = cache.views.get(item_id)
            if view is None:
                missing.append(item_id)
            else:
                out[item_id] = view
        loaded: dict[ObjectId, dict[str, Any]] = {}
        whole = within is not None and len(missing) > WHOLE_MAILBOX
        if within is not None and whole:
            async for d in self.db.mailbox_items.find(
                {"user_id": viewer.user_id, **within.view_query()}, ITEM_FIELDS
            ):
                loaded[d["_id"]] = d
            missing = [i for i in missing if i not in loaded]
        for start in range(0, len(missing), 1000):
            chunk = missing[start : start + 1000]
            async for d in self.db.mailbox_items.find(
                {"_id": {"$in": chunk}, "user_id": viewer.user_id}, ITEM_FIELDS
            ):
                loaded[d["_id"]] = d
        out.update(loaded)
        if cache.generation == generation:
            # read after the cache's position and no drop since: they are current
            self._join(viewer.user_id, cache, loaded)
        if whole:  # a mailbox read whole: only what was asked
            wanted = set(item_ids)
            out = {k: v for k, v in out.items() if k in wanted}
        return out  # shared with the cache: callers change copies, never these

    def _offer_views(
        self,
        user_id: ObjectId,
        state: int,
        views: list[dict[str, Any]],
        before: tuple[int, int] | None,
        started: float,
    ) -> None:
        """Views a sync's transaction read at change-log position ``state`` join the cache
        when it is where it was before the transaction (``before``: generation and
        position; nothing dropped since, and not ahead of these views). With no cache yet
        they start one at ``state``, as if compared with the log when the sync began."""
        cache = self._views.get(user_id)
        if cache is None:
            if before is not None:
                return  # dropped meanwhile (least recently used)
            cache = self._views[user_id] = _UserViews(state, started)
        elif (cache.generation, cache.state) != before or cache.state > state:
            return
        self._join(user_id, cache, {v["_id"]: v for v in views})

    def _join(self, user_id: ObjectId, cache: _UserViews, views: dict[ObjectId, Any]) -> None:
        """Current views join the user's cache (and the raw blobs they name are noted)."""
        for d in views.values():
            if d.get("raw_blob_id"):
                self._remember_blob(d["message_id"], d["raw_blob_id"])
        if views:
            self._cached_views += len(views.keys() - cache.views.keys())
            cache.views.update(views)
            self._bound_cache(user_id)

    async def _current_views(self, user_id: ObjectId, max_age: float) -> _UserViews:
        now = time.monotonic()
        cache = self._views.get(user_id)
        if cache is not None:
            self._views.move_to_end(user_id)
            if now - cache.checked <= max_age:
                return cache
        user = await self.db.users.find_one({"_id": user_id}, {"state": 1})
        state = int((user or {}).get("state") or 0)
        if cache is None:
            cache = self._views[user_id] = _UserViews(state, now)
            return cache
        if state != cache.state:
            since = cache.state
            changed = await self._changed_since(user_id, since, None) if cache.views else {}
            cache.generation += 1
            if changed is None:
                self._cached_views -= len(cache.views)
                cache.views.clear()
            else:
                for item_id in changed:
                    if cache.views.pop(item_id, None) is not None:
                        self._cached_views -= 1
            cache.state = max(cache.state, state)
        cache.checked = now
        return cache

    def _bound_cache(self, keep: ObjectId) -> None:
        while self._cached_views > VIEW_CACHE and len(self._views) > 1:
            user_id, oldest = next(iter(self._views.items()))
            if user_id == keep:
                self._views.move_to_end(user_id)
                continue
            del self._views[user_id]
            self._cached_views -= len(oldest.views)

    def _changed(self, user_id: ObjectId) -> None:
        """This process changed the user's views: the next read compares with the log."""
        cache = self._views.get(user_id)
        if cache is not None:
            cache.checked = 0.0

    async def messages(
        self, views: list[dict[str, Any]], fields: dict[str, int] | None = None
    ) -> dict[ObjectId, dict[str, Any]]:
        """Message documents of the given views (ids taken from the viewer's own views)."""
        ids = list({v["message_id"] for v in views})
        out: dict[ObjectId, dict[str, Any]] = {}
        projection = fields or {"raw_blob_id": 1}
        for start in range(0, len(ids), 1000):
            async for d in self.db.messages.find(
                {"_id": {"$in": ids[start : start + 1000]}}, projection
            ):
                out[d["_id"]] = d
        return out

    async def raw_sizes(self, messages: list[dict[str, Any]]) -> dict[ObjectId, int]:
        """Message id → size of its stored raw MIME (RFC822.SIZE: exactly what BODY[] returns)."""
        lengths = await blob_lengths(
            self.db, [m["raw_blob_id"] for m in messages if m.get("raw_blob_id")]
        )
        return {m["_id"]: lengths.get(m.get("raw_blob_id"), 0) for m in messages}  # type: ignore[arg-type]

    async def raw_by_message(self, message_ids: list[ObjectId]) -> dict[ObjectId, bytes]:
        """Message id → stored raw MIME. Callers pass message ids read from the viewer's own
        views. Which blob holds a message never changes, so it is remembered (bounded)."""
        missing = [m for m in message_ids if m not in self._blob_of]
        if missing:
            async for d in self.db.messages.find({"_id": {"$in": missing}}, {"raw_blob_id": 1}):
                if d.get("raw_blob_id"):
                    self._remember_blob(d["_id"], d["raw_blob_id"])
        blob_ids = {m: self._blob_of[m] for m in message_ids if m in self._blob_of}
        blobs = await read_blobs(self.db, list(blob_ids.values()))
        return {m: blobs.get(b, b"") for m, b in blob_ids.items()}

    def _remember_blob(self, message_id: ObjectId, blob_id: ObjectId) -> None:
        if len(self._blob_of) >= BLOB_ID_CACHE:
            self._blob_of.clear()
        self._blob_of[message_id] = blob_id

    async def raw(self, messages: list[dict[str, Any]]) -> dict[ObjectId, bytes]:
        """Message id → its stored raw MIME, byte for byte, in one or two queries."""
        blob_ids = [m["raw_blob_id"] for m in messages if m.get("raw_blob_id")]
        blobs = await read_blobs(self.db, blob_ids)
        return {m["_id"]: blobs.get(m.get("raw_blob_id"), b"") for m in messages}  # type: ignore[arg-type]

    # --- changes (all through MailboxChanges: the same calls as GraphQL) --------------------

    async def store_flags(
        self, viewer: Viewer, views: list[dict[str, Any]], flags: list[str], mode: str
    ) -> None:
        """STORE: group the views by the change they need, one update_items call per group."""
        groups: dict[tuple[tuple[str, Any], ...], list[str]] = {}
        for view in views:
            change = flag_change(flags_of(view), flags, mode)
            if change:
                groups.setdefault(tuple(sorted(change.items())), []).append(str(view["_id"]))
        self._changed(viewer.user_id)
        for change_items, ids in groups.items():
            for start in range(0, len(ids), MAX_BATCH):
                await self.mailbox.update_items(
                    viewer, ids[start : start + MAX_BATCH], StateChange(**dict(change_items))
                )
        self._changed(viewer.user_id)  # and after: a check between the two saw none of it

    async def move(
        self, viewer: Viewer, source: MailboxRef, target: MailboxRef, views: list[dict[str, Any]]
    ) -> None:
        """MOVE: between folders the view moves; into a label the label is added (and the view
        leaves the source: a label source loses its label, INBOX archives); out of a label the
        label is removed (and a folder target moves the view there)."""
        if source == target:
            raise CannotDo.on("mailbox", "source and destination are the same mailbox")
        remove = (source.name,) if not source.is_folder else ()
        if target.is_folder:
            folder = Folder(target.name)
            for view in views:
                self._check_move(view, folder)
            change = StateChange(folder=folder.value, remove_labels=remove)
        else:
            archive = Folder.ARCHIVE.value if source.name == Folder.INBOX.value else None
            change = StateChange(folder=archive, add_labels=(target.name,), remove_labels=remove)
        await self._update_all(viewer, views, change)

    async def copy(
        self, viewer: Viewer, source: MailboxRef, target: MailboxRef, views: list[dict[str, Any]]
    ) -> None:
        """COPY into a label adds the label. A message is in exactly one folder, so COPY into a
        folder has no meaning here unless the views are already there (clients use MOVE)."""
        if target.is_folder:
            if all(v["folder"] == target.name for v in views):
                return
            raise CannotDo.on(
                "mailbox", "a message is in one folder at a time: use MOVE between folders"
            )
        await self._update_all(viewer, views, StateChange(add_labels=(target.name,)))

    async def expunge(self, viewer: Viewer, ref: MailboxRef, views: list[dict[str, Any]]) -> None:
        """EXPUNGE of ``\\Deleted`` views: from Trash and Junk (and drafts) they are deleted for
        good, from other folders they move to Trash, from a label they lose the label."""
        doomed = [v for v in views if DELETED in (v.get("keywords") or ())]
        if not doomed:
            return
        if not ref.is_folder:
            change = StateChange(remove_labels=(ref.name,), remove_keywords=(DELETED,))
            await self._update_all(viewer, doomed, change)
            return
        final = [
            v
            for v in doomed
            if v["folder"] in (Folder.TRASH.value, Folder.SPAM.value) or v.get("role") == "draft"
        ]
        to_trash = [v for v in doomed if v not in final]
        self._changed(viewer.user_id)
        for start in range(0, len(final), MAX_BATCH):
            await self.mailbox.delete_forever(
                viewer, [str(v["_id"]) for v in final[start : start + MAX_BATCH]]
            )
        if to_trash:
            await self._update_all(
                viewer, to_trash, StateChange(folder=Folder.TRASH.value, remove_keywords=(DELETED,))
            )
        self._changed(viewer.user_id)

    async def _update_all(
        self, viewer: Viewer, views: list[dict[str, Any]], change: StateChange
    ) -> None:
        ids = [str(v["_id"]) for v in views]
        self._changed(viewer.user_id)
        for start in range(0, len(ids), MAX_BATCH):
            await self.mailbox.update_items(viewer, ids[start : start + MAX_BATCH], change)
        self._changed(viewer.user_id)

    @staticmethod
    def _check_move(view: dict[str, Any], folder: Folder) -> None:
        home = ROLE_HOME.get(view.get("role", "received"), Folder.INBOX)
        if folder not in MOVABLE and folder != home:
            raise CannotDo.on(
                "mailbox", f"this message cannot be moved into {folder.value.capitalize()}"
            )

    async def uids_of(
        self, viewer: Viewer, ref: MailboxRef, item_ids: list[ObjectId]
    ) -> dict[ObjectId, int]:
        wanted = set(item_ids)
        return {
            e.item_id: e.uid
            for e in await self._read_numbering(viewer.user_id, ref, None)
            if not e.gone and e.item_id in wanted
        }

    # --- APPEND --------------------------------------------------------------------------

    async def append(
        self,
        viewer: Viewer,
        ref: MailboxRef,
        raw: bytes,
        flags: list[str],
        internal_date: datetime | None,
    ) -> ObjectId:
        """Store a client's message (a draft, a copy of what it sent, an import) as one more
        view: the raw bytes are kept exactly as given. Returns the view id."""
        folder = Folder(ref.name) if ref.is_folder else Folder.ARCHIVE
        role = {Folder.SENT: "sent", Folder.DRAFTS: "draft"}.get(folder, "received")
        parsed = parse_message(raw)
        now = datetime.now(UTC)
        blob_id = await self.blobs.put(raw, filename="message.eml", metadata={"kind": "raw"})
        message_id = ObjectId()
        # its attachments downloadable like a received message's (most from the raw MIME)
        stored = received_attachments(parsed.attachments, message_id, blob_id, 0, "not_scanned")
        blob_ids = [b[0] for b in stored.blobs]
        if stored.blobs:
            await self.blobs.put_many([b[1:] for b in stored.blobs], ids=blob_ids)
        message = {
            "_id": message_id,
            "rfc822_message_id": parsed.message_id,
            "sender_user_id": viewer.user_id if role != "received" else None,
            "direction": "imported",
            "status": "imported",
            "from": _addr(parsed.from_) if parsed.from_ else {"name": None, "email": ""},
            "sender": _addr(parsed.sender) if parsed.sender else None,
            "to": [_addr(a) for a in parsed.to],
            "cc": [_addr(a) for a in parsed.cc],
            "bcc": [],
            "reply_to": [_addr(a) for a in parsed.reply_to],
            "subject": parsed.subject,
            "normalized_subject": normalize_subject(parsed.subject),
            "snippet": make_snippet(parsed.text_body or ""),
            "text_body": parsed.text_body,
            "html_body": parsed.html_body,
            "date": parsed.date,
            "in_reply_to": parsed.in_reply_to,
            "references": list(parsed.references),
            "headers": parsed.headers,
            "raw_blob_id": blob_id,
            "content_sha256": hashlib.sha256(raw).hexdigest(),
            "attachments": stored.refs,
            "has_attachments": bool(parsed.attachments),
            "size": len(raw),
            "created_at": now,
        }
        labels = () if ref.is_folder else (ref.name,)
        spec = ViewSpec(viewer.user_id, role, folder.value, read=False, labels=labels)
        received_at = internal_date or now

        async def work(session: Any) -> tuple[list[dict[str, Any]], list[Any]]:
            await self.db.messages.insert_one(message, session=session)
            if stored.docs:
                await self.db.attachments.insert_many(stored.docs, session=session)
            return await file_message(
                self.db, message, [spec], received_at=received_at, session=session
            )

        try:
            items, changes = await in_transaction(self.mongo, work)
        except BaseException:
            for stored_blob in (blob_id, *blob_ids):
                await self.blobs.delete(stored_blob)
            raise
        self._changed(viewer.user_id)
        await self.notifier.committed(changes)
        item = items[0]
        change = flag_change([], flags, "set") if flags else {}
        if change:
            await self.mailbox.update_items(viewer, [str(item["_id"])], StateChange(**change))
            self._changed(viewer.user_id)
        return item["_id"]  # type: ignore[no-any-return]


def _new_uidvalidity() -> int:
    # seconds since 2020 fit the 32 bits RFC 3501 allows for long enough, and a mailbox that is
    # deleted and recreated gets a larger value (a second apart at least)
    return max(1, int(time.time()) - 1_577_836_800) & 0xFFFFFFFF


def _new_numbering() -> dict[str, Any]:
    """The numbering fields of a mailbox document that has none yet."""
    return {"uidvalidity": _new_uidvalidity(), "uidnext": 1, "synced_state": 0, "layout": LAYOUT}


def _by_block(entries: list[Entry]) -> dict[int, list[Entry]]:
    """Entries grouped by the first UID of their block, each group in UID order."""
    out: dict[int, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: e.uid):
        out.setdefault((e.uid - 1) // UID_BLOCK * UID_BLOCK + 1, []).append(e)
    return out


def _entry_doc(e: Entry) -> dict[str, Any]:
    return {"u": e.uid, "i": e.item_id, "m": e.modseq, "g": e.gone}


def _addr(a: Any) -> dict[str, Any]:
    return {"name": a.name, "email": a.email}
