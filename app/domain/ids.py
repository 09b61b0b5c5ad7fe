"""Client-supplied ids: a malformed id behaves exactly like one that does not exist.

Blocks of ids (``block_id``, ``in_block``, ``block_of``): ids made for the items of one document
— a campaign list part's recipients (services/campaigns/lists.py), a bucket's events
(services/events/buckets.py). The block's id is the time, five fresh random bytes and three
zero bytes, and item i's id is the block's plus i: no other id sorts between a block's items
(any other id differs in the random bytes), and the block holding an id is that id with its
last three bytes zeroed, one key of the ``_id`` index.
"""

from __future__ import annotations

import os
import struct
from datetime import datetime

from bson import ObjectId
from bson.errors import InvalidId


def parse_object_id(value: object) -> ObjectId | None:
    if isinstance(value, ObjectId):
        return value
    if not isinstance(value, str) or len(value) != 24:
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


BLOCK_LOW = 3  # bytes of an id in a block that number it within the block


def id_at(at: datetime) -> ObjectId:
    """A fresh id whose time is ``at`` (``ObjectId.from_datetime`` is the same for every call
    within a second: a range bound, not an id to write)."""
    return ObjectId(struct.pack(">I", int(at.timestamp())) + os.urandom(8))


def block_id(at: datetime) -> ObjectId:
    """A new block's id (its item 0's): the time, five random bytes, a zero item number."""
    return in_block(id_at(at), 0)


def in_block(block: ObjectId, i: int) -> ObjectId:
    """The id of item ``i`` of ``block``."""
    return ObjectId(block.binary[:-BLOCK_LOW] + i.to_bytes(BLOCK_LOW, "big"))


def block_of(item: ObjectId) -> tuple[ObjectId, int]:
    """(the block, the item's number in it) of an id made in a block."""
    low = item.binary[-BLOCK_LOW:]
    return ObjectId(item.binary[:-BLOCK_LOW] + bytes(BLOCK_LOW)), int.from_bytes(low, "big")
