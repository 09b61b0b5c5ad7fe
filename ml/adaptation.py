"""Adapting the model to a deployment's own mail: semi-supervised naive Bayes with EM.

Nigam, McCallum, Thrun and Mitchell, "Text Classification from Labeled and Unlabeled Documents
using EM" (Machine Learning 39, 2000): fit NB on the labelled mail; then repeat — E-step: the
current model's spam probability for every unlabeled message; M-step: refit NB on the labelled
mail plus each unlabeled message counted as spam with weight λ·p and as ham with weight λ·(1−p).
The unlabeled mail is what a deployment receives, so its vocabulary (its colleagues' names, its
trade's words, the newsletters it subscribes to) gets the evidence the training corpus never had.

Guards against drifting away from the labels (the paper's EM-λ, and what self-training needs):
- **confident only**: an unlabeled message joins an M-step only while the model is at least
  ``confidence`` sure of it either way; the uncertain middle, where a wrong pseudo-label would
  teach the most, stays out;
- **a cap on the unlabeled weight**: λ is chosen so the unlabeled messages together weigh at most
  ``max_unlabeled_share`` × the labelled ones (and each at most 1), however large the stream;
- **promotion only if not worse** on held-out labelled mail is the caller's rule
  (``ml.retrain.adapt_and_judge``): EM here only proposes.

Calibration and threshold are refitted the way ``ml.model.fit`` does it, on out-of-fold scores
of the *labelled* mail (the unlabeled mail's final pseudo-labels held fixed in every fold), so a
threshold still means the same ham false-positive rate on labelled data. Every step is
deterministic: same labelled and unlabeled inputs, same bytes.

**Threshold.** The labelled mail cannot say how much of the deployment's ham looks like spam,
and neither can the stream: the model is confidently wrong on exactly that ham (commercial
newsletters), so an estimate of the stream's ham false-positive rate from the EM posteriors, or
from a mixture of the stream's scores and the labelled spam's, came out ≈ 0 where the true rate
was 2 % (docs/spam-model.md). What the adaptation does know is its own bar: a stream message
counts as spam only at ``spam_confidence``. The adapted model files a message in Spam only at
that bar too (``threshold_at_confidence``), never below the labelled mail's threshold; what lies
between stays in the Inbox, flagged "probably spam" (the probably-spam threshold is unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import MultinomialNB

from app.domain.errors import ValidationError
from ml.model import (
    SpamModel,
    TrainingConfig,
    _token_log_odds,
    choose_probable_threshold,
    choose_threshold,
    make_hasher,
    mean_log_odds,
    training_labels,
    vectorize,
)


@dataclass(frozen=True)
class AdaptationConfig:
    """Everything besides the inputs that decides an adapted model's bytes."""

    iterations: int = 5
    ham_confidence: float = 0.9  # pseudo-label as ham only below 1 − this spam probability
    spam_confidence: float = 0.999  # and as spam only at or above this one
    max_unlabeled_share: float = 1.0  # Σ unlabeled weight ≤ this × number of labelled messages
    min_unlabeled: int = 20  # fewer unlabeled messages than this: nothing to adapt to
    # File in Spam only what EM itself would take as spam: the adapted model's spam threshold is
    # at least ``spam_confidence`` (module docstring, "Threshold").
    threshold_at_confidence: bool = True


@dataclass(frozen=True)
class Adaptation:
    model: SpamModel
    unlabeled: int  # messages offered
    pseudo_spam: int  # confident enough to count, at the last E-step
    pseudo_ham: int
    weight: float  # λ: each counted message's weight (× its class probability)
    labelled_threshold: float  # the threshold the labelled mail alone would give


def _calibrated(scores: np.ndarray, calibrator: LogisticRegression) -> np.ndarray:
    return calibrator.predict_proba(scores.reshape(-1, 1))[:, 1]


def _pseudo_labels(
    probabilities: np.ndarray, config: AdaptationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per unlabeled message: its weight as spam and as ham (0 for the unconfident ones)."""
    confident = (probabilities >= config.spam_confidence) | (
        probabilities <= 1 - config.ham_confidence
    )
    return np.where(confident, probabilities, 0.0), np.where(confident, 1 - probabilities, 0.0)


def _weighted_nb(
    labelled: sparse.csr_matrix,
    labels: np.ndarray,
    unlabeled: sparse.csr_matrix,
    as_spam: np.ndarray,
    as_ham: np.ndarray,
    weight: float,
    config: TrainingConfig,
) -> MultinomialNB:
    """M-step: NB counts of the labelled rows (weight 1) plus each unlabeled row twice, once per
    class, weighted by λ × its class probability. Rows of weight 0 are left out altogether."""
    keep_spam = np.flatnonzero(as_spam > 0)
    keep_ham = np.flatnonzero(as_ham > 0)
    matrix = sparse.vstack([labelled, unlabeled[keep_spam], unlabeled[keep_ham]], format="csr")
    y = np.concatenate(
        [labels, np.ones(len(keep_spam), dtype=bool), np.zeros(len(keep_ham), dtype=bool)]
    )
    sample_weight = np.concatenate(
        [np.ones(len(labels)), weight * as_spam[keep_spam], weight * as_ham[keep_ham]]
    )
    return MultinomialNB(alpha=config.alpha).fit(matrix, y, sample_weight=sample_weight)


def unlabeled_weight(labelled: int, unlabeled: int, config: AdaptationConfig) -> float:
    """λ: at most 1 per message, and all of them together at most the cap."""
    if unlabeled == 0:
        return 0.0
    return min(1.0, config.max_unlabeled_share * labelled / unlabeled)


def adapt(
    token_lists: Sequence[Sequence[str]],
    labels: Sequence[bool] | np.ndarray,
    unlabeled_token_lists: Sequence[Sequence[str]],
    config: TrainingConfig = TrainingConfig(),
    adaptation: AdaptationConfig = AdaptationConfig(),
    version: str = "adapted",
) -> Adaptation:
    """Fit on the labelled mail, then run EM over the unlabeled mail (module docstring)."""
    y = training_labels(labels)
    if len(unlabeled_token_lists) < adaptation.min_unlabeled:
        raise ValidationError.on(
            "unlabeled",
            f"{len(unlabeled_token_lists)} unlabeled messages; adapting needs at least "
            f"{adaptation.min_unlabeled}",
        )
    hasher = make_hasher(config)
    labelled = vectorize(hasher, token_lists)
    unlabeled = vectorize(hasher, unlabeled_token_lists)
    weight = unlabeled_weight(len(y), unlabeled.shape[0], adaptation)

    nb = MultinomialNB(alpha=config.alpha).fit(labelled, y)
    calibrator = _fit_calibrator(_out_of_fold(labelled, y, None, config), y, config)
    as_spam = as_ham = np.zeros(unlabeled.shape[0])
    for _ in range(adaptation.iterations):
        log_odds = _token_log_odds(nb, config.min_df)
        probabilities = _calibrated(mean_log_odds(log_odds, unlabeled), calibrator)
        new_spam, new_ham = _pseudo_labels(probabilities, adaptation)
        if np.array_equal(new_spam, as_spam) and np.array_equal(new_ham, as_ham):
            break  # converged: the same E-step again would give the same M-step
        as_spam, as_ham = new_spam, new_ham
        nb = _weighted_nb(labelled, y, unlabeled, as_spam, as_ham, weight, config)

    pseudo = (unlabeled, as_spam, as_ham, weight)
    oof = _out_of_fold(labelled, y, pseudo, config)
    calibrator = _fit_calibrator(oof, y, config)
    oof_probabilities = _calibrated(oof, calibrator)
    labelled_threshold = choose_threshold(oof_probabilities, y, config.target_fpr)
    model = SpamModel(
        version,
        hasher,
        nb,
        calibrator,
        adapted_threshold(labelled_threshold, adaptation),
        config,
        probable_threshold=choose_probable_threshold(oof_probabilities, y, config),
    )
    return Adaptation(
        model,
        unlabeled.shape[0],
        int(np.sum(as_spam >= adaptation.spam_confidence)),
        int(np.sum(as_ham >= adaptation.ham_confidence)),
        round(weight, 6),
        labelled_threshold,
    )


def adapted_threshold(labelled_threshold: float, adaptation: AdaptationConfig) -> float:
    """The adapted model's spam threshold: the stricter of the labelled mail's and EM's own bar
    for calling a message of the stream spam (``spam_confidence``)."""
    if adaptation.threshold_at_confidence:
        return max(labelled_threshold, adaptation.spam_confidence)
    return labelled_threshold


def _fit_calibrator(
    scores: np.ndarray, labels: np.ndarray, config: TrainingConfig
) -> LogisticRegression:
    return LogisticRegression(C=1e4, random_state=config.seed).fit(scores.reshape(-1, 1), labels)


def _out_of_fold(
    labelled: sparse.csr_matrix,
    labels: np.ndarray,
    pseudo: tuple[sparse.csr_matrix, np.ndarray, np.ndarray, float] | None,
    config: TrainingConfig,
) -> np.ndarray:
    """Out-of-fold scores of the labelled rows, each fold's NB also counting the pseudo-labels."""
    scores = np.zeros(labelled.shape[0])
    folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=config.seed)
    for train, held_out in folds.split(np.zeros(len(labels)), labels):
        if pseudo is None:
            nb = MultinomialNB(alpha=config.alpha).fit(labelled[train], labels[train])
        else:
            unlabeled, as_spam, as_ham, weight = pseudo
            nb = _weighted_nb(
                labelled[train], labels[train], unlabeled, as_spam, as_ham, weight, config
            )
        scores[held_out] = mean_log_odds(_token_log_odds(nb, config.min_df), labelled[held_out])
    return scores
