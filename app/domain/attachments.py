"""A message document's entry for one of its attachments."""

from __future__ import annotations

from typing import Any

# what a reader of the message shows of an attachment, and where its bytes are (``blob_id``,
# when it has a blob of its own; a received one may live in the raw MIME instead)
REF_FIELDS = ("filename", "content_type", "size", "sha256", "blob_id", "content_id", "inline")


def attachment_ref(doc: dict[str, Any]) -> dict[str, Any]:
    """The message document's ``attachments`` entry for an ``attachments`` document: its id
    and the fields of ``REF_FIELDS`` it has (an upload has no ``content_id``/``inline``)."""
    return {"id": doc["_id"], **{k: doc[k] for k in REF_FIELDS if k in doc}}
