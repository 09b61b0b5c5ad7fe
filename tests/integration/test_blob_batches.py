"""Batch reads of GridFS blobs (the delivery hot path), with and without known sizes."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId
from gridfs import AsyncGridFSBucket

from app.adapters.blob_batches import BUCKET, gridfs_documents, read_blobs, write_blobs
from app.adapters.blobs import CHUNK, BlobStore


def _gridfs(mongo) -> AsyncGridFSBucket:  # type: ignore[no-untyped-def]
    """PyMongo's own GridFS on our bucket (``BlobStore.put`` writes through ``write_blobs``)."""
    return AsyncGridFSBucket(mongo.db, bucket_name=BUCKET, chunk_size_bytes=CHUNK)


async def test_known_sizes_pick_the_likely_form_and_a_wrong_one_falls_back(mongo) -> None:
    """A known size says where to look first (a large blob's chunks, a small one's files
    document, inline or not); whatever the hint, the answer is the blob."""
    blobs = BlobStore(mongo.db)
    small = b"Subject: hi\r\n\r\nhello\r\n"
    large = bytes(range(256)) * (2 * CHUNK // 256 + 7)  # three chunks
    a = await _gridfs(mongo).upload_from_stream("m.eml", small)  # GridFS's: files + a chunk
    b = await blobs.put(large)
    [c] = await write_blobs(mongo.db, [(small + b"inline", "m.eml", {})])  # inline
    want = {a: small, b: large, c: small + b"inline"}
    assert await read_blobs(mongo.db, [a, b, c]) == want
    hinted = await read_blobs(mongo.db, [a, b, c], lengths={i: len(d) for i, d in want.items()})
    assert hinted == want
    # a wrong or missing hint costs a query, never a wrong blob
    wrong = {a: 3, b: None, c: CHUNK + 1}
    assert await read_blobs(mongo.db, [a, b, c], lengths=wrong) == want


async def test_an_unfinished_upload_is_not_a_blob(mongo) -> None:
    whole = b"x" * (CHUNK + 10)
    blob_id = ObjectId()  # one chunk written, no files document: an interrupted upload
    await mongo.db["blobs.chunks"].insert_one({"files_id": blob_id, "n": 0, "data": whole[:CHUNK]})
    assert await read_blobs(mongo.db, [blob_id]) == {}
    assert await read_blobs(mongo.db, [blob_id], lengths={blob_id: len(whole)}) == {}


async def test_documents_written_by_hand_are_a_blob_gridfs_reads(mongo) -> None:
    """The guard of the hand-written GridFS layout (docs/overrides.md): our readers read what
    ``gridfs_documents`` writes, and PyMongo's GridFS writes the same fields itself (small blobs
    are inline, a form of ours that stock GridFS readers do not know)."""
    blobs = BlobStore(mongo.db)
    for data in (b"", b"Subject: hi\r\n\r\nhello\r\n", bytes(range(256)) * (2 * CHUNK // 256 + 7)):
        blob_id = ObjectId()
        file_doc, chunks = gridfs_documents(
            blob_id, data, "m.eml", {"kind": "raw"}, datetime.now(UTC)
        )
        await mongo.db[f"{BUCKET}.files"].insert_one(file_doc)
        if chunks:
            await mongo.db[f"{BUCKET}.chunks"].insert_many(chunks)
        assert await blobs.get(blob_id) == data
        assert await read_blobs(mongo.db, [blob_id]) == {blob_id: data}
    stock = await _gridfs(mongo).upload_from_stream("m.eml", b"x" * 10, metadata={"kind": "raw"})
    by_gridfs = await mongo.db[f"{BUCKET}.files"].find_one({"_id": stock})
    assert set(by_gridfs) == set(file_doc)
    assert by_gridfs["chunkSize"] == file_doc["chunkSize"] == CHUNK


async def test_blobs_written_inline_read_like_chunked_ones(mongo) -> None:
    """A blob of at most one chunk is written as one files document carrying its bytes."""
    from app.adapters.blobs import INLINE_FIELD

    blobs = BlobStore(mongo.db)
    written = {
        "empty": b"",
        "small": b"Subject: hi\r\n\r\nhello\r\n",
        "one chunk": b"x" * CHUNK,
        "two chunks": bytes(range(256)) * (CHUNK // 256 + 3),
    }
    ids = {}
    for name, data in written.items():
        file_doc, chunks = gridfs_documents(ObjectId(), data, name, {}, datetime.now(UTC))
        assert (INLINE_FIELD in file_doc) == (len(data) <= CHUNK)
        await mongo.db[f"{BUCKET}.files"].insert_one(file_doc)
        if chunks:
            await mongo.db[f"{BUCKET}.chunks"].insert_many(chunks)
        ids[name] = file_doc["_id"]
    assert await mongo.db[f"{BUCKET}.chunks"].count_documents({}) == 2  # the two-chunk blob's
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
