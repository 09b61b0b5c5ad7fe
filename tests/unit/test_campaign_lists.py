"""The parts a campaign's recipient list is stored in (app/services/campaigns/lists.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from app.domain.campaigns import RecipientRow
from app.services.campaigns import lists
from app.services.campaigns.lists import (
    PART_ROWS,
    locate,
    mark,
    part_id,
    parts_of,
    recipient_id,
    recipients_of,
    state_of,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _rows(n: int, prefix: str = "r") -> list[RecipientRow]:
    return [
        RecipientRow(f"{prefix}{i}@Ex.test", f"{prefix}{i}@ex.test", {"n": i}) for i in range(n)
    ]


def test_a_recipient_id_names_its_part_and_place() -> None:
    part = part_id(NOW)
    assert part.binary[-3:] == bytes(3)
    assert part.generation_time == NOW
    for i in (0, 1, 499, 2**24 - 1):
        rid = recipient_id(part, i)
        assert locate(rid) == (part, i)
        assert rid.generation_time == NOW
    # parts made in the same second differ in their random bytes, not only their numbers
    ids = {part_id(NOW) for _ in range(1000)}
    assert len(ids) == 1000
    assert len({recipient_id(p, 0) for p in ids} | {recipient_id(p, 1) for p in ids}) == 2000


def test_an_add_is_split_into_parts_numbered_in_order() -> None:
    cid = ObjectId()
    parts = parts_of(cid, 40, _rows(PART_ROWS * 2 + 3), NOW)
    assert [(p["seq"], p["end"], p["n"]) for p in parts] == [
        (40, 40 + PART_ROWS, PART_ROWS),
        (40 + PART_ROWS, 40 + 2 * PART_ROWS, PART_ROWS),
        (40 + 2 * PART_ROWS, 43 + 2 * PART_ROWS, 3),
    ]
    assert all(p["campaign_id"] == cid for p in parts)
    assert parts[2]["keys"] == [f"r{i}@ex.test" for i in range(2 * PART_ROWS, 2 * PART_ROWS + 3)]
    back = recipients_of(parts[1])
    assert [r.seq for r in back] == list(range(40 + PART_ROWS, 40 + 2 * PART_ROWS))
    first = back[0]
    assert (first.email, first.key, first.variables) == (
        f"r{PART_ROWS}@Ex.test",
        f"r{PART_ROWS}@ex.test",
        {"n": PART_ROWS},
    )
    assert locate(first.id) == (parts[1]["_id"], 0)
    assert first.state is None and first.links == () and first.unsubscribed is None


def test_a_part_is_cut_by_size_too() -> None:
    big = [RecipientRow(f"b{i}@ex.test", f"b{i}@ex.test", {"x": "y" * 300_000}) for i in range(30)]
    parts = parts_of(ObjectId(), 0, big, NOW)
    assert len(parts) > 1
    assert all(len(p["rows"]) < lists.PART_BYTES + 400_000 for p in parts)
    assert sum(p["n"] for p in parts) == 30
    assert [p["seq"] for p in parts] == [0] + [p["end"] for p in parts[:-1]]


def test_a_state_follows_from_the_floor_unless_written() -> None:
    (part,) = parts_of(ObjectId(), 0, _rows(4), NOW)
    part["states"] = {"1": "suppressed", "3": "failed"}
    rs = recipients_of(part)
    sending = {"status": "sending", "pending_floor": 2}
    assert [state_of(r, sending) for r in rs] == ["queued", "suppressed", "pending", "failed"]
    canceled = {"status": "canceled", "pending_floor": 1}
    assert [state_of(r, canceled) for r in rs] == ["queued", "suppressed", "canceled", "failed"]
    assert [state_of(r, {"status": "sending"}) for r in rs][0] == "pending"  # no floor yet


def test_marks_are_one_update_a_part() -> None:
    parts = parts_of(ObjectId(), 0, _rows(PART_ROWS + 2), NOW)
    a, b = recipients_of(parts[0]), recipients_of(parts[1])
    updates = mark(
        [
            (a[3], {"states": "suppressed"}),
            (a[7], {"states": "failed", "errors": "no subject"}),
            (b[1], {"links": ["https://x.test/"]}),
        ]
    )
    docs = [(u._filter, u._doc) for u in updates]
    assert docs == [
        (
            {"_id": parts[0]["_id"]},
            {"$set": {"states.3": "suppressed", "states.7": "failed", "errors.7": "no subject"}},
        ),
        ({"_id": parts[1]["_id"]}, {"$set": {"links.1": ["https://x.test/"]}}),
    ]
