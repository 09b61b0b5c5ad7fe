"""Many blobs in one or two queries: the delivery hot path reads the raw MIME of a whole batch,
and the campaign batch sender writes one (``write_blobs``).

``BlobStore.get`` costs two round trips per blob (files, then chunks). Here the chunks of every
requested blob come back in one sorted query over GridFS's own (files_id, n) index, following
the GridFS spec's collection layout that ``BlobStore`` writes (bucket "blobs").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase


async def read_blobs(
    db: AsyncDatabase[dict[str, Any]],
    blob_ids: list[ObjectId],
    bucket: str = "blobs",
    lengths: Mapping[ObjectId, int | None] | None = None,
) -> dict[ObjectId, bytes]:
    """Blob id → content for the ids that exist (complete files only).

    ``lengths``: the sizes the caller already knows (a message document records its raw
    size), so the files query is skipped for them; a blob whose chunks do not add up to the
    known size is read the careful way (its files document decides), so a wrong hint costs a
    query, never a wrong or partial blob."""
    if not blob_ids:
        return {}
    ids = list(dict.fromkeys(blob_ids))
    known = {i: n for i in ids if lengths and (n := lengths.get(i)) is not None}
    out = await _read_chunks(db, bucket, known) if known else {}
    rest = [i for i in ids if i not in out]
    if rest:
        files = await db[f"{bucket}.files"].find({"_id": {"$in": rest}}, {"length": 1}).to_list()
        out.update(await _read_chunks(db, bucket, {f["_id"]: int(f["length"]) for f in files}))
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


async def write_blobs(
    db: AsyncDatabase[dict[str, Any]],
    items: Sequence[tuple[bytes, str, dict[str, Any]]],
    *,
    chunk_size: int,
    bucket: str = "blobs",
    session: Any = None,
) -> list[ObjectId]:
    """Store (data, filename, metadata) blobs with two inserts in all, GridFS layout (files and
    chunks documents as the GridFS spec writes them, so ``BlobStore`` reads them back).

    GridFS's own upload is a few round trips per blob (and an index check on each): for a
    batch of hundreds of messages that is most of the time. Inside ``session``'s transaction
    the blobs commit with the documents that name them, or not at all."""
    if not items:
        return []
    now = datetime.now(UTC)
    files, chunks, ids = [], [], []
    for data, filename, metadata in items:
        blob_id = ObjectId()
        ids.append(blob_id)
        files.append(
            {
                "_id": blob_id,
                "length": len(data),
                "chunkSize": chunk_size,
                "uploadDate": now,
                "filename": filename,
                "metadata": metadata,
            }
        )
        for n, at in enumerate(range(0, max(len(data), 1), chunk_size)):
            chunks.append({"files_id": blob_id, "n": n, "data": data[at : at + chunk_size]})
    await db[f"{bucket}.files"].insert_many(files, session=session)
    await db[f"{bucket}.chunks"].insert_many(chunks, session=session)
    return ids
