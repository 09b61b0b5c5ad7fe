"""Time the MX helper's work on the inbound benchmark's mix: ms per message, by kind.

    .venv/bin/python bench/mx_analysis.py [--peers DIR] [--messages 600] [--runs 5] [--steps]

What the helper process of ``mailhub mx`` does with each message before the group commit
(``app.services.inbound.analysis.analyze``): the storage parse (MIME, bodies, ``html_to_text``
with the spam model listening) and the spam verdict (the model's own reading of the MIME,
tokens, hashing, weighing). The messages are msggen's inbound mix (seed 7: ~70 % ~2 KB text,
25 % ~50 KB HTML newsletters, 5 % ~1 MB with an attachment), as ``bench/inbound.py`` sends
them. Each kind's figure is the best of ``--runs`` passes; "mix" is their weighted mean. Run it
with PYTHONPATH at the tree to measure (another checkout gives the "before").

``--steps`` also times each step of that work alone, by kind, from the previous step's result:
the MIME tree (``parse_tree``), the storage parse reading it with the model listening, the
model's reading of the message (``read_tree``, or ``read_message`` of the first 256 KB of a
longer one, as ``ModelScorer.score`` does), its tokens (``text_tokens``), ``weigh`` and the
verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# bench/ is this script's folder (sys.path[0]); html_text puts the checkout *after* PYTHONPATH
from html_text import add_peers_option, best_ms, inbound_mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_peers_option(parser)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", action="store_true", help="time each step alone too")
    args = parser.parse_args()

    from app.adapters.spam_scorer import ModelScorer
    from app.services.inbound import analysis

    corpus = inbound_mix(args.peers, args.messages, 7)
    by_kind: dict[str, list[bytes]] = {}
    for kind, raw in corpus:
        by_kind.setdefault(kind, []).append(raw)
    scorer = ModelScorer(None)
    scorer.load()
    print(f"tree: {Path(analysis.__file__).resolve().parents[3]}")
    total = 0.0  # ms, summed over every message
    for kind, messages in sorted(by_kind.items()):
        ms = best_ms(lambda raw: analysis.analyze(raw, scorer, True), messages, args.runs)
        total += ms * len(messages)
        print(f"{kind:6} {len(messages):4} messages  {ms:7.3f} ms/message")
    print(f"mix    {len(corpus):4} messages  {total / len(corpus):7.3f} ms/message")
    if args.steps:
        for kind, messages in sorted(by_kind.items()):
            print(
                f"{kind}: "
                + ", ".join(f"{n} {ms:.3f}" for n, ms in _steps(scorer, messages, args.runs))
            )


def _steps(scorer: Any, messages: list[bytes], runs: int) -> list[tuple[str, float]]:
    """ms per message of each step of ``analysis.analyze(raw, scorer, True)``, alone."""
    from app.adapters.spam_scorer import bounded_for_scoring
    from app.domain.parsing import parse_message, parse_tree
    from ml.features import text_tokens
    from ml.scoring import calibrated_logit, read_text, verdict_from, weigh

    model = scorer.model
    trees = [parse_tree(raw) for raw in messages]
    listened = []
    for raw, tree in zip(messages, trees, strict=True):
        shared = scorer.shared_html()
        parse_message(raw, html_listener=shared, tree=tree)
        listened.append((raw, tree, shared))

    def storage_parse(item: tuple[bytes, Any]) -> None:
        parse_message(item[0], html_listener=scorer.shared_html(), tree=item[1])

    def model_reading(item: tuple[bytes, Any, Any]) -> Any:
        raw, tree, shared = item  # as ModelScorer.score hands them to ml.score
        bounded = bounded_for_scoring(raw)
        return read_text(bounded, shared.documents, tree if bounded is raw else None)

    texts = [model_reading(item) for item in listened]
    tokens = [text_tokens(text) for text in texts]
    evidence = [weigh(t, model) for t in tokens]
    return [
        ("tree", best_ms(parse_tree, messages, runs)),
        ("storage parse", best_ms(storage_parse, list(zip(messages, trees, strict=True)), runs)),
        ("model reading", best_ms(model_reading, listened, runs)),
        ("tokens", best_ms(text_tokens, texts, runs)),
        ("weigh", best_ms(lambda t: weigh(t, model), tokens, runs)),
        (
            "verdict",
            best_ms(
                lambda e: verdict_from(e, calibrated_logit(e.mean_log_odds, model), model),
                evidence,
                runs,
            ),
        ),
    ]


if __name__ == "__main__":
    main()
