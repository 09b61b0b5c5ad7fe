"""Retrain with users' feedback and the deployment's own unlabeled mail, and say whether the
candidate may replace the current model.

A candidate is trained on the corpus plus the feedback — and, given the deployment's recent
inbound mail, adapted to it with EM (``ml.adaptation``); a reference is trained on the corpus
alone. Both recipes are first run on the earlier period of the time split and judged on the
held-out later period: mislabelled or poisoned feedback, or an adaptation that drifted, shows up
as a lower AUC or a higher ham false-positive rate on labelled mail nobody can tamper with. The
candidate is only to be promoted if it is not worse there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.domain.errors import ValidationError
from ml.adaptation import AdaptationConfig, adapt
from ml.corpus import CorpusMessage
from ml.evaluation import Metrics, metrics
from ml.features import message_tokens
from ml.model import SpamModel, TrainingConfig, fit, predict_proba

AUC_TOLERANCE = 0.001
FPR_TOLERANCE = 0.001


@dataclass(frozen=True)
class RetrainResult:
    candidate: SpamModel  # trained on the whole corpus + feedback (+ EM): what would be promoted
    reference_metrics: Metrics  # early corpus only, judged on the late corpus
    candidate_metrics: Metrics  # early corpus + feedback (+ EM), judged on the late corpus
    not_worse: bool
    adapted: bool  # whether EM over unlabeled mail was part of the recipe
    pseudo_spam: int = 0  # unlabeled messages counted as spam / ham at the last E-step
    pseudo_ham: int = 0


def _recipe(
    tokens: list[list[str]],
    labels: Sequence[bool],
    unlabeled: list[list[str]],
    config: TrainingConfig,
    adaptation: AdaptationConfig,
    version: str,
) -> tuple[SpamModel, int, int]:
    if len(unlabeled) < adaptation.min_unlabeled:
        return fit(tokens, labels, config, version), 0, 0
    result = adapt(tokens, labels, unlabeled, config, adaptation, version)
    return result.model, result.pseudo_spam, result.pseudo_ham


def retrain(
    extra_labeled: Sequence[tuple[bytes, bool]],
    corpus: Sequence[CorpusMessage],
    config: TrainingConfig = TrainingConfig(),
    version: str = "candidate",
    unlabeled: Sequence[bytes] = (),
    adaptation: AdaptationConfig = AdaptationConfig(),
) -> RetrainResult:
    """Train a candidate from corpus + (raw message, is_spam) feedback, adapted to the raw
    ``unlabeled`` messages when there are at least ``adaptation.min_unlabeled``, and compare."""
    tokens = [message_tokens(m.raw) for m in corpus]
    labels = np.array([m.is_spam for m in corpus])
    late = np.array([m.is_late for m in corpus], dtype=bool)
    if len(set(labels[late].tolist())) < 2 or len(set(labels[~late].tolist())) < 2:
        raise ValidationError.on(
            "corpus", "the corpus needs spam and ham both before and after the time split"
        )
    extra_tokens = [message_tokens(raw) for raw, _ in extra_labeled]
    extra_labels = [is_spam for _, is_spam in extra_labeled]
    unlabeled_tokens = [message_tokens(raw) for raw in unlabeled]
    early_tokens = [t for t, is_late in zip(tokens, late, strict=True) if not is_late]
    late_tokens = [t for t, is_late in zip(tokens, late, strict=True) if is_late]

    reference = fit(early_tokens, labels[~late], config)
    judged, _, _ = _recipe(
        early_tokens + extra_tokens,
        [*labels[~late], *extra_labels],
        unlabeled_tokens,
        config,
        adaptation,
        version,
    )
    threshold = reference.threshold  # one threshold, so the two FPRs are comparable
    before = metrics(labels[late], predict_proba(reference, late_tokens), threshold)
    after = metrics(labels[late], predict_proba(judged, late_tokens), threshold)
    not_worse = (
        after.roc_auc >= before.roc_auc - AUC_TOLERANCE
        and after.ham_fpr <= before.ham_fpr + FPR_TOLERANCE
    )
    candidate, pseudo_spam, pseudo_ham = _recipe(
        tokens + extra_tokens,
        [*labels, *extra_labels],
        unlabeled_tokens,
        config,
        adaptation,
        version,
    )
    return RetrainResult(
        candidate,
        before,
        after,
        not_worse,
        adapted=len(unlabeled_tokens) >= adaptation.min_unlabeled,
        pseudo_spam=pseudo_spam,
        pseudo_ham=pseudo_ham,
    )
