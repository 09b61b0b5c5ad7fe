"""Many blobs in two queries: the delivery hot path reads the raw MIME of a whole batch.

``BlobStore.get`` costs two round trips per blob (files, then chunks). Here the chunks of every
requested blob come back in one sorted query over GridFS's own (files_id, n) index, following
the GridFS spec's collection layout that ``BlobStore`` writes (bucket "blobs").
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase


async def read_blobs(
    db: AsyncDatabase[dict[str, Any]], blob_ids: list[ObjectId], bucket: str = "blobs"
) -> dict[ObjectId, bytes]:
    """Blob id → content for the ids that exist (complete files only)."""
    if not blob_ids:
        return {}
    ids = list(dict.fromkeys(blob_ids))
    files = await db[f"{bucket}.files"].find({"_id": {"$in": ids}}, {"length": 1}).to_list()
    lengths = {f["_id"]: int(f["length"]) for f in files}
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
