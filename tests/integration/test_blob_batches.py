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
