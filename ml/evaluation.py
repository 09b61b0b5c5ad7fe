"""Metrics for the spam model: stratified 10-fold CV and a time split, in several views.

Views of each test message: ``full`` (the message as collected), ``subject+body`` (every header
but Subject removed, the body left undecoded: how the model is judged outside this corpus) and
``reformatted`` (decoded text, lower-cased, punctuation split off: how public corpora such as
Enron-Spam ship their mail), a check that the features do not hang on case or formatting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ml.corpus import Corpus
from ml.features import message_tokens
from ml.message_text import read_message, subject_and_body
from ml.model import SpamModel, TrainingConfig, fit, predict_proba


@dataclass(frozen=True)
class Metrics:
    messages: int
    spam: int
    threshold: float
    accuracy: float
    spam_precision: float
    spam_recall: float
    ham_fpr: float
    roc_auc: float
    confusion: list[list[int]]  # [[ham→ham, ham→spam], [spam→ham, spam→spam]]

    def as_dict(self) -> dict:
        return asdict(self)


def metrics(
    labels: Sequence[bool] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float,
    flagged: np.ndarray | None = None,
) -> Metrics:
    """Threshold metrics at ``threshold`` (or given verdicts) plus the threshold-free ROC AUC."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probabilities, dtype=float)
    flagged = p >= threshold if flagged is None else flagged
    tp = int(np.sum(flagged & y))
    fp = int(np.sum(flagged & ~y))
    fn = int(np.sum(~flagged & y))
    tn = int(np.sum(~flagged & ~y))
    return Metrics(
        messages=len(y),
        spam=int(y.sum()),
        threshold=threshold,
        accuracy=round((tp + tn) / len(y), 5),
        spam_precision=round(tp / (tp + fp), 5) if tp + fp else 1.0,
        spam_recall=round(tp / (tp + fn), 5) if tp + fn else 0.0,
        ham_fpr=round(fp / (fp + tn), 5) if fp + tn else 0.0,
        roc_auc=round(float(roc_auc_score(y, p)), 5),
        confusion=[[tn, fp], [fn, tp]],
    )


_PUNCTUATION = re.compile(r"([^\w\s])")


def reformatted_view(raw: bytes) -> bytes:
    """Decoded Subject + body text, lower-cased, punctuation split off ("re : hello !")."""
    text = read_message(raw)

    def flatten(value: str) -> str:
        return re.sub(r"[ \t]+", " ", _PUNCTUATION.sub(r" \1 ", value.lower()))

    subject = flatten(text.subject).replace("\n", " ")
    return f"Subject: {subject}\n\n{flatten(text.body)}".encode()


VIEWS: dict[str, Callable[[bytes], bytes]] = {
    "full": lambda raw: raw,
    "subject+body": subject_and_body,
    "reformatted": reformatted_view,
}


def cross_validate(
    tokens: Sequence[list[str]], labels: np.ndarray, config: TrainingConfig, folds: int = 10
) -> Metrics:
    """Stratified k-fold: each fold's model (own calibration, own threshold) scores its fold."""
    probabilities = np.zeros(len(labels))
    flagged = np.zeros(len(labels), dtype=bool)
    thresholds: list[float] = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        model = fit([tokens[i] for i in train], labels[train], config)
        probabilities[test] = predict_proba(model, [tokens[i] for i in test])
        flagged[test] = probabilities[test] >= model.threshold
        thresholds.append(model.threshold)
    # Pooled over folds; each message was judged against its own fold's threshold.
    return metrics(labels, probabilities, config_threshold(thresholds), flagged)


def config_threshold(thresholds: Sequence[float]) -> float:
    """The median of the folds' thresholds, reported alongside pooled CV metrics."""
    return float(np.median(thresholds))


@dataclass(frozen=True)
class TimeSplit:
    train_messages: int
    train_spam: int
    model: SpamModel
    views: dict[str, Metrics]


def time_split(
    corpus: Corpus, tokens: Sequence[list[str]], config: TrainingConfig, views: Sequence[str]
) -> TimeSplit:
    """Train on mail delivered before the split date, test on the later mail in each view."""
    early = [i for i, m in enumerate(corpus.messages) if not m.is_late]
    late = [i for i, m in enumerate(corpus.messages) if m.is_late]
    labels = np.array([m.is_spam for m in corpus.messages])
    model = fit([tokens[i] for i in early], labels[early], config)
    results = {}
    for view in views:
        if view == "full":
            test_tokens = [tokens[i] for i in late]
        else:
            transform = VIEWS[view]
            test_tokens = [message_tokens(transform(corpus.messages[i].raw)) for i in late]
        probabilities = predict_proba(model, test_tokens)
        results[view] = metrics(labels[late], probabilities, model.threshold)
    return TimeSplit(len(early), int(labels[early].sum()), model, results)
