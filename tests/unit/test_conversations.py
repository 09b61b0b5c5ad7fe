import pytest

from app.domain.conversations import (
    may_join_by_subject,
    normalize_message_id,
    normalize_subject,
    parse_message_ids,
    thread_lookup_ids,
)


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Hello World", "hello world"),
        ("Re: Hello", "hello"),
        ("RE: re: Fwd: FW: hello", "hello"),
        ("Fwd[2]: Re[3]: Budget", "budget"),
        ("Re(2): Budget", "budget"),
        ("AW: WG: Angebot", "angebot"),
        ("SV: VS: Antw: Status", "status"),
        ("Re : espacement français", "espacement français"),
        ("回复：会议", "会议"),
        ("Re: [dev-list] Re: Build broken", "build broken"),
        ("[dev] [announce] Release 2.0", "release 2.0"),
        ("Meeting notes (fwd)", "meeting notes"),
        ("[Fwd: Lunch plans]", "lunch plans"),
        ("  Re:   Lots    of   space  ", "lots of space"),
        ("Straße", "strasse"),
        ("Re:", ""),
        ("", ""),
        ("[dev]", "[dev]"),  # a tag with nothing after it is the subject (RFC 5256 §2.1)
        ("Recap: notes", "recap: notes"),
        ("Readme", "readme"),
        ("Fwdx: not a prefix", "fwdx: not a prefix"),
    ],
)
def test_normalize_subject_finds_the_base_subject(subject, base):
    assert normalize_subject(subject) == base


def test_reply_and_original_share_a_subject_key():
    assert normalize_subject("Re: AW: [team] Quarterly plan") == normalize_subject("Quarterly Plan")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@example.com>", "<abc@example.com>"),
        ("  < abc@example.com >  ", "<abc@example.com>"),
        ("<abc@example.com> (sent by Bob's client)", "<abc@example.com>"),
        ("(comment <fake@x>) <real@example.com>", "<real@example.com>"),
        ("abc@example.com", "<abc@example.com>"),
        ("<abc@exa\r\n mple.com>", "<abc@example.com>"),
        ("<1234.5678>", "<1234.5678>"),
        ("junk", None),
        ("<>", None),
        ("", None),
        (None, None),
        ("<a\x00b@x>", None),
        ("<" + "a" * 1000 + "@x>", None),
    ],
)
def test_normalize_message_id(value, expected):
    assert normalize_message_id(value) == expected


def test_parse_message_ids_reads_a_folded_references_header_with_comments():
    value = '<a@x.org> (Bob\'s message of "Mon")\r\n <b@x.org>\t<a@x.org>  <c@x.org>'
    assert parse_message_ids(value) == ("<a@x.org>", "<b@x.org>", "<c@x.org>")


def test_parse_message_ids_accepts_unbracketed_ids_and_skips_words():
    assert parse_message_ids("a@x.org, b@y.org and some words") == ("<a@x.org>", "<b@y.org>")


def test_parse_message_ids_of_nothing_is_empty():
    assert parse_message_ids(None) == ()
    assert parse_message_ids("(only a comment)") == ()


def test_thread_lookup_prefers_parent_then_newest_reference():
    ids = thread_lookup_ids("<c@x>", ["<a@x>", "<b@x>", "<c@x>"])
    assert ids == ("<c@x>", "<b@x>", "<a@x>")


def test_thread_lookup_without_in_reply_to_uses_references_and_drops_junk():
    assert thread_lookup_ids(None, ["<a@x>", "junk", " <b@x> "]) == ("<b@x>", "<a@x>")
    assert thread_lookup_ids("garbage", []) == ()


def _join(**overrides):
    args = {
        "has_reference_headers": False,
        "subject_key": "quarterly plan",
        "thread_participants": {"alice@example.com", "bob@example.com"},
        "participants": {"Bob@Example.com", "carol@example.com"},
    }
    args.update(overrides)
    return may_join_by_subject(**args)


def test_subject_join_needs_a_shared_participant():
    assert _join() is True
    assert _join(participants={"mallory@example.com"}) is False


def test_subject_join_is_refused_for_messages_with_reference_headers():
    assert _join(has_reference_headers=True) is False


def test_subject_join_is_refused_for_empty_base_subjects():
    assert _join(subject_key="") is False
    assert _join(subject_key="   ") is False
