"""Attachments (seed §14): streamed uploads into the blob store, size-limited while streaming.

An upload is "ready" only once fully written; an unreferenced upload expires after a day, and
once a message references it, it lives as long as that message.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import filetype
import structlog
from bson import ObjectId

from app.adapters.blobs import CHUNK, BlobStore
from app.adapters.mongo import Mongo
from app.config import Settings
from app.domain.errors import NotFound, PayloadTooLarge, ValidationError
from app.domain.ids import parse_object_id
from app.domain.parsing import attachment_data
from app.domain.viewer import Viewer

log = structlog.get_logger(__name__)

UNREFERENCED_TTL = timedelta(days=1)
SNIFF_BYTES = 8192
_SAFE_DECLARED = re.compile(r"^(text/(plain|csv|calendar)|application/(json|pdf|zip))$")


def clean_filename(name: str | None) -> str:
    """Keep the last path segment, drop control characters, bound the length."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = (
        "".join(
            ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C"
        )
        .strip()
        .lstrip(".")
    )
    return name[:200] or "attachment"


def sniff_content_type(head: bytes, filename: str, declared: str | None) -> str:
    """What the bytes are, not what the client claims (a claimed image/png that is HTML is not)."""
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    declared = (declared or "").split(";")[0].strip().lower()
    if declared and _SAFE_DECLARED.match(declared):
        return declared
    guessed = mimetypes.guess_type(filename)[0]
    looks_text = bool(head) and b"\x00" not in head[:SNIFF_BYTES]
    if guessed and guessed.startswith("text/") and looks_text and guessed not in ("text/html",):
        return guessed
    return (
        "text/plain" if looks_text and not head.lstrip()[:1] == b"<" else "application/octet-stream"
    )


@dataclass
class Upload:
    """One upload in progress; ``write`` raises PayloadTooLarge past the limit and aborts."""

    service: AttachmentService
    viewer: Viewer
    filename: str
    declared_type: str | None
    stream: Any
    limit: int
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    digest: Any = field(default_factory=hashlib.sha256)

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            await self.abort()
            raise PayloadTooLarge(f"attachment larger than {self.limit // (1024 * 1024)} MB")
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
        self.digest.update(chunk)
        await self.stream.write(chunk)

    async def abort(self) -> None:
        await self.stream.abort()  # removes the chunks already written: nothing left behind

    async def finish(self) -> dict[str, Any]:
        await self.stream.close()
        now = datetime.now(UTC)
        doc = {
            "_id": ObjectId(),
            "owner_user_id": self.viewer.user_id,
            "blob_id": self.stream._id,
            "filename": self.filename,
            "content_type": sniff_content_type(bytes(self.head), self.filename, self.declared_type),
            "declared_content_type": self.declared_type,
            "size": self.size,
            "sha256": self.digest.hexdigest(),
            "status": "ready",
            "scan_status": "not_scanned",
            "message_ids": [],
            "created_at": now,
            "expires_at": now + UNREFERENCED_TTL,
        }
        await self.service.db.attachments.insert_one(doc)
        return doc


class AttachmentService:
    def __init__(self, mongo: Mongo, blobs: BlobStore, settings: Settings) -> None:
        self.db = mongo.db
        self.blobs = blobs
        self.settings = settings

    def begin_upload(
        self, viewer: Viewer, filename: str | None, declared_type: str | None
    ) -> Upload:
        name = clean_filename(filename)
        stream = self.blobs.open_upload(name, {"owner": str(viewer.user_id), "kind": "attachment"})
        return Upload(self, viewer, name, declared_type, stream, self.settings.max_attachment_bytes)

    async def upload_bytes(
        self, viewer: Viewer, filename: str, content_type: str | None, data: bytes
    ) -> dict[str, Any]:
        upload = self.begin_upload(viewer, filename, content_type)
        await upload.write(data)
        return await upload.finish()

    async def owned_ready(
        self, viewer: Viewer, ids: list[str], field: str = "attachmentIds"
    ) -> list[dict[str, Any]]:
        """The viewer's finished uploads, in the order given; anything else is a clear error."""
        oids = []
        for i, raw in enumerate(ids):
            oid = parse_object_id(raw)
            if oid is None:
                raise ValidationError.on(f"{field}[{i}]", f"no attachment {raw}")
            oids.append(oid)
        docs = {
            d["_id"]: d
            for d in await self.db.attachments.find(
                {"_id": {"$in": oids}, "owner_user_id": viewer.user_id}
            ).to_list()
        }
        out = []
        for i, oid in enumerate(oids):
            doc = docs.get(oid)
            if doc is None:
                raise ValidationError.on(f"{field}[{i}]", f"no attachment {oid}")
            if doc.get("status") != "ready":
                raise ValidationError.on(
                    f"{field}[{i}]", f"attachment {oid} has not finished uploading"
                )
            if doc.get("scan_status") == "infected":
                raise ValidationError.on(f"{field}[{i}]", f"attachment {oid} failed the virus scan")
            out.append(doc)
        return out

    async def for_download(self, viewer: Viewer, attachment_id: str) -> dict[str, Any]:
        """An attachment the viewer uploaded, or one on a message in the viewer's mailbox."""
        oid = parse_object_id(attachment_id)
        doc = await self.db.attachments.find_one({"_id": oid}) if oid else None
        if doc is None:
            raise NotFound("no such attachment")
        if doc.get("owner_user_id") == viewer.user_id:
            return doc
        visible = await self.db.mailbox_items.count_documents(
            {"user_id": viewer.user_id, "message_id": {"$in": doc.get("message_ids", [])}}, limit=1
        )
        if not visible:
            raise NotFound("no such attachment")
        return doc

    def content_disposition(self, filename: str) -> str:
        from urllib.parse import quote

        ascii_name = filename.encode("ascii", "ignore").decode().replace('"', "").replace("\\", "")
        ascii_name = re.sub(r"[^\w.\- ()\[\]]", "_", ascii_name) or "attachment"
        return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"

    async def content(self, download: dict[str, Any]) -> AsyncIterator[bytes]:
        """The bytes of an attachment ``for_download`` authorised, streamed in chunks.

        An upload (and what was sent with it) is a blob of its own, and so is a received
        attachment over 8 MiB. A smaller received one lives only in its message's raw MIME
        (``in_raw``: the raw blob, where the
        message as received starts in it, after our trace headers, and which of its parsed
        attachments it is): it is decoded from there, with the same parse that listed it, and
        checked against the SHA-256 taken when it arrived before a byte is sent."""
        if download.get("blob_id"):
            return self.blobs.stream(download["blob_id"])
        where = download["in_raw"]
        stored = await self.blobs.get(where["blob_id"])  # NotFound once the message is gone
        data = await asyncio.to_thread(attachment_data, stored[where["offset"] :], where["index"])
        if data is None or hashlib.sha256(data).hexdigest() != download.get("sha256"):
            log.error("attachment not found in its message", attachment=str(download["_id"]))
            raise NotFound("the attachment's content could not be read from its message")
        return _chunks(data)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
