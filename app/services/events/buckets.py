"""Events in buckets: one ``delivery_events`` document for many events of one batch.

A campaign batch records a ``queued`` event for each of up to 500 recipients (and a
``suppressed`` one for each it skipped), and a batch of delivery outcomes a ``sent`` event for
each message the remote servers took. As single documents those events were the largest part
of what a campaign recipient cost the database at queue time, and a large part at delivery (an
event is a document and five index entries; docs/benchmarks.md, "Twenty-second session"). A
bucket (MongoDB's bucket pattern) holds a run of such events in one document: the fields they
share once, and each event's own fields in ``events``.

Every event keeps its own id, so the log, its cursors and webhooks' deduplication see the same
events as before. A bucket's ids are made for it, a block of ids as a campaign list part's
recipient ids are (app/domain/ids.py): the bucket's ``_id`` is the time, five fresh random
bytes and three zero bytes, and its event i's id is that plus i. No other id sorts between a
bucket's first and last (any other id differs in the random bytes), so the bucket's ``_id``
orders it among the log's other documents exactly as its events would be ordered one by one, a
reader in id windows (events/log.py) finds a bucket in the window its events belong to, and
the bucket holding an event is the document whose ``_id`` is the event's id with its last three
bytes zeroed (``bucket_of``): one key of the ``_id`` index, where SecantusDB scans for a range.

A bucket document: every field its events share (those not in ``OWN``: ``event_type``,
``occurred_at``, ``sender_user_id``, ``sender_domain``, ``campaign_id`` …), ``_id`` (the first
event's id), ``last_id``, ``count``, the messages it has events of, and ``events`` (each
event's id and its ``OWN`` fields). ``expand`` turns any ``delivery_events`` document into the
events it holds. Its messages are named one of two ways:

- ``message_id``, an array of its events' message ids, on the ``(message_id, event_type,
  occurred_at)`` index like a single event's: for the kinds read by message id on a hot path
  (a ``sent`` event's time at every open, campaigns/tracking.py);
- ``message_keys`` (``KEYED``: ``queued`` and ``suppressed``, read only for a message's history,
  ``deliveryEvents``): the distinct ``message_key`` of its messages — an ObjectId's first nine
  bytes, the second and process, or the campaign list part, that made it — on a sparse index, so
  a campaign batch's bucket of 500 has one to a few index entries instead of 500 (≈ 20 ms of
  SecantusDB CPU an insert of 500, as many as everything else in it). ``message_docs`` finds a
  message's documents either way and ``message_events`` picks its events out.

Buckets written before (until 2026-12-07) carry ``message_id`` (the array) and ``event_ids``
instead of ``message_keys``, and ids in a run of the process's ObjectIds: their message ids are
still found on the ``(message_id, …)`` index and the bucket a cursor points into on the sparse
``event_ids`` index, until they expire with the log's retention.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.domain.ids import block_id, block_of, id_at, in_block

MAX_EVENTS = 1000  # events a bucket holds at most (≈ 120 KB with a campaign's fields)
OWN = ("message_id", "recipient", "recipient_id", "metadata")  # what differs between events
# a bucket's own fields (``event_ids``: buckets written before their ids were made for them)
BUCKET = ("_id", "last_id", "count", "message_keys", "message_id", "event_ids", "events")
KEYED = frozenset({"queued", "suppressed"})  # kinds whose buckets list message keys, not ids


def in_buckets(
    events: list[dict[str, Any]], kinds: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """``events`` as documents to insert: those of ``kinds`` (every kind when None) in a bucket
    for each group that is alike in every field but ``OWN``, the others one document each (as
    is an event with a field a bucket keeps for itself)."""
    wanted = None if kinds is None else set(kinds)
    singles: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in events:
        shared = [(k, v) for k, v in e.items() if k not in OWN]
        if (wanted is not None and e["event_type"] not in wanted) or any(
            k in BUCKET for k, _ in shared
        ):
            singles.append(e)
        else:
            groups.setdefault(tuple((k, _alike(v)) for k, v in shared), []).append(e)
    return singles + [d for group in groups.values() for d in bucket_docs(group)]


_SCALARS = frozenset({str, int, float, bool, type(None), ObjectId, datetime, bytes})


def _alike(value: Any) -> Any:
    """What two events' values of a field must both be to share a bucket: the value and its
    type for a scalar (so 1, 1.0 and True stay apart), its repr for anything else (a dict, a
    list: not hashable). Events whose fields come in another order only bucket apart."""
    kind = type(value)
    return (kind, value) if kind in _SCALARS else repr(value)


def bucket_docs(events: list[dict[str, Any]], at: datetime | None = None) -> list[dict[str, Any]]:
    """Documents holding ``events``, which share every field but ``OWN``: a bucket for each
    ``MAX_EVENTS`` of them (usually one), or the event itself where it is alone. ``at``: when
    the ids say they were made (now when not given)."""
    if len(events) == 1:
        return [{**events[0], "_id": id_at(at) if at else ObjectId()}]
    shared = {k: v for k, v in events[0].items() if k not in OWN and k != "_id"}
    docs: list[dict[str, Any]] = []
    for start in range(0, len(events), MAX_EVENTS):
        part = events[start : start + MAX_EVENTS]
        block = block_id(at or datetime.now(UTC))
        ids = [in_block(block, i) for i in range(len(part))]
        messages = [e["message_id"] for e in part]
        docs.append(
            {
                "_id": ids[0],
                "last_id": ids[-1],
                **shared,
                "count": len(part),
                **(
                    {"message_keys": list(dict.fromkeys(map(message_key, messages)))}
                    if shared.get("event_type") in KEYED
                    else {"message_id": messages}
                ),
                "events": [
                    {"_id": i, **{k: e[k] for k in OWN if k in e}}
                    for i, e in zip(ids, part, strict=True)
                ],
            }
        )
    return docs


def bucket_of(event_id: ObjectId) -> ObjectId:
    """The ``_id`` of the bucket that holds ``event_id``, if a bucket holds it."""
    return block_of(event_id)[0]


def message_key(message_id: Any) -> Any:
    """What a bucket lists of a message it has events of: an ObjectId's first nine bytes (the
    messages of a batch share a few), any other id itself."""
    return message_id.binary[:9] if isinstance(message_id, ObjectId) else message_id


async def message_docs(collection: Any, message_id: Any) -> list[dict[str, Any]]:
    """The ``delivery_events`` documents that may hold events of ``message_id``: its single
    events and the buckets naming it, on the ``(message_id, …)`` index, and the buckets of its
    key, on the sparse ``message_keys`` index (two queries, each answered by its index)."""
    named = await collection.find({"message_id": message_id}).to_list()
    keyed = await collection.find({"message_keys": message_key(message_id)}).to_list()
    return named + keyed


def message_events(docs: Iterable[dict[str, Any]], message_id: Any) -> list[dict[str, Any]]:
    """The events of ``message_id`` among those ``docs`` hold (``message_docs``)."""
    return [e for e in expand_all(docs) if e.get("message_id") == message_id]


def expand(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a ``delivery_events`` document holds, in id order, each as a document of its
    own (its id, its fields and the bucket's shared ones)."""
    inner = doc.get("events")
    if inner is None:
        return [doc]
    shared = {k: v for k, v in doc.items() if k not in BUCKET}
    return [{**shared, **e} for e in inner]


def expand_all(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for d in docs for e in expand(d)]
