"""What the search index stores for a mailbox item (no server: the document is plain data)."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from app.services.search.indexing import search_document

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ALICE = ObjectId()


def test_the_indexed_flag_is_the_stored_verdicts():
    flagged = {"is_spam": False, "score": 0.8, "probable": True}
    item = {
        "_id": ObjectId(),
        "user_id": ALICE,
        "folder": "INBOX",
        "received_at": NOW,
        "spam": flagged,
    }
    assert search_document(item, {}, "", body_chars=100)["probable_spam"] is True
    item["spam"] = {"is_spam": False, "score": 0.1}  # stored before the flag existed
    assert search_document(item, {}, "", body_chars=100)["probable_spam"] is False
