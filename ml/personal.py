"""Per-user feedback on top of the global model (pure: the caller stores the counts).

When a user marks a message spam (or not spam), the caller adds 1 to ``spam_count`` (or
``ham_count``) of each token from ``tokens_for_feedback(raw)`` in that user's
``{token: (spam_count, ham_count)}`` map. ``score_for_user`` then shifts the global logit by

    K · Σ idf(t)·log((s_t + ½) / (h_t + ½)) / Σ idf(t)        over the message's tokens t

— the idf-weighted average of the user's own evidence. A token the user never marked gives 0;
idf (from the training corpus) keeps common words like ``word:the`` from making every message
"like" a marked one. A message identical to one marked spam once shifts by K·log 3 ≈ +27,
enough to overturn any global verdict (the global logit is clipped to ±``GLOBAL_LOGIT_LIMIT``
first); one that shares only common words barely moves. Marking not-spam works the same way
in the other direction, and a token marked both ways cancels out.

The same clicks move the user's own **probably-spam threshold**, kept as an offset from the
model's (``moved_probable_offset``), so it survives a new model and needs no model to update:
a message marked spam that was not even flagged lowers it by ``THRESHOLD_STEP``; a flagged
message marked not spam raises it by as much; agreeing clicks leave it. In use
(``user_probable_threshold``) it stays between ``PROBABLE_FLOOR`` and the model's spam
threshold — at the top the flag never shows: the user has said it only annoys them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.message import Message

import numpy as np

from ml.features import message_tokens
from ml.model import SpamModel, bucket_of
from ml.scoring import Verdict, calibrated_logit, load_model, verdict_from, weigh

STRENGTH = 25.0  # K above
GLOBAL_LOGIT_LIMIT = 20.0
THRESHOLD_STEP = 0.05
PROBABLE_FLOOR = 0.5  # below it the flag would be wrong about most of what it marks
MAX_OFFSET = 0.5  # past it a threshold is clipped in use anyway: stop counting


def tokens_for_feedback(raw: bytes | str | Message) -> list[str]:
    """The tokens whose counts a user's "spam" / "not spam" click should increment."""
    return message_tokens(raw)


def _idf(model: SpamModel, tokens: tuple[str, ...]) -> np.ndarray:
    n_features = model.config.n_features
    messages = float(model.nb.class_count_.sum())
    buckets = [bucket_of(token, n_features) for token in tokens]
    df = model.nb.feature_count_.sum(axis=0)[buckets]
    return np.log((messages + 1.0) / (df + 1.0))


def personal_shift(
    tokens: tuple[str, ...], user_counts: Mapping[str, tuple[int, int]], model: SpamModel
) -> float:
    """The logit shift the user's own feedback adds for a message with these tokens."""
    if not tokens or not user_counts:
        return 0.0
    weights = _idf(model, tokens)
    evidence = np.array(
        [
            math.log((user_counts[t][0] + 0.5) / (user_counts[t][1] + 0.5))
            if t in user_counts
            else 0
            for t in tokens
        ]
    )
    total = float(weights.sum())
    return STRENGTH * float(weights @ evidence) / total if total > 0 else 0.0


def score_for_user(
    raw: bytes | str | Message,
    user_counts: Mapping[str, tuple[int, int]],
    model: SpamModel | None = None,
    probable_offset: float = 0.0,
) -> Verdict:
    """The global verdict, moved by what this user marked spam / not spam before, and flagged
    "probably spam" at the user's own threshold (the model's, moved by ``probable_offset``)."""
    model = model or load_model()
    evidence = weigh(message_tokens(raw), model)
    base = calibrated_logit(evidence.mean_log_odds, model)
    base = max(-GLOBAL_LOGIT_LIMIT, min(GLOBAL_LOGIT_LIMIT, base))
    shift = personal_shift(evidence.tokens, user_counts, model)
    return verdict_from(
        evidence, base + shift, model, user_probable_threshold(model, probable_offset)
    )


def user_probable_threshold(model: SpamModel, offset: float) -> float:
    """The model's probably-spam threshold moved by a user's offset, within its bounds."""
    return min(model.threshold, max(PROBABLE_FLOOR, model.probable_threshold + offset))


def moved_probable_offset(
    offset: float, was_spam: bool, was_probable: bool, marked_spam: bool
) -> float:
    """A user's offset after they marked a message whose verdict (for them) was as given."""
    if marked_spam and not was_spam and not was_probable:
        moved = offset - THRESHOLD_STEP  # a miss: flag more
    elif not marked_spam and was_probable:
        moved = offset + THRESHOLD_STEP  # a false flag: flag less
    else:
        return offset
    return round(min(MAX_OFFSET, max(-MAX_OFFSET, moved)), 6)
