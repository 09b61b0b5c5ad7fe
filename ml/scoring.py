"""Score one message against the committed model: a verdict, a probability and its reasons.

Scoring skips scikit-learn's per-call input validation (hundreds of microseconds) and computes
the same numbers directly: hash each token to its bucket, average the buckets' log-odds,
apply the Platt sigmoid. ``tests/unit/test_spam_features.py`` holds this equal to the batch path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from pathlib import Path

import numpy as np

from ml.features import message_tokens
from ml.model import SpamModel, bucket_of, load, newest_model_path

REASONS = 5


@dataclass(frozen=True)
class Verdict:
    is_spam: bool
    score: float  # calibrated probability that the message is spam
    model_version: str
    reasons: list[str]  # the tokens that pushed the score most towards the verdict


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> SpamModel:
    return load(path)


def load_model(path: Path | str | None = None) -> SpamModel:
    """The model at ``path`` (default: newest committed version); loaded once, then cached."""
    return _load_cached(Path(path).resolve() if path else newest_model_path())


@dataclass(frozen=True)
class Evidence:
    """A message's tokens and what each says, before calibration."""

    tokens: tuple[str, ...]
    log_odds: tuple[float, ...]
    mean_log_odds: float


def weigh(tokens: list[str], model: SpamModel) -> Evidence:
    """Each distinct bucket counts once, as in the Boolean training matrix."""
    n_features = model.config.n_features
    first_token: dict[int, str] = {}
    for token in tokens:
        first_token.setdefault(bucket_of(token, n_features), token)
    buckets = np.fromiter(first_token, dtype=np.int64, count=len(first_token))
    values = model.token_log_odds[buckets]
    mean = float(values.sum()) / max(len(buckets), 1)
    return Evidence(tuple(first_token.values()), tuple(values.tolist()), mean)


def calibrated_logit(mean_log_odds: float, model: SpamModel) -> float:
    """The Platt sigmoid's input: a·score + b, fitted on out-of-fold scores."""
    return float(model.calibrator.coef_[0, 0]) * mean_log_odds + float(
        model.calibrator.intercept_[0]
    )


def calibrated_logit_to_probability(logit: float) -> float:
    """A numerically stable logistic function."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    exp = math.exp(logit)
    return exp / (1.0 + exp)


def reasons(evidence: Evidence, towards_spam: bool, limit: int = REASONS) -> list[str]:
    """The tokens that pushed hardest in the verdict's direction, strongest first."""
    sign = 1.0 if towards_spam else -1.0
    ranked = sorted(
        (sign * value, token)
        for token, value in zip(evidence.tokens, evidence.log_odds, strict=True)
        if sign * value > 0
    )
    return [token for _, token in reversed(ranked[-limit:])]


def verdict_from(evidence: Evidence, logit: float, model: SpamModel) -> Verdict:
    score = calibrated_logit_to_probability(logit)
    is_spam = score >= model.threshold
    return Verdict(is_spam, score, model.version, reasons(evidence, is_spam))


def score(raw: bytes | str | Message, model: SpamModel | None = None) -> Verdict:
    """Judge one message: full RFC 5322 bytes, an ``EmailMessage``, or "Subject: ...\\n\\nbody"."""
    model = model or load_model()
    evidence = weigh(message_tokens(raw), model)
    return verdict_from(evidence, calibrated_logit(evidence.mean_log_odds, model), model)
