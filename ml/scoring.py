"""Score one message against the committed model: a verdict, a probability and its reasons.

Scoring skips scikit-learn's per-call input validation (hundreds of microseconds) and computes
the same numbers directly: hash each token to its bucket, average the buckets' log-odds,
apply the Platt sigmoid. ``tests/unit/test_spam_features.py`` holds this equal to the batch path.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from pathlib import Path

import mmh3
import numpy as np

from ml.features import text_tokens
from ml.message_text import MessageText, read_message, read_tree
from ml.model import SpamModel, load, newest_model_path

REASONS = 5


@dataclass(frozen=True)
class Verdict:
    is_spam: bool  # "definitely spam": filed in Spam
    score: float  # calibrated probability that the message is spam
    model_version: str
    reasons: list[str]  # the tokens that pushed the score most towards the verdict
    # "Probably spam": not spam, but at or above the probably-spam threshold — stays in the
    # Inbox with a visible flag. Never true together with ``is_spam``.
    probable: bool = False


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> SpamModel:
    return load(path)


def load_model(path: Path | str | None = None) -> SpamModel:
    """The model at ``path`` (default: newest committed version); loaded once, then cached."""
    return _load_cached(Path(path).resolve() if path else newest_model_path())


class Evidence:
    """A message's tokens and what each says, before calibration.

    ``tokens`` (each distinct bucket named by its first token, in order of first appearance) and
    ``log_odds`` are built when first asked: an HTML mail has ~10,000 of them, and scoring needs
    only the mean and the five strongest (``reasons`` reads the arrays).
    """

    __slots__ = ("_all_tokens", "_first", "values", "mean_log_odds", "_tokens", "_log_odds")

    def __init__(
        self, all_tokens: list[str], first: np.ndarray, values: np.ndarray, mean: float
    ) -> None:
        self._all_tokens = all_tokens
        self._first = first  # index in all_tokens of each distinct bucket's first token
        self.values = values  # float64 log-odds of each distinct bucket, same order
        self.mean_log_odds = mean
        self._tokens: tuple[str, ...] | None = None
        self._log_odds: tuple[float, ...] | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        if self._tokens is None:
            all_tokens = self._all_tokens
            self._tokens = tuple([all_tokens[i] for i in self._first.tolist()])
        return self._tokens

    @property
    def log_odds(self) -> tuple[float, ...]:
        if self._log_odds is None:
            self._log_odds = tuple(self.values.tolist())
        return self._log_odds

    def token_at(self, index: int) -> str:
        return self._all_tokens[int(self._first[index])]


def token_buckets(tokens: list[str], n_features: int) -> np.ndarray:
    """``bucket_of`` of every token, in order (an HTML mail has thousands).

    The same hash as ``FeatureHasher`` (MurmurHash3 x86 32-bit, seed 0, signed, of the UTF-8
    bytes), by mmh3's C function mapped over the list, then ``abs`` and the modulo on the whole
    array. In 64 bits ``abs`` is exact for every 32-bit hash, -2**31 included (scikit-learn
    special-cases that one to the same bucket). 1.4-1.8x faster than scikit-learn's own
    hashing loop, which is private (``_hashing_fast.transform``) and made one bytes object
    and two array appends per token.

    mmh3 5.3.1 crashes the process (a segmentation fault) on a str holding a lone surrogate,
    which has no UTF-8 form: such text is refused first, with the ``UnicodeEncodeError``
    scikit-learn's loop raised for it (one join and, for non-ASCII text only, one encode).
    """
    text = "".join(tokens)
    if not text.isascii():
        text.encode()  # a lone surrogate raises here, never reaching mmh3
    hashes = np.fromiter(map(mmh3.hash, tokens), dtype=np.int64, count=len(tokens))
    return np.abs(hashes) % n_features


_NO_INDEX = np.iinfo(np.intp).max
_lowest = threading.local()  # per thread: bucket count -> array of _NO_INDEX between calls


def _lowest_index(size: int) -> np.ndarray:
    arrays: dict[int, np.ndarray] | None = getattr(_lowest, "arrays", None)
    if arrays is None:
        arrays = _lowest.arrays = {}
    array = arrays.get(size)
    if array is None:
        array = arrays[size] = np.full(size, _NO_INDEX, dtype=np.intp)
    return array


def first_occurrences(buckets: np.ndarray, n_features: int) -> np.ndarray:
    """The index of the first occurrence of each distinct bucket, in order: what
    ``np.unique(buckets, return_index=True)[1]``, sorted, gives, at a sixth of the cost of
    sorting on an HTML mail's ~10,000 tokens (0.53 → 0.09 ms), with no sort at all.

    An array with an entry per bucket (``n_features``, every bucket below it), all
    ``_NO_INDEX`` between calls (kept per thread: 8 MB for the model's 2**20 buckets), takes
    each bucket's lowest index (``np.minimum.at``, which applies every repeat of an index); an
    index is a first occurrence when it is its bucket's lowest, and ``flatnonzero`` lists those
    in order. The touched entries are set back before returning.
    """
    if len(buckets) == 0:
        return np.empty(0, dtype=np.intp)
    lowest = _lowest_index(n_features)
    order = np.arange(len(buckets), dtype=np.intp)
    try:
        np.minimum.at(lowest, buckets, order)
        return np.flatnonzero(lowest[buckets] == order)
    finally:
        lowest[buckets] = _NO_INDEX


def weigh(tokens: list[str], model: SpamModel) -> Evidence:
    """Each distinct bucket counts once, as in the Boolean training matrix; buckets keep their
    order of first appearance and are named by their first token."""
    hashed = token_buckets(tokens, model.config.n_features)
    first = first_occurrences(hashed, model.config.n_features)
    values = model.token_log_odds[hashed[first]]
    mean = float(values.sum()) / max(len(first), 1)
    return Evidence(tokens, first, values, mean)


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
    signed = sign * evidence.values  # the same doubles as ``sign * value`` one by one
    candidates = np.flatnonzero(signed > 0)
    if len(candidates) > limit:
        # Only values at least the limit-th largest can rank (ties at that value all stay in,
        # so the tie-break on the token below sees every one of them).
        cut = len(candidates) - limit
        kth = np.partition(signed[candidates], cut)[cut]
        candidates = candidates[signed[candidates] >= kth]
    # The largest (value, token) pairs: what the tail of a full sort gives, as the pairs are
    # distinct (a token names one bucket).
    ranked = heapq.nlargest(
        limit, ((float(signed[i]), evidence.token_at(i)) for i in candidates.tolist())
    )
    return [token for _, token in ranked]


def verdict_from(
    evidence: Evidence, logit: float, model: SpamModel, probable_threshold: float | None = None
) -> Verdict:
    """``probable_threshold``: a user's own (``ml.personal``); default the model's."""
    score = calibrated_logit_to_probability(logit)
    is_spam = score >= model.threshold
    probable_at = model.probable_threshold if probable_threshold is None else probable_threshold
    probable = not is_spam and score >= probable_at
    return Verdict(is_spam, score, model.version, reasons(evidence, is_spam), probable)


def read_text(
    raw: bytes | str | Message,
    parsed_html: Mapping[str, tuple[str, list[str], int]] | None = None,
    tree: Message | None = None,
) -> MessageText:
    """What the model reads of a message (``score``'s arguments): from ``tree`` when another
    parser built it of the same bytes ``raw``, else from ``raw`` itself."""
    if tree is not None and isinstance(raw, bytes):
        return read_tree(tree, raw, parsed_html)
    return read_message(raw, parsed_html)


def score(
    raw: bytes | str | Message,
    model: SpamModel | None = None,
    parsed_html: Mapping[str, tuple[str, list[str], int]] | None = None,
    tree: Message | None = None,
) -> Verdict:
    """Judge one message: full RFC 5322 bytes, an ``EmailMessage``, or "Subject: ...\\n\\nbody".

    ``parsed_html``: HTML bodies another parse has read already (``SharedHtml.documents``);
    ``tree``: the MIME tree another parser built of the same bytes ``raw`` (``read_tree``).
    """
    model = model or load_model()
    evidence = weigh(text_tokens(read_text(raw, parsed_html, tree)), model)
    return verdict_from(evidence, calibrated_logit(evidence.mean_log_odds, model), model)
