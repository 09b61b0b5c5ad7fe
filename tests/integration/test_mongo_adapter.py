from datetime import UTC, datetime

import pytest

from app.adapters.blobs import BlobStore
from app.adapters.indexes import INDEXES
from app.domain.errors import NotFound


async def test_every_declared_index_exists_after_startup(mongo):
    for index in INDEXES:
        info = await mongo.db[index.collection].index_information()
        keys = [list(v["key"]) for v in info.values()]
        wanted = [tuple(k) for k in index.keys]
        assert [tuple(k) for k in wanted] in [[tuple(k) for k in ks] for ks in keys], index


async def test_unique_view_per_user_message_and_role(mongo):
    items = mongo.db.mailbox_items
    doc = {
        "user_id": "u1",
        "message_id": "m1",
        "role": "received",
        "received_at": datetime.now(UTC),
    }
    await items.insert_one(dict(doc))
    from pymongo.errors import DuplicateKeyError

    with pytest.raises(DuplicateKeyError):
        await items.insert_one(dict(doc))


async def test_blob_round_trip_and_delete(mongo):
    blobs = BlobStore(mongo.db)
    data = bytes(range(256)) * 3000
    blob_id = await blobs.put(data, filename="x.bin")
    assert await blobs.get(blob_id) == data
    chunks = [c async for c in blobs.stream(blob_id)]
    assert b"".join(chunks) == data
    await blobs.delete(blob_id)
    with pytest.raises(NotFound):
        await blobs.get(blob_id)
