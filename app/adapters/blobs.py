"""Blob store on GridFS (attachments, raw MIME, large bodies).

Services see ``BlobStore``; object storage would be a second implementation of the same
methods (DESIGN.md §8).

A blob of at most one chunk may be written *inline*: its bytes in its files document
(``INLINE_FIELD``) and no chunk document — one document instead of two, which the inbound
group commit uses for the raw MIME of most messages. Every read here (and
``blob_batches.read_blobs``) takes either form; ``delete`` removes both alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from bson import ObjectId
from gridfs import AsyncGridFSBucket, AsyncGridOut
from gridfs.errors import NoFile
from pymongo.asynchronous.database import AsyncDatabase

from app.adapters.blob_batches import CHUNK, INLINE_FIELD, write_blobs
from app.domain.errors import NotFound

__all__ = ["CHUNK", "INLINE_FIELD", "BlobStore"]


class BlobStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], bucket: str = "blobs") -> None:
        self._db = db
        self._bucket_name = bucket
        self._bucket = AsyncGridFSBucket(db, bucket_name=bucket, chunk_size_bytes=CHUNK)

    async def put(
        self,
        data: bytes,
        *,
        filename: str = "blob",
        metadata: dict[str, Any] | None = None,
        session: Any = None,
    ) -> ObjectId:
        """Store ``data`` as one blob (inline when it fits a chunk), written as GridFS documents
        by ``write_blobs``: GridFS's own upload first asks whether its collections are empty
        (an unfiltered ``find_one`` on each, to create indexes that ensure_indexes creates
        anyway), which SecantusDB answers by reading the whole collection — every upload got
        slower as the store grew."""
        [blob_id] = await write_blobs(
            self._db,
            [(data, filename, metadata or {})],
            bucket=self._bucket_name,
            session=session,
        )
        return blob_id

    async def put_many(
        self,
        blobs: Sequence[tuple[bytes, str, dict[str, Any]]],
        *,
        ids: Sequence[ObjectId],
        session: Any = None,
    ) -> None:
        """Store (data, filename, metadata) blobs under ``ids`` with two inserts in all (one
        when every blob is inline): a group commit's raw MIME, inside its transaction."""
        await write_blobs(self._db, blobs, ids=ids, bucket=self._bucket_name, session=session)

    def open_upload(self, filename: str, metadata: dict[str, Any] | None = None) -> Any:
        """A streaming upload; call ``write`` per chunk, then ``close`` (or ``abort``)."""
        return self._bucket.open_upload_stream(filename, metadata=metadata or {})

    async def _open(self, blob_id: ObjectId) -> tuple[AsyncGridOut, bytes | None]:
        """The download stream (its files document read) and the inline bytes, if inline."""
        try:
            stream = await self._bucket.open_download_stream(blob_id)
        except NoFile as e:
            raise NotFound("blob not found") from e
        inline = getattr(stream, INLINE_FIELD, None)  # a files document field, if present
        return stream, (bytes(inline) if inline is not None else None)

    async def get(self, blob_id: ObjectId) -> bytes:
        stream, inline = await self._open(blob_id)
        return inline if inline is not None else await stream.read()

    async def stream(self, blob_id: ObjectId) -> AsyncIterator[bytes]:
        stream, inline = await self._open(blob_id)
        if inline is not None:
            if inline:
                yield inline
            return
        while chunk := await stream.readchunk():
            yield chunk

    async def open_stream(self, blob_id: ObjectId) -> tuple[int, AsyncIterator[bytes]]:
        """(length, chunks): a missing blob is NotFound now, before a response has started."""
        stream, inline = await self._open(blob_id)

        async def chunks() -> AsyncIterator[bytes]:
            if inline is not None:
                if inline:
                    yield inline
                return
            while chunk := await stream.readchunk():
                yield chunk

        return int(stream.length), chunks()

    async def delete(self, blob_id: ObjectId) -> None:
        try:
            await self._bucket.delete(blob_id)
        except NoFile:
            pass  # already gone: deleting is idempotent
