"""The search query language: parsing, errors that point at the problem, compilation to
Typesense, and the isolation guarantee (no input can widen the owner filter)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.errors import ValidationError
from app.domain.search_query import (
    FALSE_FILTER,
    And,
    Cond,
    Not,
    Or,
    Text,
    compile_query,
    live_values,
    live_verdict,
    normal_form,
    owner_filter,
    parse_query,
    viewer_filter,
)
from app.domain.search_terms import (
    address_terms,
    encode_term,
    filename_terms,
    fold,
    label_term,
    words,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OWNER = "65f0c0ffee0000000000beef"
HIDE = "folder:!=`TRASH` && folder:!=`SPAM`"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_query(text, now=NOW).tree


def compiled(text: str):  # type: ignore[no-untyped-def]
    return compile_query(parse_query(text, now=NOW))


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def problem(text: str) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_query(text, now=NOW)
    error = caught.value
    assert [f.field for f in error.fields] == ["query"]
    return error.message


# --- terms ----------------------------------------------------------------------------------


def test_words_fold_case_and_latin_accents_and_split_on_punctuation():
    assert words("Café RÉSUMÉ foo-bar o'neil x_y 42") == [
        "cafe",
        "resume",
        "foo",
        "bar",
        "o",
        "neil",
        "x",
        "y",
        "42",
    ]


def test_non_latin_scripts_keep_their_marks_and_stay_whole_words():
    assert words("日本語 テスト デート") == ["日本語", "テスト", "デート"]
    assert fold("ß") == "ss"


def test_very_long_runs_are_cut_the_same_way_for_documents_and_queries():
    blob = "a" * 200
    assert words(blob) == ["a" * 48]
    assert compiled(blob).filter_by.startswith(f"terms:=`{'a' * 48}`")


def test_encoded_terms_contain_no_filter_syntax():
    for value in ["x`y", "a&&b", "a||b", "k:=v", "(x)", "[a,b]", "a b", "!x", "\\`", "日本"]:
        encoded = encode_term(value)
        assert not set(encoded) & set("`&|:=()[], !\\")
    assert encode_term("alice@example.test") == "alice@example.test"


def test_address_terms_cover_name_words_address_local_part_and_domains():
    keys = address_terms({"name": "Dana Scully", "email": "Dana.Scully@mail.FBI.example"})
    for expected in [
        "dana",
        "scully",
        "dana scully",
        "dana.scully@mail.fbi.example",
        "dana.scully",
        "mail.fbi.example",
        "fbi.example",
        "example",
    ]:
        assert encode_term(expected) in keys, expected
    assert address_terms(None) == set()


def test_filename_terms_cover_name_extension_and_words():
    keys = filename_terms("Budget 2024-Q1.XLSX")
    assert {"budget%202024-q1.xlsx", "xlsx", "budget", "2024", "q1"} <= keys


def test_labels_match_case_insensitively():
    assert label_term("Work") == label_term("work") == label_term(" WORK ")


# --- operators --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:alice", Cond("from_keys", "=", "alice")),
        ("FROM:Alice@Example.Test", Cond("from_keys", "=", "alice@example.test")),
        ("from:@example.test", Cond("from_keys", "=", "example.test")),
        ('from:"Dana Scully"', Cond("from_keys", "=", "dana%20scully")),
        ("to:bob", Cond("to_keys", "=", "bob")),
        ("cc:carol", Cond("cc_keys", "=", "carol")),
        ("bcc:erin", Cond("bcc_keys", "=", "erin")),
        ("label:Work", Cond("label_keys", "=", "work")),
        ('label:"Family & Friends"', Cond("label_keys", "=", "family%20%26%20friends")),
        ("in:inbox", Cond("folder", "=", "INBOX")),
        ("in:SENT", Cond("folder", "=", "SENT")),
        ("in:Receipts", Cond("label_keys", "=", "receipts")),
        ("is:unread", Cond("read", "=", False)),
        ("is:read", Cond("read", "=", True)),
        ("is:starred", Cond("starred", "=", True)),
        ("is:probable-spam", Cond("probable_spam", "=", True)),
        ("IS:Probable-Spam", Cond("probable_spam", "=", True)),
        ("has:attachment", Cond("has_attachment", "=", True)),
        ("filename:pdf", Cond("filename_keys", "=", "pdf")),
        ("filename:Report.PDF", Cond("filename_keys", "=", "report.pdf")),
        ("before:2024/01/02", Cond("received_ms", "<", ms(2024, 1, 2))),
        ("after:2024/1/2", Cond("received_ms", ">=", ms(2024, 1, 2))),
        ("after:2024-01-02", Cond("received_ms", ">=", ms(2024, 1, 2))),
        (
            "older_than:2d",
            Cond("received_ms", "<", int((NOW - timedelta(days=2)).timestamp() * 1000)),
        ),
        (
            "newer_than:3m",
            Cond("received_ms", ">=", int((NOW - timedelta(days=90)).timestamp() * 1000)),
        ),
        (
            "older_than:1Y",
            Cond("received_ms", "<", int((NOW - timedelta(days=365)).timestamp() * 1000)),
        ),
        ("larger:10K", Cond("size", ">", 10 * 1024)),
        ("larger:2m", Cond("size", ">", 2 * 1024 * 1024)),
        ("smaller:500", Cond("size", "<", 500)),
        ("smaller:1MB", Cond("size", "<", 1024 * 1024)),
    ],
)
def test_each_operator_parses_to_its_condition(query, expected):
    assert parse(query) == expected


def test_subject_needs_every_word_in_the_subject():
    assert parse('subject:"Project Plan"') == And(
        (Cond("subject_terms", "=", "project"), Cond("subject_terms", "=", "plan"))
    )


def test_in_anywhere_matches_everything_including_trash_and_spam():
    c = compiled("in:anywhere")
    assert (c.q, c.filter_by) == ("*", "")


def test_trash_and_spam_are_hidden_unless_the_query_names_a_folder():
    assert compiled("invoice").filter_by == f"terms:=`invoice` && {HIDE}"
    assert compiled("in:trash invoice").filter_by == "folder:=`TRASH` && terms:=`invoice`"
    assert compiled("-in:inbox").filter_by == "folder:!=`INBOX`"


def test_unknown_prefix_is_plain_text_as_in_gmail():
    assert parse("re:meeting") == Text(("re", "meeting"), False)
    assert parse("https://example.test/x") == Text(("https", "example", "test", "x"), False)


# --- text, phrases, boolean structure ------------------------------------------------------


def test_free_words_are_anded_and_also_sent_as_q():
    c = compiled("Budget meeting")
    assert c.q == "budget meeting"
    assert c.filter_by == f"terms:=`budget` && terms:=`meeting` && {HIDE}"


def test_a_quoted_phrase_goes_to_q_as_a_phrase_and_its_words_to_the_filter():
    c = compiled('"quarterly report" -draft')
    assert c.q == '"quarterly report"'
    assert c.filter_by == f"terms:=`quarterly` && terms:=`report` && terms:!=`draft` && {HIDE}"


def test_negated_top_level_phrase_is_an_exact_exclusion_in_q_only():
    c = compiled('invoice -"pay the bill"')
    assert c.q == 'invoice -"pay the bill"'
    assert "pay" not in c.filter_by
    assert compiled('-"pay the bill"').q == '* -"pay the bill"'


def test_filter_only_queries_search_everything():
    assert compiled("is:unread").q == "*"
    assert compiled("").q == "*" and compiled("   ").filter_by == HIDE


def test_or_binds_looser_than_the_implicit_and():
    assert parse("a b OR c") == Or(
        (And((Text(("a",), False), Text(("b",), False))), Text(("c",), False))
    )
    assert parse("a (b OR c)") == And(
        (Text(("a",), False), Or((Text(("b",), False), Text(("c",), False))))
    )


def test_and_keyword_is_accepted_and_means_the_same():
    assert parse("a AND b") == parse("a b")


def test_lowercase_or_is_a_word():
    assert parse("this or that") == And(tuple(Text((w,), False) for w in ("this", "or", "that")))


def test_negation_is_pushed_to_the_leaves():
    c = compiled("-(is:unread has:attachment)")
    assert c.filter_by == f"(read:=true || has_attachment:=false) && {HIDE}"
    c = compiled("-(larger:1M OR before:2024/01/01)")
    assert c.filter_by == f"size:<=1048576 && received_ms:>={ms(2024, 1, 1)} && {HIDE}"
    assert compiled("--invoice").filter_by == compiled("invoice").filter_by


def test_negated_text_under_or_uses_term_exclusion():
    c = compiled("from:dana OR -invoice")
    assert c.filter_by == f"(from_keys:=`dana` || terms:!=`invoice`) && {HIDE}"


def test_hyphenated_word_needs_all_its_parts():
    assert compiled("foo-bar").filter_by == f"terms:=`foo` && terms:=`bar` && {HIDE}"


def test_negated_in_anywhere_matches_nothing():
    assert compiled("-in:anywhere").filter_by == FALSE_FILTER


def test_normal_form_folds_constants_and_duplicates():
    a = Cond("read", "=", True)
    assert normal_form(And((a, a, And(())))) == a
    assert normal_form(Or((a, And(())))) == And(())
    assert normal_form(Not(Or((a, Cond("size", ">", 5))))) == And(
        (Cond("read", "=", False), Cond("size", "<=", 5))
    )


def test_punctuation_only_terms_match_like_absent_terms():
    assert compiled("!!! invoice").filter_by == compiled("invoice").filter_by


# --- errors point at the problem --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ('"unterminated', "position 0"),
        ("a (b c", "'(' at position 2 is never closed"),
        ("a b) c", "unexpected ')' at position 3"),
        ("()", "empty parentheses at position 0"),
        ("OR a", "OR at position 0"),
        ("a OR", "OR at position 2"),
        ("a OR OR b", "OR at position 2"),
        ("a OR )", "OR at position 2"),
        ("a - b", "'-' at position 2"),
        ("a -", "'-' at position 2"),
        ("-OR a", "'-' at position 0"),
        ("from: alice", "from: at position 0 needs a value"),
        ('subject:""', "subject: at position 0 needs a value"),
        ("is:important", "is:important at position 0"),
        ("has:drive", "has:drive at position 0"),
        ("before:2024/13/01", "before:2024/13/01 at position 0"),
        ("x after:yesterday", "after:yesterday at position 2"),
        ("older_than:2w", "older_than:2w at position 0"),
        ("newer_than:d", "newer_than:d at position 0"),
        ("larger:10G", "larger:10G at position 0"),
        ("smaller:-1", "smaller:-1 at position 0"),
        ("AND a", "AND at position 0"),
        ("a AND", "AND at position 2"),
        ("(" * 20 + "a" + ")" * 20, "nested deeper"),
        ("a\x00b", "control characters"),
        ("x" * 1001, "longer than 1000"),
        (" ".join(["w"] * 61), "too many terms"),
    ],
)
def test_invalid_queries_raise_validation_errors_that_point_at_the_problem(query, fragment):
    assert fragment in problem(query)


# --- isolation ----------------------------------------------------------------------------------


def _strip_values(filter_by: str) -> str:
    assert filter_by.count("`") % 2 == 0
    return re.sub(r"`[^`]*`", "V", filter_by)


def assert_owner_confined(filter_by: str) -> None:
    """The filter is `owner:=V && (...) && (...)`: at paren depth 0 only && joins clauses, and
    the owner clause is the first of them."""
    skeleton = _strip_values(filter_by)
    assert skeleton.startswith("owner:=V")
    depth, top_level = 0, []
    for i, char in enumerate(skeleton):
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0
        if depth == 0 and skeleton.startswith("||", i):
            top_level.append(i)
    assert depth == 0 and not top_level
    assert skeleton.count("owner") == 1


CRAFTED = [
    "x` || owner:!=`nobody",
    "label:`a` || owner:=`b",
    'subject:"x`) || (true"',
    "&& || :=",
    "owner:=65f0c0ffee0000000000dead",
    'label:"x`] || [`y"',
    "label:\\`",
    'filename:"a`,`b"',
    "from:`) || owner:!=`x",
    "in:`TRASH` || x",
    "\u202eowner\u202c:=x",
    "ＯＲ ｏｗｎｅｒ：＝ｘ",
    'label:"a) || (owner:=b"',
    'from:"a`&&`b"',
    "cc:x:=y",
    "bcc:!=z",
    "to:(x)",
    "a:=(b)||c",
    "label:日本`語",
    'subject:"\\""',
]


@pytest.mark.parametrize("query", CRAFTED)
def test_crafted_inputs_never_widen_the_owner_filter(query):
    try:
        c = compiled(query)
    except ValidationError:
        return
    assert_owner_confined(viewer_filter(OWNER, c.filter_by, "received_ms:<5 || (received_ms:=5)"))
    assert re.fullmatch(r'[^\W_]*([\s"*-]+[^\W_]*)*', c.q), c.q  # q: words, quotes, -, * only


def test_random_inputs_never_widen_the_owner_filter_or_crash():
    alphabet = list('ab `"()-:=&|!,[]\\') + [
        "OR",
        "AND",
        " from:",
        " label:",
        " in:",
        " is:read",
        "é",
        "日",
        "\u200b",
    ]
    rng = random.Random(7)
    for _ in range(3000):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        try:
            c = compiled(query)
        except ValidationError as e:
            assert "position" in e.message or "query" in e.message
            continue
        assert_owner_confined(viewer_filter(OWNER, c.filter_by))


def test_owner_must_be_an_object_id():
    assert owner_filter(OWNER) == f"owner:=`{OWNER}`"
    for bad in ["x` || owner:=`y", "65F0C0FFEE0000000000BEEF", "", "65f0c0ffee0000000000beef0"]:
        with pytest.raises(ValueError):
            owner_filter(bad)


# --- live state -------------------------------------------------------------------------------


def item(**state):  # type: ignore[no-untyped-def]
    return live_values({"folder": "INBOX", "read": False, "starred": False, "labels": [], **state})


def test_live_state_contradicting_the_query_drops_the_hit():
    tree = compiled("is:unread invoice").conditions
    assert live_verdict(tree, item()) is None  # depends on content: trust the index
    assert live_verdict(tree, item(read=True)) is False
    assert live_verdict(compiled("invoice").conditions, item(folder="TRASH")) is False
    assert live_verdict(compiled("label:work").conditions, item(labels=["Work"])) is True
    assert live_verdict(compiled("label:work").conditions, item(labels=[])) is False


def test_a_probable_spam_flag_answered_since_indexing_drops_the_hit():
    tree = compiled("is:probable-spam").conditions
    flagged = {"spam": {"is_spam": False, "score": 0.7, "probable": True}}
    assert live_verdict(tree, item(**flagged)) is True
    answered = {"spam": {"is_spam": False, "score": 0.7, "probable": False}}
    assert live_verdict(tree, item(**answered)) is False  # markNotSpam cleared it
    assert live_verdict(tree, item()) is False  # mail with no verdict is never flagged


def test_unknown_is_value_names_the_accepted_ones():
    with pytest.raises(ValidationError, match="is:probable-spam"):
        parse("is:junk")


def test_live_state_uses_three_valued_logic_under_or():
    tree = compiled("in:inbox OR invoice").conditions
    assert live_verdict(tree, item()) is True
    assert live_verdict(tree, item(folder="ARCHIVE")) is None
    tree = compiled("in:inbox OR is:starred").conditions
    assert live_verdict(tree, item(folder="ARCHIVE")) is False
