"""Many blobs in one or two queries, read or written as GridFS documents (docs/overrides.md).

Reading: the delivery hot path reads the raw MIME of a whole batch. ``BlobStore.get`` costs two
round trips per blob (files, then chunks); here the chunks of every requested blob come back in
one sorted query over GridFS's own (files_id, n) index.

Writing: the inbound group commit stores the raw messages of a batch inside its transaction,
many blobs per ``insert_many`` (``gridfs_documents``), where ``BlobStore.put`` would be two
writes per blob outside it.

Both follow the GridFS spec's collection layout that ``BlobStore`` writes (bucket "blobs", its
chunk size); tests/integration/test_blob_batches.py fails if PyMongo's GridFS stops reading
what we write or writes something else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import Binary, ObjectId
from pymongo.asynchronous.database import AsyncDatabase

BUCKET = "blobs"
CHUNK = 255 * 1024
INLINE_FIELD = "inline_data"  # a files document's own copy of a blob of at most CHUNK bytes


async def read_blobs(
    db: AsyncDatabase[dict[str, Any]],
    blob_ids: list[ObjectId],
    bucket: str = "blobs",
    lengths: Mapping[ObjectId, int | None] | None = None,
) -> dict[ObjectId, bytes]:
    """Blob id → content for the ids that exist (complete files only).

    ``lengths``: the sizes the caller already knows (a message document records its raw
    size). A blob known to be larger than a chunk is read from its chunks without the files
    query; one of at most a chunk is most likely inline (every batched writer and sendEmail
    write small blobs so), which the files query answers alone. A blob whose chunks do not add
    up to the known size is read the careful way (its files document decides), so a wrong
    hint costs a query, never a wrong or partial blob."""
    if not blob_ids:
        return {}
    ids = list(dict.fromkeys(blob_ids))
    chunked_known = {
        i: n for i in ids if lengths and (n := lengths.get(i)) is not None and n > CHUNK
    }
    out = await _read_chunks(db, bucket, chunked_known) if chunked_known else {}
    rest = [i for i in ids if i not in out]
    if rest:
        files = (
            await db[f"{bucket}.files"]
            .find({"_id": {"$in": rest}}, {"length": 1, INLINE_FIELD: 1})
            .to_list()
        )
        # A blob written inline (``BlobStore``'s one-document form) has no chunks to read.
        out.update({f["_id"]: bytes(f[INLINE_FIELD]) for f in files if INLINE_FIELD in f})
        chunked = {f["_id"]: int(f["length"]) for f in files if INLINE_FIELD not in f}
        if chunked:
            out.update(await _read_chunks(db, bucket, chunked))
    return out


async def _read_chunks(
    db: AsyncDatabase[dict[str, Any]], bucket: str, lengths: dict[ObjectId, int]
) -> dict[ObjectId, bytes]:
    parts: dict[ObjectId, list[bytes]] = {i: [] for i in lengths}
    cursor = db[f"{bucket}.chunks"].find(
        {"files_id": {"$in": list(lengths)}}, {"files_id": 1, "n": 1, "data": 1}
    )
    for chunk in await cursor.sort([("files_id", 1), ("n", 1)]).to_list():
        parts[chunk["files_id"]].append(bytes(chunk["data"]))
    out = {}
    for blob_id, chunks in parts.items():
        data = b"".join(chunks)
        if len(data) == lengths[blob_id]:  # a partial upload is not a blob yet
            out[blob_id] = data
    return out


async def blob_lengths(
    db: AsyncDatabase[dict[str, Any]], blob_ids: list[ObjectId], bucket: str = "blobs"
) -> dict[ObjectId, int]:
    """Blob id → size in bytes, from the GridFS files documents only (no chunk is read)."""
    if not blob_ids:
        return {}
    files = (
        await db[f"{bucket}.files"]
        .find({"_id": {"$in": list(dict.fromkeys(blob_ids))}}, {"length": 1})
        .to_list()
    )
    return {f["_id"]: int(f["length"]) for f in files}


def gridfs_documents(
    blob_id: ObjectId, data: bytes, filename: str, metadata: dict[str, Any], now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``<bucket>.files`` document and the ``<bucket>.chunks`` documents GridFS would write
    for ``data`` (no chunk for an empty blob), for a caller that inserts them itself.

    A blob of at most one chunk (the raw MIME of most mail) goes inline, as ``BlobStore`` reads
    it: its bytes in the files document and no chunk — one document written instead of two.
    """
    file_doc: dict[str, Any] = {
        "_id": blob_id,
        "length": len(data),
        "chunkSize": CHUNK,
        "uploadDate": now,
        "filename": filename,
        "metadata": metadata,
    }
    if len(data) <= CHUNK:
        file_doc[INLINE_FIELD] = Binary(data)
        return file_doc, []
    chunks = [
        {
            "_id": ObjectId(),
            "files_id": blob_id,
            "n": n,
            "data": Binary(data[start : start + CHUNK]),
        }
        for n, start in enumerate(range(0, len(data), CHUNK))
    ]
    return file_doc, chunks


async def write_blobs(
    db: AsyncDatabase[dict[str, Any]],
    items: Sequence[tuple[bytes, str, dict[str, Any]]],
    *,
    ids: Sequence[ObjectId] | None = None,
    bucket: str = BUCKET,
    session: Any = None,
) -> list[ObjectId]:
    """Store (data, filename, metadata) blobs with two inserts in all (``gridfs_documents``):
    the campaign batch sender and ``sendEmail`` write raw MIME inside their transactions, so the
    blobs commit with the messages that name them, or not at all. ``ids``: the ids to store
    them under, when the caller named them in those messages already (new ones otherwise).

    It reads nothing first (``BlobStore.put`` is this for one blob): GridFS's own upload asks
    whether its collections are empty (one unfiltered ``find_one`` on each) to create its
    indexes, which SecantusDB answers by reading the whole collection."""
    if not items:
        return []
    now = datetime.now(UTC)
    files, chunks = [], []
    ids = list(ids) if ids is not None else [ObjectId() for _ in items]
    for blob_id, (data, filename, metadata) in zip(ids, items, strict=True):
        file_doc, parts = gridfs_documents(blob_id, data, filename, metadata, now)
        files.append(file_doc)
        chunks.extend(parts)
    await db[f"{bucket}.files"].insert_many(files, session=session)
    if chunks:
        await db[f"{bucket}.chunks"].insert_many(chunks, session=session)
    return ids
