"""Filing as a plan: which documents filing a batch of messages writes (seed §11, §12). Pure.

Filing turns stored messages into per-user mailbox views, threaded and counted. The rules live
here once, over plain data: ``plan_filing`` takes the messages with the views to create and
the *thread context* (what the database already knows: which thread each RFC 822 Message-ID
belongs to, the subject-fallback candidates) and returns every write as data. One message or a
group-commit batch of many go through the same function; within a batch each message sees the
threads the messages before it made or joined, exactly as if they had been filed one by one.

Threading is header-first (RFC 5322 §3.6.4, RFC 8621 §3): the message's own Message-ID (a
reply that arrived first already made its thread), then In-Reply-To / References, closest
first; a reference whose thread has another base subject starts a new conversation. Only a
message with no reference headers falls back to its base subject, and only into a recent
thread that shares a participant (``conversations.may_join_by_subject``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.domain.changes import Change
from app.domain.conversations import may_join_by_subject, thread_lookup_ids
from app.domain.folders import counter_deltas

THREAD_SUBJECT_WINDOW_DAYS = 60  # a subject-only match must be this recent
SUBJECT_CANDIDATES = 5  # the newest threads of a base subject that subject fallback considers
MAX_PARTICIPANTS = 25  # a thread summary lists at most this many people
SUMMARY_FIELDS = ("from", "to", "cc", "subject", "snippet", "has_attachments", "size")


@dataclass(frozen=True)
class ViewSpec:
    """One mailbox view to create for one user."""

    user_id: ObjectId
    role: str  # sent | received | draft
    folder: str
    read: bool = False
    labels: tuple[str, ...] = ()
    dedupe_key: str | None = None  # unique per user: a retried delivery is not filed twice
    spam: dict[str, Any] | None = None
    item_id: ObjectId | None = None  # allocated earlier (a batched send's Sent item); else new


@dataclass(frozen=True)
class Filing:
    """One stored message and the views it gets, arriving at ``received_at``."""

    message: Mapping[str, Any]
    views: Sequence[ViewSpec]
    received_at: datetime
    # its Message-ID was made for it here (a send): no thread can name it yet, so the thread
    # context does not look it up (one query less a send); its refs are still looked up
    fresh_message_id: bool = False


@dataclass
class ThreadCandidate:
    """An existing thread that subject fallback may join: its newest arrival and its people."""

    thread_id: ObjectId
    latest_at: datetime | None
    participant_keys: list[str]


@dataclass(frozen=True)
class ThreadLookups:
    """What the thread context of a batch must hold (the loader reads exactly this)."""

    user_ids: frozenset[ObjectId]
    rfc822_ids: frozenset[tuple[ObjectId, str]]  # (user, own or referenced Message-ID)
    subjects: frozenset[tuple[ObjectId, str]]  # (user, base subject) of messages without refs


@dataclass
class ThreadContext:
    """The database's threading state for a batch's users, as plain data."""

    refs: dict[tuple[ObjectId, str], ObjectId] = field(default_factory=dict)  # (user, id) → thread
    # thread → base subject, for every existing thread the refs point at (a thread a ref names
    # that is missing here no longer exists)
    subjects: dict[ObjectId, str] = field(default_factory=dict)
    # (user, base subject) → candidates, newest first, at most SUBJECT_CANDIDATES each
    by_subject: dict[tuple[ObjectId, str], list[ThreadCandidate]] = field(default_factory=dict)


@dataclass(frozen=True)
class ThreadRef:
    """Message-ID → thread, written only if the user has no entry for that id yet."""

    user_id: ObjectId
    rfc822_id: str
    thread_id: ObjectId


def thread_ref_id(user_id: ObjectId, rfc822_id: str) -> str:
    """A thread ref's ``_id``: the user and the Message-ID in one value, so the refs of a
    whole batch (many users) are one ``_id $in`` query on any engine."""
    return f"{user_id}:{rfc822_id}"


def thread_subject_key(user_id: ObjectId, normalized_subject: str) -> str:
    """A thread's ``subject_key``: the user and the base subject in one indexed value, so the
    subject-fallback candidates of a whole batch are one ``$in`` query."""
    return f"{user_id}:{normalized_subject}"


@dataclass
class CounterMove:
    """How one folder/label counter moves; ``first_at`` is the oldest arrival entering it."""

    total: int = 0
    unread: int = 0
    first_at: datetime | None = None


@dataclass
class FilingPlan:
    """Every write of a batch. The writer applies it in one transaction; only the summaries of
    threads that already existed are recomputed there (from all their views)."""

    items: list[list[dict[str, Any]]]  # per filing, the views it created (in input order)
    new_threads: list[dict[str, Any]]  # complete thread documents
    refreshed_threads: set[tuple[ObjectId, ObjectId]]  # existing (user, thread) pairs touched
    thread_refs: list[ThreadRef]
    counters: dict[tuple[ObjectId, str, str], CounterMove]  # (user, kind, name) → move
    changes: list[Change]

    @property
    def all_items(self) -> list[dict[str, Any]]:
        return [item for items in self.items for item in items]


def participants_of(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The people of a message or view: From, To, Cc (those with an address)."""
    people = [doc.get("from")] + list(doc.get("to") or []) + list(doc.get("cc") or [])
    return [p for p in people if p and p.get("email")]


def summary_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """The denormalized fields a folder page shows without reading the message."""
    return {k: message.get(k) for k in SUMMARY_FIELDS}


def thread_summary(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A thread's summary fields from all its views, oldest first."""
    participants: dict[str, dict[str, Any]] = {}
    for item in items:
        for person in participants_of(item):
            participants.setdefault(person["email"].casefold(), person)
    return {
        "message_count": len(items),
        "unread_count": sum(1 for i in items if not i.get("read")),
        "latest_at": items[-1]["received_at"],
        "subject": items[-1].get("subject") or "",
        "folders": sorted({i["folder"] for i in items}),
        "labels": sorted({label for i in items for label in i.get("labels") or ()}),
        "participants": list(participants.values())[:MAX_PARTICIPANTS],
        "participant_keys": list(participants)[:MAX_PARTICIPANTS],
    }


def _own_and_referenced(message: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    refs = thread_lookup_ids(message.get("in_reply_to"), message.get("references") or ())
    return message.get("rfc822_message_id"), refs


def thread_lookups(filings: Iterable[Filing]) -> ThreadLookups:
    """Per user, the Message-IDs and base subjects whose threads a batch may join."""
    users: set[ObjectId] = set()
    ids: set[tuple[ObjectId, str]] = set()
    subjects: set[tuple[ObjectId, str]] = set()
    for filing in filings:
        own, refs = _own_and_referenced(filing.message)
        if filing.fresh_message_id:
            own = None
        subject = filing.message.get("normalized_subject") or ""
        for view in filing.views:
            users.add(view.user_id)
            ids.update((view.user_id, i) for i in (own, *refs) if i)
            if not refs and subject:
                subjects.add((view.user_id, subject))
    return ThreadLookups(frozenset(users), frozenset(ids), frozenset(subjects))


class _Planner:
    """Files a batch in memory, keeping the context current as each view is placed."""

    def __init__(self, context: ThreadContext, new_id: Callable[[], ObjectId]) -> None:
        self.refs = dict(context.refs)
        self.subjects = dict(context.subjects)
        self.by_subject = {  # copies: the planner updates them, the caller's context stays
            key: [ThreadCandidate(c.thread_id, c.latest_at, list(c.participant_keys)) for c in cs]
            for key, cs in context.by_subject.items()
        }
        self.new_id = new_id
        self.new_threads: dict[ObjectId, dict[str, Any]] = {}
        self.new_thread_items: dict[ObjectId, list[dict[str, Any]]] = {}
        self.touched: set[tuple[ObjectId, ObjectId]] = set()
        self.ref_writes: list[ThreadRef] = []
        self.counters: dict[tuple[ObjectId, str, str], CounterMove] = {}
        self.changes: list[Change] = []

    def file(self, filing: Filing) -> list[dict[str, Any]]:
        message, at = filing.message, filing.received_at
        items = []
        for spec in filing.views:
            thread_id = self._thread_for(spec.user_id, message, at)
            item = {
                "_id": spec.item_id or self.new_id(),
                "user_id": spec.user_id,
                "message_id": message["_id"],
                "role": spec.role,
                "thread_id": thread_id,
                "folder": spec.folder,
                "labels": list(spec.labels),
                "read": spec.read,
                "starred": False,
                "received_at": at,
                "version": 1,
                **summary_of(message),
            }
            if message.get("raw_blob_id"):  # immutable: IMAP's FETCH reads it from the view
                item["raw_blob_id"] = message["raw_blob_id"]
            if spec.dedupe_key:
                item["dedupe_key"] = spec.dedupe_key
            if spec.spam is not None:
                item["spam"] = spec.spam
            self._register_refs(spec.user_id, thread_id, message)
            self._joined(spec.user_id, thread_id, item)
            self._count(spec.user_id, item)
            self.changes.append(
                Change(spec.user_id, item["_id"], "created", thread_id, (spec.folder,), item)
            )
            items.append(item)
        return items

    def _thread_for(self, user_id: ObjectId, message: Mapping[str, Any], at: datetime) -> ObjectId:
        own, refs = _own_and_referenced(message)
        subject_key = message.get("normalized_subject") or ""
        for ref in ([own] if own else []) + [r for r in refs if r != own]:
            thread_id = self.refs.get((user_id, ref))
            if thread_id is None:
                continue
            if thread_id not in self.subjects:
                # The user deleted that conversation (its thread went with its last view; the
                # Message-IDs still name it): it starts again under the same id.
                return self._new_thread(user_id, message, subject_key, at, thread_id)
            if ref == own:
                return thread_id  # a reply that arrived first already made this thread
            thread_subject = self.subjects.get(thread_id, "")
            # RFC 8621 §3: a changed subject starts a new conversation even when it replies.
            if not subject_key or not thread_subject or thread_subject == subject_key:
                return thread_id
            break
        if not refs and subject_key:
            people = {p["email"].casefold() for p in participants_of(message)}
            for candidate in self.by_subject.get((user_id, subject_key), [])[:SUBJECT_CANDIDATES]:
                latest = candidate.latest_at
                age = (at - latest).days if latest else 0
                if age <= THREAD_SUBJECT_WINDOW_DAYS and may_join_by_subject(
                    has_reference_headers=False,
                    subject_key=subject_key,
                    thread_participants=set(candidate.participant_keys),
                    participants=people,
                ):
                    return candidate.thread_id
        return self._new_thread(user_id, message, subject_key, at)

    def _new_thread(
        self,
        user_id: ObjectId,
        message: Mapping[str, Any],
        subject_key: str,
        at: datetime,
        thread_id: ObjectId | None = None,
    ) -> ObjectId:
        thread_id = thread_id or self.new_id()
        self.new_threads[thread_id] = {
            "_id": thread_id,
            "user_id": user_id,
            "normalized_subject": subject_key,
            "subject_key": thread_subject_key(user_id, subject_key),
            "created_at": at,
        }
        self.new_thread_items[thread_id] = []
        self.subjects[thread_id] = subject_key
        if subject_key:
            self.by_subject.setdefault((user_id, subject_key), []).append(
                ThreadCandidate(thread_id, None, [])
            )
        return thread_id

    def _register_refs(
        self, user_id: ObjectId, thread_id: ObjectId, message: Mapping[str, Any]
    ) -> None:
        # Registering the ids a message *refers to* lets a parent that arrives later find the
        # thread its reply already started; the first thread to claim an id keeps it.
        own, refs = _own_and_referenced(message)
        for rfc822_id in dict.fromkeys(i for i in (own, *refs) if i):
            if (user_id, rfc822_id) not in self.refs:
                self.refs[(user_id, rfc822_id)] = thread_id
                self.ref_writes.append(ThreadRef(user_id, rfc822_id, thread_id))

    def _joined(self, user_id: ObjectId, thread_id: ObjectId, item: dict[str, Any]) -> None:
        """The thread has a new view: later messages of the batch see its new participants and
        its new latest arrival (subject fallback orders and filters by them)."""
        if thread_id in self.new_thread_items:
            self.new_thread_items[thread_id].append(item)
        else:
            self.touched.add((user_id, thread_id))
        key = (user_id, self.subjects.get(thread_id, ""))
        candidates = self.by_subject.get(key)
        if not candidates:
            return
        for candidate in candidates:
            if candidate.thread_id != thread_id:
                continue
            if candidate.latest_at is None or item["received_at"] >= candidate.latest_at:
                candidate.latest_at = item["received_at"]
            for person in participants_of(item):
                email = person["email"].casefold()
                if email not in candidate.participant_keys:
                    candidate.participant_keys.append(email)
            del candidate.participant_keys[MAX_PARTICIPANTS:]
        # newest first, as the database orders them; a stable sort keeps ties in place
        candidates.sort(key=_newest_first)

    def _count(self, user_id: ObjectId, item: dict[str, Any]) -> None:
        for (kind, name), change in counter_deltas(None, item).items():
            move = self.counters.setdefault((user_id, kind, name), CounterMove())
            move.total += change["total"]
            move.unread += change["unread"]
            if change["total"] > 0 and (
                move.first_at is None or item["received_at"] < move.first_at
            ):
                move.first_at = item["received_at"]

    def plan(self, items: list[list[dict[str, Any]]]) -> FilingPlan:
        new_threads = []
        for thread_id, doc in self.new_threads.items():
            views = sorted(self.new_thread_items[thread_id], key=lambda i: i["received_at"])
            new_threads.append({**doc, **thread_summary(views)})
        return FilingPlan(
            items=items,
            new_threads=new_threads,
            refreshed_threads=self.touched,
            thread_refs=self.ref_writes,
            counters=self.counters,
            changes=self.changes,
        )


def plan_filing(
    filings: Sequence[Filing],
    context: ThreadContext,
    *,
    new_id: Callable[[], ObjectId] = ObjectId,
) -> FilingPlan:
    """The writes that file ``filings`` in order, given what the database knows (``context``)."""
    planner = _Planner(context, new_id)
    items = [planner.file(filing) for filing in filings]
    return planner.plan(items)


def _newest_first(candidate: ThreadCandidate) -> tuple[bool, float]:
    latest = candidate.latest_at
    return (latest is None, -latest.timestamp() if latest else 0.0)
