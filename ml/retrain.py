"""Retrain with users' feedback, and say whether the candidate may replace the current model.

A candidate is trained on the corpus plus the feedback; both it and a reference trained the
same way without the feedback are judged on the held-out later period of the time split. The
feedback is only trusted if the candidate is not worse there: mislabelled or poisoned feedback
shows up as a lower AUC or a higher ham false-positive rate on mail nobody can tamper with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.corpus import CorpusMessage
from ml.evaluation import Metrics, metrics
from ml.features import message_tokens
from ml.model import SpamModel, TrainingConfig, fit, predict_proba

AUC_TOLERANCE = 0.001
FPR_TOLERANCE = 0.001


@dataclass(frozen=True)
class RetrainResult:
    candidate: SpamModel  # trained on the whole corpus + feedback: what would be promoted
    reference_metrics: Metrics  # early corpus only, judged on the late corpus
    candidate_metrics: Metrics  # early corpus + feedback, judged on the late corpus
    not_worse: bool


def retrain(
    extra_labeled: Sequence[tuple[bytes, bool]],
    corpus: Sequence[CorpusMessage],
    config: TrainingConfig = TrainingConfig(),
    version: str = "candidate",
) -> RetrainResult:
    """Train a candidate from corpus + (raw message, is_spam) feedback and compare it."""
    tokens = [message_tokens(m.raw) for m in corpus]
    labels = np.array([m.is_spam for m in corpus])
    late = np.array([m.is_late for m in corpus])
    extra_tokens = [message_tokens(raw) for raw, _ in extra_labeled]
    extra_labels = [is_spam for _, is_spam in extra_labeled]
    early_tokens = [t for t, is_late in zip(tokens, late, strict=True) if not is_late]
    late_tokens = [t for t, is_late in zip(tokens, late, strict=True) if is_late]

    reference = fit(early_tokens, labels[~late], config)
    with_feedback = fit(early_tokens + extra_tokens, [*labels[~late], *extra_labels], config)
    threshold = reference.threshold  # one threshold, so the two FPRs are comparable
    before = metrics(labels[late], predict_proba(reference, late_tokens), threshold)
    after = metrics(labels[late], predict_proba(with_feedback, late_tokens), threshold)
    not_worse = (
        after.roc_auc >= before.roc_auc - AUC_TOLERANCE
        and after.ham_fpr <= before.ham_fpr + FPR_TOLERANCE
    )
    candidate = fit(tokens + extra_tokens, [*labels, *extra_labels], config, version)
    return RetrainResult(candidate, before, after, not_worse)
