"""The partial-update rule of drafts (CONTRACT.md "Drafts: partial updates"), as a pure function."""

import pytest

from app.services.sending.compose import DRAFT_FIELDS, Composition, patch_draft

SAVED = Composition(
    to=["bob@remote.test"], cc=["carol@remote.test"], subject="Plan", text="body", html="<p>b</p>"
)


def test_only_the_fields_present_change():
    patched = patch_draft(SAVED, Composition(subject="Plan B"), frozenset({"subject"}))
    assert patched == Composition(
        to=["bob@remote.test"],
        cc=["carol@remote.test"],
        subject="Plan B",
        text="body",
        html="<p>b</p>",
    )


def test_a_present_empty_value_clears_the_field():
    patched = patch_draft(SAVED, Composition(), frozenset({"html", "cc"}))
    assert patched.html is None and patched.cc == []
    assert patched.text == "body" and patched.to == ["bob@remote.test"]


def test_nothing_present_keeps_the_saved_draft():
    assert patch_draft(SAVED, Composition(subject="ignored"), frozenset()) == SAVED


def test_every_field_present_is_a_full_replacement():
    new = Composition(to=["dan@remote.test"], subject="New", text="t")
    assert patch_draft(SAVED, new, DRAFT_FIELDS) == new


def test_sending_options_are_not_draft_fields():
    with pytest.raises(ValueError, match="send_at"):
        patch_draft(SAVED, Composition(), frozenset({"send_at"}))
