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


async def test_orphan_sweep_moves_on_and_eventually_visits_every_message(mongo):
    from bson import ObjectId

    from app.services.mailbox.content import ContentService

    blobs = BlobStore(mongo.db)
    content = ContentService(mongo, blobs)
    kept = [ObjectId() for _ in range(5)]
    orphans = [ObjectId() for _ in range(5)]
    for mid in sorted(kept + orphans):
        await mongo.db.messages.insert_one({"_id": mid, "status": "sent"})
    for mid in kept:
        await mongo.db.mailbox_items.insert_one(
            {
                "user_id": "u",
                "message_id": mid,
                "role": "received",
                "received_at": datetime.now(UTC),
            }
        )
    removed = 0
    # ids are increasing: the 5 kept messages come first, so a sweep that restarted from the
    # beginning every run would only ever look at kept messages
    for _ in range(4):
        removed += await content.sweep_orphans(limit=3)
    assert removed == 5
    assert {d["_id"] async for d in mongo.db.messages.find({})} == set(kept)


async def test_a_retired_index_is_dropped_at_startup_and_stays_away(mongo):
    from app.adapters.indexes import RETIRED, ensure_indexes

    for retired in RETIRED:
        collection = mongo.db[retired.collection]
        await collection.create_index(retired.keys)  # what an earlier version made
        assert retired.name in await collection.index_information()
    await ensure_indexes(mongo.db)
    await ensure_indexes(mongo.db)  # nothing left to drop: no error
    for retired in RETIRED:
        assert retired.name not in await mongo.db[retired.collection].index_information()
        wanted = {
            tuple(tuple(k) for k in i.keys) for i in INDEXES if i.collection == retired.collection
        }
        assert tuple(tuple(k) for k in retired.keys) not in wanted, retired


async def test_update_and_read_gives_what_find_one_and_update_gives_inside_a_transaction(mongo):
    """The change log's state, draft saves, unscheduling and IMAP syncs update and read back a
    document in two round trips instead of one ``findAndModify`` (which scans the whole
    collection on SecantusDB): the same document after the update, None when nothing matched,
    the upserted document on an upsert; outside a transaction it refuses."""
    from bson import ObjectId
    from pymongo import ReturnDocument

    from app.adapters.mongo import in_transaction, update_and_read

    coll = mongo.db.update_and_read_probe
    await coll.create_index([("owner", 1), ("key", 1)], unique=True)
    first, second = ObjectId(), ObjectId()
    await coll.insert_many(
        [
            {"_id": first, "owner": "a", "key": "x", "n": 1},
            {"_id": second, "owner": "a", "key": "y", "n": 5},
        ]
    )

    async def both(session):
        ours = await update_and_read(
            coll, {"_id": first, "owner": "a"}, {"$inc": {"n": 1}}, session, {"n": 1}
        )
        theirs = await coll.find_one_and_update(
            {"_id": second, "owner": "a"},
            {"$inc": {"n": 1}},
            projection={"n": 1},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        missing = await update_and_read(coll, {"_id": ObjectId()}, {"$inc": {"n": 1}}, session)
        by_key = await update_and_read(
            coll, {"owner": "a", "key": "y"}, {"$set": {"seen": True}}, session
        )
        upserted = await update_and_read(
            coll,
            {"owner": "b", "key": "z"},
            {"$inc": {"n": 1}, "$setOnInsert": {"created": True}},
            session,
            upsert=True,
        )
        return ours, theirs, missing, by_key, upserted

    ours, theirs, missing, by_key, upserted = await in_transaction(mongo, both)
    assert ours == {"_id": first, "n": 2}
    assert theirs == {"_id": second, "n": 6}
    assert missing is None
    assert by_key == {"_id": second, "owner": "a", "key": "y", "n": 6, "seen": True}
    assert upserted is not None and upserted["owner"] == "b" and upserted["created"] is True
    assert await coll.find_one({"owner": "b"}) == upserted
    with pytest.raises(ValueError, match="inside a transaction"):
        await update_and_read(coll, {"_id": first}, {"$inc": {"n": 1}}, None)


async def test_update_and_read_outside_a_transaction_when_the_caller_asks_for_it(mongo):
    """``outside_transaction``: the update, then the document as it is (None if nothing
    matched), as the campaign sender's lease and batch log use it."""
    from bson import ObjectId

    from app.adapters.mongo import update_and_read

    coll = mongo.db.update_and_read_outside_probe
    doc_id = ObjectId()
    await coll.insert_one({"_id": doc_id, "n": 1, "lease": None})
    query = {"_id": doc_id, "lease": {"$not": {"$gt": 5}}}
    after = await update_and_read(
        coll, query, {"$set": {"lease": 9}}, None, outside_transaction=True
    )
    assert after == {"_id": doc_id, "n": 1, "lease": 9}
    assert (
        await update_and_read(coll, query, {"$set": {"lease": 10}}, None, outside_transaction=True)
        is None
    )  # the lease is taken: nothing matched, nothing changed
    assert await coll.find_one({"_id": doc_id}) == after


async def test_a_write_conflict_waits_for_the_other_transaction_instead_of_failing(mongo):
    """A transaction that meets another's uncommitted write is retried after a short wait
    (``RETRY_DELAYS``): attempts straight after each other all met the same write again and
    the request was refused as busy."""
    import asyncio

    from app.adapters.mongo import in_transaction

    coll = mongo.db.conflict_probe
    await coll.insert_one({"_id": 1, "n": 0})
    holding = asyncio.Event()

    async def slow(session):
        await coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        holding.set()
        await asyncio.sleep(0.06)  # less than the least the retries wait in all (0.105 s)

    attempts: list[int] = []

    async def quick(session):
        attempts.append(1)
        await coll.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=session)

    first = asyncio.create_task(in_transaction(mongo, slow, attempts=1))
    await holding.wait()
    await in_transaction(mongo, quick)
    await first
    assert (await coll.find_one({"_id": 1}))["n"] == 11
    assert len(attempts) >= 2, "the conflict was never met: the test proves nothing"


async def test_a_collection_is_made_once_and_keeps_the_databases_options(mongo):
    items = mongo.db.mailbox_items
    assert mongo.db.mailbox_items is items  # PyMongo's own __getattr__ makes a new one each time
    assert items.write_concern == mongo.db.write_concern
    assert items.write_concern.document == {"w": "majority", "j": True}
    assert items.codec_options.tz_aware
    await items.insert_one({"user_id": "u1", "message_id": "m1", "role": "received"})
    assert await mongo.db.mailbox_items.count_documents({"user_id": "u1"}) == 1
    with pytest.raises(AttributeError):
        mongo.db._private  # noqa: B018 — PyMongo's refusal of "_" names is kept
