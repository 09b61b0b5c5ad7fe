"""Blob store on GridFS (attachments, raw MIME, large bodies).

Services see ``BlobStore``; object storage would be a second implementation of the same
methods (DESIGN.md §8).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.asynchronous.database import AsyncDatabase

from app.domain.errors import NotFound

CHUNK = 255 * 1024


class BlobStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], bucket: str = "blobs") -> None:
        self._bucket = AsyncGridFSBucket(db, bucket_name=bucket, chunk_size_bytes=CHUNK)

    async def put(
        self,
        data: bytes,
        *,
        filename: str = "blob",
        metadata: dict[str, Any] | None = None,
        session: Any = None,
    ) -> ObjectId:
        return await self._bucket.upload_from_stream(
            filename, data, metadata=metadata or {}, session=session
        )

    def open_upload(self, filename: str, metadata: dict[str, Any] | None = None) -> Any:
        """A streaming upload; call ``write`` per chunk, then ``close`` (or ``abort``)."""
        return self._bucket.open_upload_stream(filename, metadata=metadata or {})

    async def get(self, blob_id: ObjectId) -> bytes:
        try:
            stream = await self._bucket.open_download_stream(blob_id)
        except NoFile as e:
            raise NotFound("blob not found") from e
        return await stream.read()

    async def stream(self, blob_id: ObjectId) -> AsyncIterator[bytes]:
        try:
            stream = await self._bucket.open_download_stream(blob_id)
        except NoFile as e:
            raise NotFound("blob not found") from e
        while chunk := await stream.readchunk():
            yield chunk

    async def open_stream(self, blob_id: ObjectId) -> tuple[int, AsyncIterator[bytes]]:
        """(length, chunks): a missing blob is NotFound now, before a response has started."""
        try:
            stream = await self._bucket.open_download_stream(blob_id)
        except NoFile as e:
            raise NotFound("blob not found") from e

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await stream.readchunk():
                yield chunk

        return int(stream.length), chunks()

    async def delete(self, blob_id: ObjectId) -> None:
        try:
            await self._bucket.delete(blob_id)
        except NoFile:
            pass  # already gone: deleting is idempotent
