"""Events in buckets: one ``delivery_events`` document for many events of one batch.

A campaign batch records a ``queued`` event for each of up to 500 recipients (and a
``suppressed`` one for each it skipped), and a batch of delivery outcomes a ``sent`` event for
each message the remote servers took. As single documents those events were the largest part
of what a campaign recipient cost the database at queue time, and a large part at delivery (an
event is a document and five index entries; docs/benchmarks.md, "Twenty-second session"). A
bucket (MongoDB's bucket pattern) holds a run of such events in one document: the fields they
share once, and each event's own fields in ``events``.

Every event keeps its own id, so the log, its cursors and webhooks' deduplication see the same
events as before. A bucket's ids are a *run*: made one after another by one process within one
second, so their ObjectIds differ only in the counter, by one each (``runs`` checks this and
starts a new bucket where it does not hold). No other id can sort between the first and the
last of a run (another process's ids differ in their random bytes, this process's next id has
a higher counter), so the bucket's ``_id``, the run's first id, orders it among the log's other
documents exactly as its events would be ordered one by one, and a reader in id windows
(events/log.py) finds a bucket in the window its events belong to.

A bucket document: every field its events share (those not in ``OWN``: ``event_type``,
``occurred_at``, ``sender_user_id``, ``sender_domain``, ``campaign_id`` …), ``_id`` (the first
event's id), ``last_id``, ``count``, ``message_id`` (the events' message ids: an array, so the
``(message_id, event_type, occurred_at)`` index finds a message's bucket, as it finds its other
events), ``event_ids`` (the events' ids again, for the sparse index that finds the bucket a log
cursor points into: SecantusDB answers ``events._id`` with a scan, 190 ms at 20,000 events
against 8.5 for the sparse index) and ``events`` (each event's id and its ``OWN`` fields).
``expand`` turns any ``delivery_events`` document into the events it holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import ObjectId

MAX_EVENTS = 1000  # events a bucket holds at most (≈ 120 KB with a campaign's fields)
OWN = ("message_id", "recipient", "recipient_id", "metadata")  # what differs between events
BUCKET = ("_id", "last_id", "count", "message_id", "event_ids", "events")  # a bucket's own


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
            groups.setdefault(tuple(sorted((k, repr(v)) for k, v in shared)), []).append(e)
    return singles + [d for group in groups.values() for d in bucket_docs(group)]


def bucket_docs(
    events: list[dict[str, Any]], ids: list[ObjectId] | None = None
) -> list[dict[str, Any]]:
    """Documents holding ``events``, which share every field but ``OWN``: a bucket for each
    run of their ids (usually one), or the event itself where a run holds only it. ``ids``:
    the events' ids, in order (new ones when not given)."""
    if not events:
        return []
    shared = {k: v for k, v in events[0].items() if k not in OWN and k != "_id"}
    docs: list[dict[str, Any]] = []
    start = 0
    for run in runs(ids if ids is not None else [ObjectId() for _ in events]):
        part = events[start : start + len(run)]
        start += len(run)
        if len(run) == 1:
            docs.append({**part[0], "_id": run[0]})
            continue
        docs.append(
            {
                "_id": run[0],
                "last_id": run[-1],
                **shared,
                "count": len(run),
                "message_id": [e["message_id"] for e in part],
                "event_ids": run,
                "events": [
                    {"_id": i, **{k: e[k] for k in OWN if k in e}}
                    for i, e in zip(run, part, strict=True)
                ],
            }
        )
    return docs


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


def runs(ids: list[ObjectId]) -> list[list[ObjectId]]:
    """``ids`` cut into runs: each run's ids share the second and the process and count up by
    one, and a run holds at most ``MAX_EVENTS``."""
    out: list[list[ObjectId]] = [[ids[0]]]
    for prev, cur in zip(ids, ids[1:], strict=False):
        run = out[-1]
        if (
            len(run) < MAX_EVENTS
            and cur.binary[:9] == prev.binary[:9]
            and _counter(cur) == _counter(prev) + 1
        ):
            run.append(cur)
        else:
            out.append([cur])
    return out


def _counter(oid: ObjectId) -> int:
    return int.from_bytes(oid.binary[9:], "big")  # three bytes: a run ends where it wraps
