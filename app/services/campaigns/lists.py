"""A campaign's recipient list, stored in parts (issue 15).

A list of up to 1,000,000 recipients is stored as ``campaign_lists`` documents of up to
``PART_ROWS`` recipients each, in the order they were added. One document a recipient cost
SecantusDB 0.2-0.5 ms of CPU to insert, as much as rendering and queueing its message, and
0.08 ms to read back for its batch (docs/benchmarks.md, twenty-fourth session); a part costs
about that for all its recipients together. A part:

- ``_id``: an ObjectId whose last three bytes are zero. Recipient ``i`` of the part has the id
  ``_id + i`` (``recipient_id``), so a recipient id names its part and its place in it
  (``locate``): the tokens of its unsubscribe, open and click links, its message's id and its
  delivery row's id are that id, and finding its recipient is one read by ``_id``. The five
  bytes before are random for each part, as an ObjectId's are for each process, so no other
  id shares them;
- ``campaign_id``; ``seq`` and ``end``: the recipients' numbers in the list, ``seq`` to
  ``end - 1``, in order (a batch is a range of them); ``n`` = ``end - seq``;
- ``keys``: the normalized addresses. An index of ``(campaign_id, keys)`` finds the addresses
  an add repeats (``existing_keys``). It is not unique: a unique index cost SecantusDB 0.1 ms
  of CPU an address, five times everything else of an add, so an add checks and inserts in one
  transaction that also writes the campaign document, and two adds cannot both commit
  unchecked (``CampaignService.add_recipients``);
- ``rows``: ``[email as given, key, variables]`` of each recipient, as one JSON string (read
  whole, a part is one value to decode, not a thousand documents);
- what happened to a recipient, by its place (a string of ``i``), written only when it is not
  what the campaign's ``pending_floor`` implies: ``states`` (``suppressed`` or ``failed``),
  ``errors`` (why it failed), ``links`` (the URLs its tracked click links may redirect to),
  ``unsubscribed`` (``{at, via}``).

A recipient's state (``state_of``): its ``states`` entry; else ``queued`` when it is below the
campaign's ``pending_floor`` (its batch moved the floor past it); else ``canceled`` when the
campaign is; else ``pending``.

A list stored before the parts (one ``campaign_recipients`` document a recipient) is moved
into parts at start-up (``parts_from_rows``, the data migration ``campaign-lists``). Its
recipients keep their ids, which their links and messages carry: such a part lists them in
``ids``, and a recipient id that names no part is looked up there (a sparse index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import UpdateOne
from app.domain.campaigns import MAX_BATCH, RecipientRow
from app.domain.ids import block_id, block_of, in_block

PART_ROWS = MAX_BATCH  # a full batch reads one part
PART_BYTES = 4_000_000  # and a part stays far below MongoDB's 16 MB a document


def part_id(now: datetime) -> ObjectId:
    """A new part's id: a block of ids (app/domain/ids.py), its recipients' ids in it."""
    return block_id(now)


def recipient_id(part: ObjectId, i: int) -> ObjectId:
    return in_block(part, i)


def locate(rid: ObjectId) -> tuple[ObjectId, int]:
    """(the part, the place in it) of a recipient id."""
    return block_of(rid)


def parts_of(
    campaign_id: ObjectId, first_seq: int, accepted: list[RecipientRow], now: datetime
) -> list[dict[str, Any]]:
    """The ``campaign_lists`` documents of an add whose numbers start at ``first_seq``: up to
    ``PART_ROWS`` recipients a part, fewer when their rows pass ``PART_BYTES``."""
    parts: list[dict[str, Any]] = []
    run: list[tuple[str, str]] = []  # (key, the row's JSON)
    size = 0
    for r in accepted:
        row = _row(r.email, r.key, r.variables)
        if run and (len(run) >= PART_ROWS or size + len(row) > PART_BYTES):
            parts.append(_part(part_id(now), campaign_id, first_seq, run, now))
            first_seq += len(run)
            run, size = [], 0
        run.append((r.key, row))
        size += len(row)
    if run:
        parts.append(_part(part_id(now), campaign_id, first_seq, run, now))
    return parts


def _row(email: str, key: str, variables: dict[str, Any]) -> str:
    return json.dumps([email, key, variables], ensure_ascii=False, separators=(",", ":"))


def _part(
    _id: ObjectId, campaign_id: ObjectId, seq: int, run: list[tuple[str, str]], now: Any
) -> dict[str, Any]:
    """A part document of ``run`` (each recipient's key and row JSON), numbered from ``seq``."""
    return {
        "_id": _id,
        "campaign_id": campaign_id,
        "seq": seq,
        "end": seq + len(run),
        "n": len(run),
        "keys": [key for key, _ in run],
        "rows": "[" + ",".join(row for _, row in run) + "]",
        "created_at": now,
    }


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a list, read from its part."""

    id: ObjectId
    part: ObjectId  # the part it is in, and its place there
    place: int
    campaign_id: ObjectId
    seq: int
    email: str
    key: str
    variables: dict[str, Any]
    state: str | None  # the explicit state (``states``), None when the floor implies it
    links: tuple[str, ...]
    unsubscribed: dict[str, Any] | None


def recipients_of(part: Mapping[str, Any]) -> list[Recipient]:
    """Every recipient of a part document (read without ``keys``)."""
    states = part.get("states") or {}
    links = part.get("links") or {}
    unsubscribed = part.get("unsubscribed") or {}
    ids = part.get("ids")  # a part migrated from the earlier layout keeps its ids
    out = []
    for i, (email, key, variables) in enumerate(json.loads(part["rows"])):
        at = str(i)
        out.append(
            Recipient(
                ids[i] if ids else recipient_id(part["_id"], i),
                part["_id"],
                i,
                part["campaign_id"],
                part["seq"] + i,
                email,
                key,
                variables,
                states.get(at),
                tuple(links.get(at) or ()),
                unsubscribed.get(at),
            )
        )
    return out


def state_of(r: Recipient, campaign: Mapping[str, Any]) -> str:
    floor, beyond = _implied(campaign)
    return r.state or ("queued" if r.seq < floor else beyond)


def _implied(campaign: Mapping[str, Any]) -> tuple[int, str]:
    """(the floor below which a recipient with no state of its own is ``queued``, the state of
    one at or above it)."""
    beyond = "canceled" if campaign.get("status") == "canceled" else "pending"
    return int(campaign.get("pending_floor") or 0), beyond


_READ = {"keys": 0}  # every read but the duplicate check leaves the index's copy out


async def existing_keys(db: Any, campaign_id: ObjectId, keys: list[str], session: Any) -> set[str]:
    """Which of ``keys`` the campaign's list has already.

    (On SecantusDB, a part that holds some of them costs |keys| x its size to match, about 0.75 s
    for 1,000 keys against a part of 500: re-adding a list is slow there, adding a new one is
    not; MongoDB answers from the index.)"""
    wanted = set(keys)
    found: set[str] = set()
    async for part in db.campaign_lists.find(
        {"campaign_id": campaign_id, "keys": {"$in": keys}}, {"keys": 1}, session=session
    ):
        found.update(k for k in part["keys"] if k in wanted)
    return found


async def pending_from(
    db: Any, campaign: Mapping[str, Any], floor: int, size: int
) -> list[Recipient]:
    """The first ``size`` recipients at or above ``floor`` that have no state of their own, in
    order. Reads the parts that overlap windows of ``size`` numbers from ``floor`` up to the
    campaign's ``next_seq``: each a bounded range of the ``(campaign_id, end)`` index, so a
    batch at the end of a long list costs what one at its start does.

    The range names the index's fields alone: with ``seq`` beside them SecantusDB scanned the
    whole collection (242 ms a batch at the end of a 1,000,000-recipient list). A part that
    starts at or above the window's end (at most ``PART_ROWS`` numbers' worth) is read and
    skipped here instead."""
    cid = campaign["_id"]
    low, stop = floor, int(campaign.get("next_seq") or 0)
    out: list[Recipient] = []
    while len(out) < size and low < stop:
        high = min(low + size, stop)
        query = {"campaign_id": cid, "end": {"$gt": low, "$lte": high + PART_ROWS}}
        parts = [p for p in await db.campaign_lists.find(query, _READ).to_list() if p["seq"] < high]
        for part in sorted(parts, key=lambda p: p["seq"]):
            for r in recipients_of(part):
                if low <= r.seq < high and r.state is None and len(out) < size:
                    out.append(r)
        low = high
    return out


async def find_recipient(db: Any, rid: ObjectId) -> Recipient | None:
    part_key, i = locate(rid)
    part = await db.campaign_lists.find_one({"_id": part_key}, _READ)
    if part is not None and 0 <= i < part["n"] and not part.get("ids"):
        return recipients_of(part)[i]
    # a recipient of a list stored before the parts (``parts_from_rows``), whose links went
    # out with its own id
    part = await db.campaign_lists.find_one({"ids": rid}, _READ)
    if part is None:
        return None
    return recipients_of(part)[part["ids"].index(rid)]


def mark(
    recipients: Iterable[tuple[Recipient, dict[str, Any]]],
) -> list[UpdateOne]:
    """One update a part: ``$set`` each recipient's fields (``{"states": "failed", ...}``) at
    its place."""
    by_part: dict[ObjectId, dict[str, Any]] = {}
    for r, fields in recipients:
        at = by_part.setdefault(r.part, {})
        for name, value in fields.items():
            at[f"{name}.{r.place}"] = value
    return [UpdateOne({"_id": p}, {"$set": s}) for p, s in by_part.items()]


async def states(db: Any, campaign: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    """({state: how many recipients}, how many unsubscribed through the campaign), counted
    from the parts' counts and their few recipients with a state of their own."""
    counts: dict[str, int] = {}
    unsubscribed = 0
    floor, rest = _implied(campaign)  # as ``state_of`` has it, without reading the rows
    async for part in db.campaign_lists.find(
        {"campaign_id": campaign["_id"]}, {"seq": 1, "n": 1, "states": 1, "unsubscribed": 1}
    ):
        own = part.get("states") or {}
        for state in own.values():
            counts[state] = counts.get(state, 0) + 1
        below = max(0, min(part["n"], floor - part["seq"]))
        explicit_below = sum(1 for i in own if int(i) < below)
        counts["queued"] = counts.get("queued", 0) + below - explicit_below
        counts[rest] = counts.get(rest, 0) + part["n"] - below - (len(own) - explicit_below)
        unsubscribed += len(part.get("unsubscribed") or {})
    return {k: n for k, n in counts.items() if n}, unsubscribed


# --- the layout before the parts ----------------------------------------------------------


def legacy_part(campaign: Mapping[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of ``rows``, ``campaign_recipients`` documents of the layout before the parts
    (one a recipient; consecutive ``seq`` numbers, in order). Each keeps its id (``ids``: its
    tokens and its message went out with it), its state where the floor does not imply it,
    its error, links and unsubscribe. The part's ``_id`` is the first row's with its last byte
    odd: never what ``locate`` makes of a recipient id, and the same on a second run."""
    first = rows[0]["_id"].binary
    floor, _ = _implied(campaign)
    states: dict[str, str] = {}
    errors: dict[str, str] = {}
    links: dict[str, list[str]] = {}
    unsubscribed: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        at, state = str(i), row.get("state", "pending")
        if state not in ("pending", "queued") or (state == "queued" and row["seq"] >= floor):
            states[at] = state
        if row.get("error"):
            errors[at] = row["error"]
        if row.get("links"):
            links[at] = list(row["links"])
        if row.get("unsubscribed_at"):
            unsubscribed[at] = {"at": row["unsubscribed_at"], "via": row.get("unsubscribed_via")}
    run = [(r["key"], _row(r["email"], r["key"], r.get("variables") or {})) for r in rows]
    return {
        **_part(
            ObjectId(first[:-1] + bytes([first[-1] | 1])),
            campaign["_id"],
            rows[0]["seq"],
            run,
            rows[0].get("created_at"),
        ),
        "ids": [r["_id"] for r in rows],
        "states": states,
        "errors": errors,
        "links": links,
        "unsubscribed": unsubscribed,
    }


async def parts_from_rows(db: Any) -> int:
    """The data migration ``campaign-lists``: every campaign's ``campaign_recipients``
    documents become parts (``legacy_part``: runs of consecutive numbers, up to ``PART_ROWS``),
    a part written before its rows are deleted, so a process killed between the two writes the
    same part again at the next start. Returns how many recipients moved."""
    moved = 0
    for cid in await db.campaign_recipients.distinct("campaign_id"):
        campaign = await db.campaigns.find_one({"_id": cid}) or {"_id": cid}
        while True:
            rows = (
                await db.campaign_recipients.find({"campaign_id": cid})
                .sort("seq", 1)
                .limit(PART_ROWS)
                .to_list()
            )
            if not rows:
                break
            run = [rows[0]]
            for row in rows[1:]:
                if row["seq"] != run[-1]["seq"] + 1:
                    break
                run.append(row)
            part = legacy_part(campaign, run)
            await db.campaign_lists.replace_one({"_id": part["_id"]}, part, upsert=True)
            await db.campaign_recipients.delete_many({"_id": {"$in": part["ids"]}})
            moved += len(run)
    return moved
