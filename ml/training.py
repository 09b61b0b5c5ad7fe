"""Use cases behind `python -m ml train`, `evaluate`, `adapt` and `evaluate-transfer`."""

from __future__ import annotations

import platform
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy
import sklearn
import skops

from app.domain.errors import ValidationError
from ml.adaptation import AdaptationConfig
from ml.corpus import TARBALL_SHA256, TIME_SPLIT, Corpus, content_sha256
from ml.evaluation import Metrics, cross_validate, time_split
from ml.features import message_tokens
from ml.model import MODELS_DIR, SpamModel, TrainingConfig, bucket_of, fit, save, save_as
from ml.retrain import RetrainResult, retrain
from ml.transfer import SPLITS, TransferResult, transfer

VERSION = "1.1.0"
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "spam-model.md"
VIEWS = ("full", "subject+body", "reformatted")


@dataclass(frozen=True)
class Evaluation:
    cross_validation: Metrics
    time_split: dict[str, Metrics]
    time_split_sizes: dict[str, int]
    threshold_time_split: float


def corpus_tokens(corpus: Corpus) -> list[list[str]]:
    """Tokens of every corpus message, in corpus order."""
    return [message_tokens(message.raw) for message in corpus.messages]


def evaluate_corpus(
    corpus: Corpus, tokens: Sequence[list[str]], config: TrainingConfig = TrainingConfig()
) -> Evaluation:
    """10-fold CV on everything, and the time split in every view."""
    labels = np.array([m.is_spam for m in corpus.messages])
    split = time_split(corpus, tokens, config, VIEWS)
    late = sum(m.is_late for m in corpus.messages)
    late_spam = sum(m.is_late and m.is_spam for m in corpus.messages)
    return Evaluation(
        cross_validation=cross_validate(tokens, labels, config),
        time_split=split.views,
        time_split_sizes={
            "train_messages": split.train_messages,
            "train_spam": split.train_spam,
            "test_messages": late,
            "test_spam": late_spam,
        },
        threshold_time_split=split.model.threshold,
    )


def _token_evidence(
    model: SpamModel, tokens: Sequence[list[str]]
) -> tuple[dict[int, str], np.ndarray]:
    """A readable token for each hashed bucket seen (the first one met), and each bucket's
    count in the training data (the df both evidence reports weigh log-odds by)."""
    n_features = model.config.n_features
    names: dict[int, str] = {}
    for message in tokens:
        for token in message:
            names.setdefault(bucket_of(token, n_features), token)
    return names, model.nb.feature_count_.sum(axis=0)


def top_tokens(
    model: SpamModel, tokens: Sequence[list[str]], limit: int = 25
) -> dict[str, list[tuple[str, float, int]]]:
    """The tokens carrying most evidence each way: |log-odds| × messages containing them."""
    names, df = _token_evidence(model, tokens)
    rows = [
        (name, float(model.token_log_odds[bucket]), int(df[bucket]))
        for bucket, name in names.items()
    ]
    rows.sort(key=lambda row: row[1] * row[2])
    return {
        "spam": [(n, round(lo, 2), d) for n, lo, d in reversed(rows[-limit:])],
        "ham": [(n, round(lo, 2), d) for n, lo, d in rows[:limit]],
    }


def evidence_by_kind(model: SpamModel, tokens: Sequence[list[str]]) -> dict[str, float]:
    """Share of all |log-odds| × df evidence held by each token namespace."""
    names, df = _token_evidence(model, tokens)
    mass: defaultdict[str, float] = defaultdict(float)
    for bucket, name in names.items():
        mass[name.split(":", 1)[0]] += abs(float(model.token_log_odds[bucket])) * float(df[bucket])
    total = sum(mass.values()) or 1.0
    ranked = sorted(mass.items(), key=lambda item: -item[1])
    return {kind: round(value / total, 3) for kind, value in ranked}


def train(
    corpus: Corpus,
    directory: Path = MODELS_DIR,
    version: str = VERSION,
    config: TrainingConfig = TrainingConfig(),
) -> tuple[Path, SpamModel, Evaluation]:
    """Train on the whole corpus, evaluate, and write the model file and its card."""
    tokens = corpus_tokens(corpus)
    labels = [m.is_spam for m in corpus.messages]
    model = fit(tokens, labels, config, version)
    evaluation = evaluate_corpus(corpus, tokens, config)
    card = {
        "model": "MultinomialNB over Boolean hashed tokens, mean log-odds, Platt-calibrated",
        "training_data": _training_data_card(corpus, labels),
        "metrics": _metrics_card(evaluation),
        "libraries": _libraries(),
    }
    model_path, _ = save(model, directory, card)
    return model_path, model, evaluation


def _training_data_card(corpus: Corpus, labels: Sequence[bool]) -> dict:
    return {
        "corpus": corpus.version,
        "tarball_sha256": TARBALL_SHA256,
        "messages_sha256": corpus.sha256,
        "messages": len(labels),
        "spam": int(sum(labels)),
        "inputs": "Subject + body only (no other header is read except to decode MIME)",
    }


@dataclass(frozen=True)
class AdaptOutcome:
    written: bool
    path: Path | None
    version: str
    result: RetrainResult


def adapt_to_mail(
    corpus: Corpus,
    unlabeled: Sequence[tuple[str, bytes]],
    out: Path,
    version: str | None = None,
    config: TrainingConfig = TrainingConfig(),
    adaptation: AdaptationConfig = AdaptationConfig(),
) -> AdaptOutcome:
    """`python -m ml adapt`: the weekly job's recipe offline, with no feedback — corpus + EM
    over ``unlabeled`` (name, raw) messages, written to ``out`` only if not worse on the
    held-out later period. The version names the unlabeled mail's content, so the same inputs
    give the same file, byte for byte."""
    if len(unlabeled) < adaptation.min_unlabeled:
        raise ValidationError.on(
            "unlabeled",
            f"{len(unlabeled)} unlabeled messages; adapting needs at least "
            f"{adaptation.min_unlabeled}",
        )
    digest = content_sha256(("unlabeled", name, raw) for name, raw in unlabeled)
    version = version or f"{VERSION}-adapted-{digest[:12]}"
    result = retrain(
        [], corpus.messages, config, version, [raw for _, raw in unlabeled], adaptation
    )
    if not result.not_worse:
        return AdaptOutcome(False, None, version, result)
    labels = [m.is_spam for m in corpus.messages]
    card = {
        "model": "MultinomialNB over Boolean hashed tokens, mean log-odds, Platt-calibrated; "
        "semi-supervised EM over unlabeled mail (Nigam et al. 2000)",
        "training_data": _training_data_card(corpus, labels),
        "unlabeled_data": {
            "messages": len(unlabeled),
            "messages_sha256": digest,
            "pseudo_spam": result.pseudo_spam,
            "pseudo_ham": result.pseudo_ham,
        },
        "adaptation": asdict(adaptation),
        "held_out": {
            "period": f"delivered from {TIME_SPLIT.date()}",
            "adapted": result.candidate_metrics.as_dict(),
            "reference": result.reference_metrics.as_dict(),
        },
        "libraries": _libraries(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    path, _ = save_as(result.candidate, out, card)
    return AdaptOutcome(True, path, version, result)


def _libraries() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def evaluate_transfer(
    corpus: Corpus,
    tokens: Sequence[list[str]],
    config: TrainingConfig = TrainingConfig(),
    adaptation: AdaptationConfig = AdaptationConfig(),
) -> list[TransferResult]:
    """Every boundary-crossing split of ``ml.transfer``, before and after adapting."""
    return [transfer(corpus, tokens, split, config, adaptation) for split in SPLITS]


def render_transfer_report(
    results: Sequence[TransferResult], adaptation: AdaptationConfig = AdaptationConfig()
) -> str:
    """The generated transfer block of docs/spam-model.md."""
    lines = [
        "<!-- transfer:start -->",
        "### Transfer results (generated by `python -m ml evaluate-transfer`)",
        "",
        f"Adaptation `{adaptation}`. Held-out half of each split's test side, Subject + body "
        "view; the other half was the unlabeled stream. Spam threshold = the model's own (for "
        "the adapted model: the stricter of the labelled mail's and EM's spam confidence; the "
        'row before it shows the labelled mail\'s alone); "probable" = its probably-spam '
        "threshold.",
        "",
        "| split | model | train (spam) | stream (pseudo spam / ham) | threshold | ROC AUC "
        "| ham FPR | spam recall | probable thr. | ham FPR | spam recall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, at, probable in (
            ("not adapted", r.before, r.before_probable),
            ("EM-adapted, labelled mail's threshold", r.after_labelled, r.after_probable),
            ("EM-adapted", r.after, r.after_probable),
        ):
            stream = (
                f"{r.stream_messages} ({r.pseudo_spam} / {r.pseudo_ham})"
                if name.startswith("EM-adapted")
                else "–"
            )
            lines.append(
                f"| {r.split} | {name} | {r.train_messages} ({r.train_spam}) | {stream} | "
                f"{at.threshold:g} | {at.roc_auc:.4f} | {at.ham_fpr:.4f} | "
                f"{at.spam_recall:.4f} | {probable.threshold:g} | {probable.ham_fpr:.4f} | "
                f"{probable.spam_recall:.4f} |"
            )
    lines.append("<!-- transfer:end -->")
    return "\n".join(lines)


def write_transfer_report(text: str, path: Path = DOC_PATH) -> None:
    """Replace the generated transfer block of the doc (appended if missing)."""
    _replace_block(path, "transfer", text, new_doc="# Spam model\n")


def _metrics_card(evaluation: Evaluation) -> dict:
    return {
        "cross_validation_10_fold": evaluation.cross_validation.as_dict(),
        "time_split": {
            "split_date": TIME_SPLIT.date().isoformat(),
            **evaluation.time_split_sizes,
            **{view: m.as_dict() for view, m in evaluation.time_split.items()},
        },
    }


def _row(name: str, m: Metrics) -> str:
    (tn, fp), (fn, tp) = m.confusion
    return (
        f"| {name} | {m.messages} ({m.spam} spam) | {m.threshold:.2f} | {m.accuracy:.4f} | "
        f"{m.spam_precision:.4f} | {m.spam_recall:.4f} | {m.ham_fpr:.4f} | {m.roc_auc:.4f} | "
        f"{tn} / {fp} / {fn} / {tp} |"
    )


def render_report(
    evaluation: Evaluation,
    model: SpamModel,
    tops: dict[str, list[tuple[str, float, int]]],
    kinds: dict[str, float],
    model_path: Path,
) -> str:
    """The generated part of docs/spam-model.md."""
    sizes = evaluation.time_split_sizes
    lines = [
        "<!-- generated:start -->",
        "## Results (generated by `python -m ml evaluate`)",
        "",
        f"Model `{model_path.name}` (version {model.version}), threshold "
        f"**{model.threshold:.2f}**, probably-spam threshold **{model.probable_threshold:.2f}**, "
        f"parameters `{model.config}`.",
        "",
        f"Time split at {TIME_SPLIT.date()}: train {sizes['train_messages']} messages "
        f"({sizes['train_spam']} spam), test {sizes['test_messages']} "
        f"({sizes['test_spam']} spam); the time-split model's own threshold is "
        f"{evaluation.threshold_time_split:.2f}.",
        "",
        "| evaluation | test messages | threshold | accuracy | spam precision | spam recall "
        "| ham FPR | ROC AUC | confusion tn / fp / fn / tp |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("10-fold CV (pooled)", evaluation.cross_validation),
    ]
    for view, m in evaluation.time_split.items():
        lines.append(_row(f"time split, {view}", m))
    lines += ["", "Evidence share by token kind (|log-odds| × messages):", ""]
    lines.append(", ".join(f"`{kind}` {share:.1%}" for kind, share in kinds.items()))
    for side in ("spam", "ham"):
        lines += ["", f"Top {side} tokens (token, log-odds, training messages containing it):", ""]
        lines.append(", ".join(f"`{t}` {lo:+.2f} ({df})" for t, lo, df in tops[side]))
    lines += ["<!-- generated:end -->"]
    return "\n".join(lines)


def write_report(text: str, path: Path = DOC_PATH) -> None:
    """Replace the generated block of the doc (hand-written text around it is kept)."""
    _replace_block(path, "generated", text, new_doc="# Spam model\n\n<!-- generated:start -->")


def _replace_block(path: Path, name: str, text: str, *, new_doc: str) -> None:
    """Put ``text`` in place of the doc's ``<!-- name:start -->…<!-- name:end -->`` block; a
    doc without one gets an empty block appended first, a missing doc starts as ``new_doc``.
    Hand-written text around the block is kept."""
    block = re.compile(rf"<!-- {name}:start -->.*<!-- {name}:end -->", re.S)
    current = path.read_text() if path.exists() else new_doc
    if not block.search(current):
        current += f"\n<!-- {name}:start --><!-- {name}:end -->\n"
    path.write_text(block.sub(lambda _: text, current, count=1))
