"""The stored form of a spam verdict (``SpamVerdict.as_doc``: MailboxItem.spam)."""

from __future__ import annotations

from dataclasses import asdict, fields

from app.adapters.spam_scorer import SpamVerdict


def test_as_doc_is_asdict_with_its_own_list() -> None:
    verdict = SpamVerdict(False, 0.72, "v3", ["word:free", "pair:click_here"], probable=True)
    doc = verdict.as_doc()
    assert doc == asdict(verdict)
    assert list(doc) == [f.name for f in fields(SpamVerdict)]  # every field, in order
    assert doc["reasons"] is not verdict.reasons  # a copy, as asdict makes
