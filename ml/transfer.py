"""Evaluations that cross a real boundary, before and after adapting to the other side's mail.

Cross-validation and the time split draw training and test mail from the same few mailing
lists; a model can score 0.99 there and 0.85 on another organisation's mail. Two splits here
cross a boundary inside the SpamAssassin corpus instead:

- **sources** ("another organisation"): train on the ham of the technical mailing lists
  (ILUG, FoRK, exmh, razor, rpm, SpamAssassin, …) and the older spam (spam-2); test on ham the
  model never saw the like of — personal mail, commercial newsletters (hard-ham), RSS news
  digests, the Fortean Times list — against the later spam (spam-1). Which list a message came
  from is read from its List-Id header here, and only here: the model never reads headers.
- **era**: the time split — train on mail delivered before 2002-09-01, test on the later mail.

Each test side is cut in two by a hash of the file name: the **stream** half is given to
``ml.adaptation.adapt`` *unlabeled* (what a deployment would see arrive), the **held-out** half
is scored — by the unadapted and by the adapted model, in the Subject + body view (the only
input foreign mail is judged on). Nothing from any other corpus is used for training or tuning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import compat32

import numpy as np

from ml.adaptation import AdaptationConfig, adapt
from ml.corpus import Corpus, CorpusMessage
from ml.evaluation import Metrics, metrics
from ml.features import message_tokens
from ml.message_text import subject_and_body
from ml.model import SpamModel, TrainingConfig, fit, predict_proba

_HEADERS = BytesParser(policy=compat32)
_LIST_ID = re.compile(r"<([^>.]+)")
# Ham the "sources" split holds out: mail with no list header (personal mail, newsletters,
# RSS digests — "rss" is recognised by sender) and a non-technical list.
FOREIGN_HAM_SOURCES = frozenset({"none", "rss", "zzzzteana"})
SPLITS = ("sources", "era")


def ham_source(raw: bytes) -> str:
    """The mailing list a message came through (List-Id and kin), "rss", or "none"."""
    headers = _HEADERS.parsebytes(raw, headersonly=True)
    list_id = str(
        headers.get("List-Id") or headers.get("X-Mailing-List") or headers.get("Mailing-List") or ""
    )
    match = _LIST_ID.search(list_id)
    if match:
        return match.group(1).casefold()
    if "zzzzteana" in list_id:
        return "zzzzteana"
    if list_id:
        return "other-list"
    sender = str(headers.get("From", "")).casefold()
    if "newsisfree" in sender or "rssfeeds" in sender or "boingboing" in sender:
        return "rss"
    return "none"


def _is_foreign(message: CorpusMessage) -> bool:
    if message.is_spam:
        return message.group == "spam-1"
    return message.group == "hard-ham-1" or ham_source(message.raw) in FOREIGN_HAM_SOURCES


def split_indices(corpus: Corpus, split: str) -> tuple[list[int], list[int]]:
    """(training, test) message indices of one boundary-crossing split."""
    if split == "sources":
        test = [i for i, m in enumerate(corpus.messages) if _is_foreign(m)]
    elif split == "era":
        test = [i for i, m in enumerate(corpus.messages) if m.is_late]
    else:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    held = set(test)
    return [i for i in range(len(corpus.messages)) if i not in held], test


def in_stream(message: CorpusMessage) -> bool:
    """Whether a test message belongs to the unlabeled stream (else to the held-out half)."""
    return hashlib.sha256(f"{message.group}/{message.name}".encode()).digest()[0] % 2 == 0


@dataclass(frozen=True)
class TransferResult:
    split: str
    train_messages: int
    train_spam: int
    stream_messages: int  # unlabeled; adapted on
    pseudo_spam: int
    pseudo_ham: int
    before: Metrics  # held-out half, unadapted model, at its threshold
    after: Metrics  # held-out half, adapted model, at its threshold
    after_labelled: Metrics  # the adapted model at the threshold of the labelled mail alone
    before_probable: Metrics  # the same scores at the "probably spam" thresholds
    after_probable: Metrics

    def as_dict(self) -> dict:
        return {
            "split": self.split,
            "train_messages": self.train_messages,
            "train_spam": self.train_spam,
            "stream_messages": self.stream_messages,
            "pseudo_spam": self.pseudo_spam,
            "pseudo_ham": self.pseudo_ham,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "after_labelled": self.after_labelled.as_dict(),
            "before_probable": self.before_probable.as_dict(),
            "after_probable": self.after_probable.as_dict(),
        }


def _judge(
    model: SpamModel, tokens: Sequence[list[str]], labels: np.ndarray, *thresholds: float
) -> list[Metrics]:
    """At the model's spam threshold, its probably-spam threshold, and any ``thresholds``."""
    probabilities = predict_proba(model, tokens)
    at = (model.threshold, model.probable_threshold, *thresholds)
    return [metrics(labels, probabilities, threshold) for threshold in at]


def transfer(
    corpus: Corpus,
    tokens: Sequence[list[str]],
    split: str,
    config: TrainingConfig = TrainingConfig(),
    adaptation: AdaptationConfig = AdaptationConfig(),
) -> TransferResult:
    """Train on one side of ``split``, adapt on the other side's stream, judge its held-out half.

    ``tokens``: the corpus messages' tokens as collected (for training); the test side is
    re-tokenized from its Subject + body view.
    """
    train, test = split_indices(corpus, split)
    labels = np.array([m.is_spam for m in corpus.messages])
    train_tokens = [tokens[i] for i in train]
    stream = [i for i in test if in_stream(corpus.messages[i])]
    held_out = [i for i in test if not in_stream(corpus.messages[i])]

    def view(indices: list[int]) -> list[list[str]]:
        return [message_tokens(subject_and_body(corpus.messages[i].raw)) for i in indices]

    stream_tokens, held_out_tokens = view(stream), view(held_out)
    before = fit(train_tokens, labels[train], config)
    adapted = adapt(train_tokens, labels[train], stream_tokens, config, adaptation)
    before_metrics = _judge(before, held_out_tokens, labels[held_out])
    after_metrics = _judge(
        adapted.model, held_out_tokens, labels[held_out], adapted.labelled_threshold
    )
    return TransferResult(
        split=split,
        train_messages=len(train),
        train_spam=int(labels[train].sum()),
        stream_messages=len(stream),
        pseudo_spam=adapted.pseudo_spam,
        pseudo_ham=adapted.pseudo_ham,
        before=before_metrics[0],
        after=after_metrics[0],
        after_labelled=after_metrics[2],
        before_probable=before_metrics[1],
        after_probable=after_metrics[1],
    )
