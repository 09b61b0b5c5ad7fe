"""Batch reads of GridFS blobs (the delivery hot path), with and without known sizes."""

from __future__ import annotations

from bson import ObjectId

from app.adapters.blob_batches import read_blobs
from app.adapters.blobs import CHUNK, BlobStore


async def test_known_sizes_skip_the_files_query_and_a_wrong_one_falls_back(mongo) -> None:
    blobs = BlobStore(mongo.db)
    small = b"Subject: hi\r\n\r\nhello\r\n"
    large = bytes(range(256)) * (2 * CHUNK // 256 + 7)  # three chunks
    a = await blobs.put(small)
    b = await blobs.put(large)
    assert await read_blobs(mongo.db, [a, b]) == {a: small, b: large}
    hinted = await read_blobs(mongo.db, [a, b], lengths={a: len(small), b: len(large)})
    assert hinted == {a: small, b: large}
    # a wrong or missing hint costs a query, never a wrong blob
    assert await read_blobs(mongo.db, [a, b], lengths={a: 3, b: None}) == {a: small, b: large}


async def test_an_unfinished_upload_is_not_a_blob(mongo) -> None:
    whole = b"x" * (CHUNK + 10)
    blob_id = ObjectId()  # one chunk written, no files document: an interrupted upload
    await mongo.db["blobs.chunks"].insert_one({"files_id": blob_id, "n": 0, "data": whole[:CHUNK]})
    assert await read_blobs(mongo.db, [blob_id]) == {}
    assert await read_blobs(mongo.db, [blob_id], lengths={blob_id: len(whole)}) == {}


async def test_blobs_written_inline_read_like_chunked_ones(mongo) -> None:
    """The inbound group commit writes blobs of at most one chunk as one files document."""
    from datetime import UTC, datetime

    from app.services.inbound.group_commit import BlobWrite, gridfs_documents

    blobs = BlobStore(mongo.db)
    now = datetime.now(UTC)
    written = {
        "empty": b"",
        "small": b"Subject: hi\r\n\r\nhello\r\n",
        "one chunk": b"x" * CHUNK,
        "two chunks": bytes(range(256)) * (CHUNK // 256 + 3),
    }
    ids = {}
    for name, data in written.items():
        file_doc, chunks = gridfs_documents(BlobWrite(ObjectId(), data, name, {}), now)
        await mongo.db["blobs.files"].insert_one(file_doc)
        if chunks:
            await mongo.db["blobs.chunks"].insert_many(chunks)
        ids[name] = file_doc["_id"]
    assert await mongo.db["blobs.chunks"].count_documents({}) == 2  # only the two-chunk blob's
    for name, data in written.items():
        blob_id = ids[name]
        assert await blobs.get(blob_id) == data, name
        assert b"".join([c async for c in blobs.stream(blob_id)]) == data, name
        length, chunks = await blobs.open_stream(blob_id)
        assert length == len(data) and b"".join([c async for c in chunks]) == data, name
    by_id = {ids[name]: data for name, data in written.items()}
    assert await read_blobs(mongo.db, list(by_id)) == by_id
    hinted = await read_blobs(mongo.db, list(by_id), lengths={i: len(d) for i, d in by_id.items()})
    assert hinted == by_id
    await blobs.delete(ids["small"])
    assert await read_blobs(mongo.db, [ids["small"]]) == {}
