"""EM adaptation to unlabeled mail, the "probably spam" flag and the per-user threshold, on
small generated mail."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from app.domain.errors import ValidationError
from ml.adaptation import (
    AdaptationConfig,
    _pseudo_labels,
    adapt,
    adapted_threshold,
    unlabeled_weight,
)
from ml.corpus import CorpusMessage
from ml.evaluation import metrics
from ml.features import message_tokens
from ml.model import TrainingConfig, fit, model_bytes, predict_proba
from ml.personal import (
    MAX_OFFSET,
    PROBABLE_FLOOR,
    THRESHOLD_STEP,
    moved_probable_offset,
    score_for_user,
    user_probable_threshold,
)
from ml.retrain import retrain
from ml.scoring import score

SMALL = TrainingConfig(n_features=2**12, calibration_folds=3, min_df=1)
# Tiny templated corpora give less extreme probabilities than real mail: a lower bar for spam.
FEW = AdaptationConfig(min_unlabeled=4, spam_confidence=0.9)

# The labelled corpus: one organisation's mail.
SPAM_A = ["click here for your free offer", "free prize click here now", "cheap offer click now"]
HAM_A = ["lunch tomorrow at the usual place", "notes from the meeting", "the build is broken"]
# Another organisation: its ham speaks of shipping, its spam of crypto; one familiar word each
# in the stream is what lets EM connect the new words to a class.
SPAM_B = ["crypto airdrop wallet bonus", "wallet airdrop token bonus", "token crypto bonus wallet"]
HAM_B = ["pallet shipment invoice dock", "invoice dock forklift pallet", "forklift shipment dock"]


def _tokens(texts: list[str], count: int, hint: str = "") -> list[list[str]]:
    return [
        message_tokens(f"Subject: s\n\n{texts[i % len(texts)]} {hint} n{i}".encode())
        for i in range(count)
    ]


def _labelled() -> tuple[list[list[str]], list[bool]]:
    spam, ham = _tokens(SPAM_A, 30), _tokens(HAM_A, 30)
    return spam + ham, [True] * 30 + [False] * 30


def _stream() -> list[list[str]]:
    return _tokens(SPAM_B, 30, "click free") + _tokens(HAM_B, 30, "meeting notes")


def _held_out_b() -> tuple[list[list[str]], np.ndarray]:
    spam, ham = _tokens(SPAM_B, 12), _tokens(HAM_B, 12)
    return spam + ham, np.array([True] * 12 + [False] * 12)


def test_em_learns_the_vocabulary_of_the_unlabeled_mail() -> None:
    tokens, labels = _labelled()
    held_out, truth = _held_out_b()
    before = fit(tokens, labels, SMALL)
    adapted = adapt(tokens, labels, _stream(), SMALL, FEW)
    # the first organisation's model has never seen a word of the held-out mail: only the
    # length shapes tell the two apart, barely
    assert metrics(truth, predict_proba(before, held_out), 0.5).roc_auc < 0.7
    after = predict_proba(adapted.model, held_out)
    assert metrics(truth, after, 0.5).roc_auc == 1.0
    assert adapted.pseudo_spam > 0 and adapted.pseudo_ham > 0


def test_adaptation_is_reproducible_to_the_byte() -> None:
    tokens, labels = _labelled()
    once = adapt(tokens, labels, _stream(), SMALL, FEW, "v")
    again = adapt(tokens, labels, _stream(), SMALL, FEW, "v")
    assert model_bytes(once.model) == model_bytes(again.model)


def test_only_confident_pseudo_labels_count() -> None:
    probabilities = np.array([0.5, 0.95, 0.9995, 0.05, 0.2])
    as_spam, as_ham = _pseudo_labels(probabilities, AdaptationConfig())
    counted = (as_spam + as_ham) > 0
    assert counted.tolist() == [False, False, True, True, False]
    assert as_spam[2] == pytest.approx(0.9995) and as_ham[3] == pytest.approx(0.95)


def test_unlabeled_weight_is_capped_by_the_labelled_count() -> None:
    config = AdaptationConfig(max_unlabeled_share=1.0)
    assert unlabeled_weight(100, 1000, config) == pytest.approx(0.1)  # 1,000 weigh like 100
    assert unlabeled_weight(100, 50, config) == 1.0  # never more than a labelled message
    assert unlabeled_weight(100, 0, config) == 0.0


def test_the_adapted_model_files_as_spam_only_what_em_would_take_as_spam() -> None:
    tokens, labels = _labelled()
    strict = adapt(tokens, labels, _stream(), SMALL, replace(FEW, spam_confidence=0.995))
    # the labelled mail alone would allow a lower bar; EM's own bar for spam wins
    assert strict.labelled_threshold < 0.995
    assert strict.model.threshold == 0.995
    assert strict.model.probable_threshold <= strict.labelled_threshold
    # never below the labelled mail's own threshold
    assert adapted_threshold(0.97, AdaptationConfig(spam_confidence=0.9)) == 0.97
    assert adapted_threshold(0.97, AdaptationConfig(spam_confidence=0.999)) == 0.999
    off = replace(FEW, spam_confidence=0.995, threshold_at_confidence=False)
    assert adapt(tokens, labels, _stream(), SMALL, off).model.threshold == (
        strict.labelled_threshold
    )


def test_adapting_needs_enough_unlabeled_mail() -> None:
    tokens, labels = _labelled()
    with pytest.raises(ValidationError, match="unlabeled"):
        adapt(tokens, labels, _stream()[:3], SMALL, FEW)


def _corpus() -> list[CorpusMessage]:
    early, late = datetime(2002, 7, 1), datetime(2002, 10, 1)
    out = []
    for period, when in (("e", early), ("l", late)):
        for i in range(20):
            for texts, is_spam in ((SPAM_A, True), (HAM_A, False)):
                raw = f"Subject: s\n\n{texts[i % 3]} {period}{i}".encode()
                out.append(CorpusMessage("g", f"{period}{is_spam}{i}", raw, is_spam, when))
    return out


def test_weekly_retraining_adapts_to_inbound_mail_when_not_worse() -> None:
    stream = [
        f"Subject: s\n\n{text} {hint} u{i}".encode()
        for i in range(20)
        for text, hint in ((SPAM_B[i % 3], "click free"), (HAM_B[i % 3], "meeting notes"))
    ]
    result = retrain([], _corpus(), SMALL, "c", stream, FEW)
    assert result.adapted and result.not_worse
    assert result.pseudo_spam > 0 and result.pseudo_ham > 0
    spam = score(b"Subject: s\n\ncrypto airdrop wallet", result.candidate)
    ham = score(b"Subject: s\n\npallet invoice dock", result.candidate)
    assert spam.score > ham.score


def test_retraining_without_inbound_mail_does_not_adapt() -> None:
    result = retrain([], _corpus(), SMALL, "c", [], FEW)
    assert not result.adapted and result.pseudo_spam == result.pseudo_ham == 0


# --- "probably spam" -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    tokens, labels = _labelled()
    # A spam threshold well above the probably-spam one, as real mail gives (0.99 vs 0.5).
    return replace(fit(tokens, labels, SMALL, "p"), threshold=0.999)


def test_probably_spam_is_flagged_between_the_two_thresholds(model) -> None:
    raw = b"Subject: s\n\nclick here for the notes"
    verdict = score(raw, model)
    assert model.probable_threshold < verdict.score < model.threshold  # a message in between
    assert verdict.probable and not verdict.is_spam
    # a user whose threshold was moved above this score sees no flag
    offset = verdict.score - model.probable_threshold + 0.01
    unflagged = score_for_user(raw, {}, model, probable_offset=offset)
    assert not unflagged.probable and not unflagged.is_spam
    assert unflagged.score == pytest.approx(verdict.score)


def test_definite_spam_is_never_also_probable(model) -> None:
    verdict = score(b"Subject: s\n\nfree prize click here now", model)
    assert verdict.is_spam and not verdict.probable


def test_a_missed_spam_lowers_the_users_threshold_and_a_false_flag_raises_it() -> None:
    missed = moved_probable_offset(0.0, was_spam=False, was_probable=False, marked_spam=True)
    assert missed == pytest.approx(-THRESHOLD_STEP)
    false_flag = moved_probable_offset(0.0, was_spam=False, was_probable=True, marked_spam=False)
    assert false_flag == pytest.approx(THRESHOLD_STEP)


def test_agreeing_feedback_leaves_the_threshold_where_it_is() -> None:
    assert moved_probable_offset(0.1, was_spam=False, was_probable=True, marked_spam=True) == 0.1
    assert moved_probable_offset(0.1, was_spam=True, was_probable=False, marked_spam=True) == 0.1
    assert moved_probable_offset(0.1, was_spam=False, was_probable=False, marked_spam=False) == 0.1


def test_a_users_threshold_stays_between_the_floor_and_the_spam_threshold(model) -> None:
    assert user_probable_threshold(model, -1.0) == PROBABLE_FLOOR
    assert user_probable_threshold(model, +1.0) == model.threshold
    assert moved_probable_offset(MAX_OFFSET, False, True, marked_spam=False) == MAX_OFFSET
