"""Spam features, scoring arithmetic, per-user feedback and retraining, on synthetic mail."""

from __future__ import annotations

import base64
import operator
import subprocess
import sys
from datetime import datetime
from email import message_from_string
from email.message import EmailMessage
from email.policy import compat32

import numpy as np
import pytest
import skops.io as sio

from app.domain.parsing import _canonical_base64
from ml.corpus import CorpusMessage
from ml.features import message_tokens, registrable_domain
from ml.message_text import _part_text, decode_bytes, read_message, subject_and_body
from ml.model import TrainingConfig, bucket_of, fit, load, model_bytes, predict_proba, save
from ml.personal import score_for_user, tokens_for_feedback
from ml.retrain import retrain
from ml.scoring import first_occurrences, score, token_buckets

SMALL = TrainingConfig(n_features=2**12, calibration_folds=3, min_df=1)


def test_declared_charset_is_decoded() -> None:
    raw = (
        b"Subject: =?iso-8859-1?q?Gr=F6=DFe?=\nContent-Type: text/plain; charset=iso-8859-1\n\n"
    ) + "Die Größe passt".encode("iso-8859-1")
    tokens = message_tokens(raw)
    assert "subject:grösse" in tokens  # casefold: ß → ss
    assert "word:grösse" in tokens


def test_quoted_printable_body_is_decoded() -> None:
    raw = (
        b"Subject: hi\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"caf=C3=A9 lunch at the bistr=\no tomorrow"
    )
    assert read_message(raw).body == "café lunch at the bistro tomorrow"


def test_base64_html_part_becomes_text_and_links() -> None:
    html = '<html><body><p>Cheap <b>meds</b></p><a href="http://www.pills.example.co.uk/x">go</a>'
    html += '<img src="http://10.1.2.3/a.gif"></body></html>'
    raw = (
        b"Subject: offer\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(html.encode())
    )
    text = read_message(raw)
    assert "Cheap" in text.body and "meds" in text.body and "<b>" not in text.body
    tokens = message_tokens(raw)
    assert {"word:cheap", "word:meds", "shape:HTML", "shape:IMAGES"} <= set(tokens)
    assert "url_host:example.co.uk" in tokens
    assert "shape:URL_IP" in tokens


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        ("Y2Fmw6kgbHVuY2g=\n", True),  # "café lunch", canonical
        ("Y2Fmw6kg\r\nbHVuY2g=\r\n", True),  # CRLF lines
        ("Y2Fmw6kgbHVuY2g=\nQQ==\n", False),  # padding inside: the email package's path
        ("Y2Fmw6kgbHVuY2h=\n", False),  # spare bits set
        ("Y2Fmw6kg bHVuY2g=\n", False),  # a space
        ("Y2Fmw6kgbHVuY2g\n", False),  # a length not a multiple of four
    ],
)
def test_a_base64_text_part_reads_as_the_email_package_decodes_it(body: str, fast: bool) -> None:
    raw = (
        "Subject: lunch\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n" + body
    )
    part = message_from_string(raw, policy=compat32)
    stock = message_from_string(raw, policy=compat32).get_payload(decode=True)
    assert (_canonical_base64(part) is not None) is fast
    assert _part_text(part) == decode_bytes(stock, "utf-8")
    assert read_message(raw.encode()).body == decode_bytes(stock, "utf-8")


def test_subject_and_body_alone_are_accepted() -> None:
    tokens = message_tokens(b"Subject: FREE MONEY NOW!!\n\nClick here to claim $1,000,000 today")
    assert {"subject:free", "subject:money", "word:click", "pair:click_here"} <= set(tokens)
    assert {"shape:ALLCAPS_SUBJECT", "shape:EXCLAIM_SUBJECT", "shape:MONEY"} <= set(tokens)


def test_headerless_multipart_body_is_recovered() -> None:
    body = base64.encodebytes(b"Refinance your mortgage at the lowest rate ever")
    raw = (
        b"Subject: rates\n\nThis is a multi-part message in MIME format.\n\n--BOUNDARY42\n"
        b"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: base64\n\n"
        + body
        + b"\n--BOUNDARY42--\n"
    )
    tokens = message_tokens(raw)
    assert "word:mortgage" in tokens and "word:refinance" in tokens
    assert not any(t.startswith("word:content") for t in tokens)


def test_headerless_base64_and_quoted_printable_bodies_are_decoded() -> None:
    encoded = base64.encodebytes(b"Meet me for lunch tomorrow, the usual place near the office")
    assert "word:lunch" in message_tokens(b"Subject: x\n\n" + encoded)
    qp = b"Subject: x\n\nLet=3Ds meet for lunch =\ntomorrow at noon =3D fine =E2=9C=93"
    assert "word:tomorrow" in message_tokens(qp)


def test_headerless_html_is_stripped() -> None:
    tokens = message_tokens(b"Subject: x\n\n<html><body><font color=red>WIN</font></body></html>")
    assert "word:win" in tokens and "word:font" not in tokens and "shape:HTML" in tokens


def test_email_message_objects_are_accepted() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Quarterly report"
    msg.set_content("Attached is the quarterly report.")
    assert "subject:quarterly" in message_tokens(msg)


def test_other_headers_never_become_features() -> None:
    with_headers = (
        b"Received: from relay.corp.example by mx.example; Thu, 22 Aug 2002 12:36:23 +0100\n"
        b"From: Alice <alice@corp.example>\nX-Spam-Status: No, hits=-2.3\n"
        b"List-Id: <fork.xent.com>\nSubject: lunch\n\nSee you at noon"
    )
    assert message_tokens(with_headers) == message_tokens(b"Subject: lunch\n\nSee you at noon")


def test_subject_and_body_view_keeps_only_the_subject_header() -> None:
    raw = b"From: a@b.example\nSubject: =?utf-8?q?caf=C3=A9?=\nX-Loop: yes\n\nbody\n\nmore"
    assert subject_and_body(raw) == "Subject: café\n\nbody\n\nmore".encode()


def test_mailing_list_footer_and_subject_tag_are_dropped() -> None:
    raw = (
        b"Subject: Re: [ILUG] kernel panic\n\nTry a newer kernel.\n\n"
        b"_______________________________________________\nILUG mailing list\n"
        b"http://www.linux.ie/mailman/listinfo/ilug\n"
    )
    tokens = message_tokens(raw)
    assert "subject:ilug" not in tokens and "subject:kernel" in tokens
    assert not {"word:mailman", "word:listinfo", "url_host:linux.ie"} & set(tokens)


def test_numbers_and_dates_become_shapes() -> None:
    tokens = message_tokens(b"Subject: x\n\nOn Wed, 21 Aug 2002 at 10:54 we sold 1234 units")
    assert {"shape:DATE", "num:dddd"} <= set(tokens)
    assert not {"word:wed", "word:aug", "num:dd"} & set(tokens)


def test_registrable_domain_keeps_country_second_levels() -> None:
    assert registrable_domain("www.shop.example.co.uk") == "example.co.uk"
    assert registrable_domain("click.mailer.example.com") == "example.com"


# --- scoring, persistence, feedback ------------------------------------------------------

SPAMMY = [
    "Subject: cheap meds\n\nBuy cheap meds online, click here now, best price guaranteed",
    "Subject: winner\n\nYou are a winner! Click here to claim your free prize now",
    "Subject: credit\n\nLow rates on credit, apply now, click here, guaranteed approval",
    "Subject: offer\n\nLimited offer: free money, click here to be removed from list",
]
HAMMY = [
    "Subject: lunch\n\nAre we still on for lunch tomorrow? I can book the usual table",
    "Subject: build broken\n\nThe nightly build fails in the parser tests, can you look",
    "Subject: notes\n\nHere are my notes from the meeting about the release schedule",
    "Subject: weekend\n\nThanks for the photos from the weekend, the kids loved it",
]


def _messages(count: int) -> list[tuple[bytes, bool]]:
    out = []
    for i in range(count):
        out.append((f"{SPAMMY[i % 4]} ref {i}".encode(), True))
        out.append((f"{HAMMY[i % 4]} ref {i}".encode(), False))
    return out


@pytest.fixture(scope="module")
def small_model():
    labeled = _messages(24)
    return fit([message_tokens(raw) for raw, _ in labeled], [s for _, s in labeled], SMALL, "0.1")


def test_single_message_scoring_matches_the_batch_path(small_model) -> None:
    for raw, _ in _messages(8):
        batch = predict_proba(small_model, [message_tokens(raw)])[0]
        assert score(raw, small_model).score == pytest.approx(batch, rel=1e-9, abs=1e-12)


def test_verdict_explains_itself_with_tokens(small_model) -> None:
    verdict = score(b"Subject: free prize\n\nclick here to claim your free prize", small_model)
    assert verdict.is_spam and verdict.model_version == "0.1"
    assert verdict.reasons and all(":" in reason for reason in verdict.reasons)
    ham = score(b"Subject: lunch\n\nlunch tomorrow? the usual table", small_model)
    assert not ham.is_spam and ham.score < verdict.score


def test_training_twice_gives_identical_bytes(small_model) -> None:
    labeled = _messages(24)
    again = fit([message_tokens(raw) for raw, _ in labeled], [s for _, s in labeled], SMALL, "0.1")
    assert model_bytes(again) == model_bytes(small_model)


def test_saved_model_loads_with_its_card_and_scores_the_same(small_model, tmp_path) -> None:
    path, card = save(small_model, tmp_path, {"note": "test"})
    assert sio.get_untrusted_types(file=path) == []
    loaded = load(path)
    raw = b"Subject: winner\n\nclick here to claim"
    assert score(raw, loaded).score == pytest.approx(score(raw, small_model).score)
    assert '"file_sha256"' in card.read_text()


def test_model_file_with_unlisted_types_is_refused(small_model, tmp_path) -> None:
    path, _ = save(small_model, tmp_path, {})
    data = sio.dumps({"format": "mailhub-spam-nb/1", "rogue": operator.add})
    path.write_bytes(data)
    with pytest.raises(Exception, match="untrusted"):
        load(path)


def test_a_message_like_one_marked_spam_goes_to_spam(small_model) -> None:
    newsletter = b"Subject: lunch menu\n\nour canteen menu for the week: soup, pasta, salad"
    assert not score_for_user(newsletter, {}, small_model).is_spam
    counts = {token: (1, 0) for token in tokens_for_feedback(newsletter)}
    similar = b"Subject: lunch menu\n\nour canteen menu for next week: soup, curry, salad"
    assert score_for_user(similar, counts, small_model).is_spam
    unrelated = b"Subject: build broken\n\nthe parser tests fail on the nightly build"
    assert not score_for_user(unrelated, counts, small_model).is_spam


def test_a_message_like_one_marked_not_spam_stays_in_the_inbox(small_model) -> None:
    promo = b"Subject: winner\n\nYou are a winner! Click here to claim your free prize now"
    assert score_for_user(promo, {}, small_model).is_spam
    counts = {token: (0, 1) for token in tokens_for_feedback(promo)}
    assert not score_for_user(promo, counts, small_model).is_spam


def _corpus(late_spam_text: str) -> list[CorpusMessage]:
    early, late = datetime(2002, 7, 1), datetime(2002, 10, 1)
    out = []
    for i, (raw, is_spam) in enumerate(_messages(40)):
        when = early if i < 50 else late
        out.append(CorpusMessage("g", str(i), raw, is_spam, when))
    for i in range(6):  # a newer kind of spam the early period never saw
        out.append(CorpusMessage("g", f"n{i}", late_spam_text.encode(), True, late))
    return out


def test_retrain_with_honest_feedback_is_not_worse() -> None:
    corpus = _corpus("Subject: pills\n\ncheap pills, order pills now, lowest pill price")
    feedback = [(b"Subject: pills\n\ncheap pills for you, order now", True)] * 3
    result = retrain(feedback, corpus, SMALL)
    assert result.not_worse
    assert result.candidate_metrics.roc_auc >= result.reference_metrics.roc_auc


def test_retrain_with_poisoned_feedback_is_rejected() -> None:
    corpus = _corpus("Subject: pills\n\ncheap pills, order pills now, lowest pill price")
    poison = [(f"{text} ref {i}".encode(), True) for i, text in enumerate(HAMMY * 15)]
    result = retrain(poison, corpus, SMALL)
    assert not result.not_worse


@pytest.mark.parametrize("n_features", [1, 7, 1 << 20])
def test_first_occurrences_are_what_np_unique_gives(n_features: int) -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 5, 100, 10_000):
        buckets = rng.integers(0, n_features, size=size, dtype=np.int64)
        _, expected = np.unique(buckets, return_index=True)
        expected.sort()
        # one array for every size: it must be set back after each call
        got = first_occurrences(buckets, n_features)
        assert got.tolist() == expected.tolist(), (n_features, size)


@pytest.mark.parametrize("n_features", [1, 7, 1 << 20])
def test_token_buckets_are_the_columns_training_gives(n_features: int) -> None:
    """The scorer's hashing (mmh3) puts every token in the column scikit-learn's FeatureHasher
    gave it in training: ASCII, accented, CJK, emoji, empty and long tokens, and the tokens
    of a real message."""
    from sklearn.feature_extraction import FeatureHasher

    tokens = [
        "",
        "a",
        "word:viagra",
        "pair:click_here",
        "word:café",
        "subject:größe",
        "word:日本語のメール",
        "word:🙂🙂",
        "shape:LONG_TOKEN",
        "x" * 5000,
        *message_tokens(b"Subject: Ihre Bestellung\r\n\r\nBitte best\xc3\xa4tigen: 12.03.2026 ..."),
        *(f"word:w{i}" for i in range(2000)),
    ]
    got = token_buckets(tokens, n_features)
    assert got.dtype == np.int64
    assert got.tolist() == [bucket_of(t, n_features) for t in tokens]
    hasher = FeatureHasher(n_features=n_features, input_type="string", alternate_sign=False)
    matrix = hasher.transform([[t] for t in tokens])
    assert got.tolist() == matrix.indices.tolist()
    assert token_buckets([], n_features).tolist() == []


def test_a_token_with_a_lone_surrogate_is_refused_not_a_crash() -> None:
    """mmh3 5.3.1 segfaults on a str with a lone surrogate (no UTF-8 form); ``token_buckets``
    refuses such text first, with the error scikit-learn's hashing raised. Run in a child
    process, so a regression shows as this test's failure, not the end of the test run."""
    code = (
        "from ml.scoring import token_buckets\n"
        "try:\n"
        "    token_buckets(['word:ok', 'word:caf\\udce9'], 1 << 20)\n"
        "except UnicodeEncodeError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "refused", (done.returncode, done)
