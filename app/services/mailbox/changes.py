"""Mailbox state changes (seed §11): read, starred, folder and labels; deletion for good.

Each call is one transaction over the viewer's own views (an id of someone else's view reads
as a missing one), and its changes are published only after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction
from app.domain.changes import Change
from app.domain.errors import NotFound, ValidationError
from app.domain.folders import (
    MOVABLE,
    ROLE_HOME,
    CounterKey,
    Folder,
    check_label,
    counter_deltas,
    merge_deltas,
)
from app.domain.ids import parse_object_id
from app.domain.viewer import Viewer
from app.services.after_commit import Notifier
from app.services.mailbox.filing import apply_counter_deltas, record_changes, refresh_threads

MAX_BATCH = 500  # ids per call


@dataclass(frozen=True)
class StateChange:
    read: bool | None = None
    starred: bool | None = None
    folder: str | None = None
    add_labels: tuple[str, ...] = ()
    remove_labels: tuple[str, ...] = ()
    clear_probable_spam: bool = False  # markNotSpam: the "probably spam" flag is answered
    answered: bool | None = None  # IMAP \Answered (a reply was sent from a mail client)
    add_keywords: tuple[str, ...] = ()  # IMAP keywords ($Forwarded, \Deleted, ...), as stored
    remove_keywords: tuple[str, ...] = ()


def parse_ids(ids: list[str], field: str = "ids") -> list[ObjectId]:
    if not ids:
        raise ValidationError.on(field, "give at least one id")
    if len(ids) > MAX_BATCH:
        raise ValidationError.on(field, f"at most {MAX_BATCH} ids per call")
    parsed = [parse_object_id(i) for i in ids]
    if any(p is None for p in parsed):
        raise NotFound("no such message")
    return list(dict.fromkeys(p for p in parsed if p is not None))


class MailboxChanges:
    """What a viewer changes in their mailbox."""

    def __init__(self, mongo: Mongo, notifier: Notifier) -> None:
        self.mongo = mongo
        self.db = mongo.db
        self.notifier = notifier

    async def update_items(
        self, viewer: Viewer, ids: list[str], change: StateChange
    ) -> list[dict[str, Any]]:
        """Apply read/starred/folder/label changes to the viewer's views, all or nothing."""
        oids = parse_ids(ids)
        add = [check_label(label, "set.addLabels") for label in change.add_labels]
        remove = [check_label(label, "set.removeLabels") for label in change.remove_labels]
        target = Folder(change.folder) if change.folder else None
        now = datetime.now(UTC)

        async def work(session: Any) -> tuple[list[dict[str, Any]], list[Change]]:
            docs = await self._own_views(viewer, oids, session)
            deltas: dict[CounterKey, dict[str, int]] = {}
            touched: set[tuple[ObjectId, ObjectId]] = set()
            updated, changes = [], []
            for before in docs:
                after = dict(before)
                if change.read is not None:
                    after["read"] = change.read
                if change.starred is not None:
                    after["starred"] = change.starred
                if change.answered is not None:
                    after["answered"] = change.answered
                if change.add_keywords or change.remove_keywords:
                    drop = set(change.remove_keywords)
                    keywords = [k for k in before.get("keywords", []) if k not in drop]
                    keywords += [k for k in change.add_keywords if k not in keywords]
                    if keywords or "keywords" in before:
                        after["keywords"] = keywords
                if target is not None and target.value != before["folder"]:
                    after["folder"] = self._move_target(before, target).value
                    after["previous_folder"] = before["folder"]
                labels = [label for label in before.get("labels", []) if label not in remove]
                labels += [label for label in add if label not in labels]
                after["labels"] = labels
                if change.clear_probable_spam and (before.get("spam") or {}).get("probable"):
                    after["spam"] = {**before["spam"], "probable": False}
                if after == before:
                    updated.append(before)
                    continue
                after["version"] = before.get("version", 0) + 1
                after["updated_at"] = now
                merge_deltas(deltas, counter_deltas(before, after))
                await self.db.mailbox_items.replace_one(
                    {"_id": before["_id"]}, after, session=session
                )
                touched.add((viewer.user_id, before["thread_id"]))
                updated.append(after)
                changes.append(
                    Change(
                        viewer.user_id,
                        after["_id"],
                        "updated",
                        after["thread_id"],
                        tuple({before["folder"], after["folder"]}),
                        after,
                    )
                )
            arrived = min((d["received_at"] for d in updated), default=None)
            await apply_counter_deltas(self.db, viewer.user_id, deltas, session, arrived_at=arrived)
            await refresh_threads(self.db, touched, session)
            await record_changes(self.db, changes, session)
            return updated, changes

        items, changes = await in_transaction(self.mongo, work)
        await self.notifier.committed(changes)
        order = {oid: i for i, oid in enumerate(oids)}
        return sorted(items, key=lambda d: order[d["_id"]])

    async def _own_views(
        self, viewer: Viewer, oids: list[ObjectId], session: Any
    ) -> list[dict[str, Any]]:
        """The viewer's views with these ids, all or nothing: one that is missing or not the
        viewer's fails the whole call with the same NotFound, so ids of others leak nothing."""
        docs: list[dict[str, Any]] = await self.db.mailbox_items.find(
            {"_id": {"$in": oids}, "user_id": viewer.user_id}, session=session
        ).to_list()
        if len(docs) != len(oids):
            raise NotFound("no such message")
        return docs

    @staticmethod
    def _move_target(item: dict[str, Any], target: Folder) -> Folder:
        home = ROLE_HOME[item["role"]]
        if item["role"] == "draft" and target not in (Folder.TRASH, Folder.DRAFTS):
            raise ValidationError.on(
                "set.folder", "a draft can only move to TRASH (or back to DRAFTS)"
            )
        if target in MOVABLE or target == home:
            return target
        raise ValidationError.on(
            "set.folder",
            f"cannot move a message into {target.value}; "
            f"allowed: {', '.join(sorted(f.value for f in MOVABLE))}"
            f" or its own folder {home.value}",
        )

    async def delete_forever(self, viewer: Viewer, ids: list[str]) -> list[str]:
        """Remove views that are in TRASH or SPAM; content no view needs is collected."""
        oids = parse_ids(ids)

        async def work(session: Any) -> tuple[list[dict[str, Any]], list[Change]]:
            docs = await self._own_views(viewer, oids, session)
            for d in docs:
                if (
                    d["folder"] not in (Folder.TRASH.value, Folder.SPAM.value)
                    and d["role"] != "draft"
                ):
                    raise NotFound(
                        f"message {d['_id']} is not in TRASH or SPAM; move it there first"
                    )
            deltas: dict[CounterKey, dict[str, int]] = {}
            for d in docs:
                merge_deltas(deltas, counter_deltas(d, None))
            await self.db.mailbox_items.delete_many({"_id": {"$in": oids}}, session=session)
            await apply_counter_deltas(self.db, viewer.user_id, deltas, session)
            await refresh_threads(
                self.db, {(viewer.user_id, d["thread_id"]) for d in docs}, session
            )
            changes = [
                Change(viewer.user_id, d["_id"], "deleted", d["thread_id"], (d["folder"],))
                for d in docs
            ]
            await record_changes(self.db, changes, session)
            return docs, changes

        docs, changes = await in_transaction(self.mongo, work)
        await self.notifier.committed(changes)
        await self.notifier.content_released([d["message_id"] for d in docs])
        return [str(o) for o in oids]
