import pytest

from app.domain.errors import ValidationError
from app.domain.folders import Folder, check_label, counter_deltas, parse_folder


def view(folder="INBOX", labels=(), read=False):
    return {"folder": folder, "labels": list(labels), "read": read}


def test_new_unread_item_counts_in_folder_and_labels():
    d = counter_deltas(None, view(labels=["Work"]))
    assert d == {
        ("folder", "INBOX"): {"total": 1, "unread": 1},
        ("label", "Work"): {"total": 1, "unread": 1},
    }


def test_reading_moves_only_unread():
    d = counter_deltas(view(labels=["Work"]), view(labels=["Work"], read=True))
    assert d == {
        ("folder", "INBOX"): {"total": 0, "unread": -1},
        ("label", "Work"): {"total": 0, "unread": -1},
    }


def test_move_to_trash_shifts_between_folders_keeping_labels():
    d = counter_deltas(view(read=True), view("TRASH", read=True))
    assert d == {
        ("folder", "INBOX"): {"total": -1, "unread": 0},
        ("folder", "TRASH"): {"total": 1, "unread": 0},
    }


def test_delete_removes_everything_the_view_contributed():
    d = counter_deltas(view("SPAM", labels=["a", "b"]), None)
    assert d[("folder", "SPAM")] == {"total": -1, "unread": -1}
    assert d[("label", "a")] == {"total": -1, "unread": -1}


def test_no_change_no_delta():
    assert counter_deltas(view(labels=["x"]), view(labels=["x"])) == {}


def test_folder_names_are_case_insensitive_and_unknown_ones_rejected():
    assert parse_folder("inbox") is Folder.INBOX
    with pytest.raises(ValidationError):
        parse_folder("outbox")


@pytest.mark.parametrize("bad", ["", "a" * 65, "bad\nlabel", "INBOX", "trash"])
def test_invalid_labels_are_rejected(bad):
    with pytest.raises(ValidationError):
        check_label(bad)
