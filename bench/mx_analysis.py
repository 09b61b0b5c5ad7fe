"""Time the MX helper's work on the inbound benchmark's mix: ms per message, by kind.

    .venv/bin/python bench/mx_analysis.py [--peers DIR] [--messages 600] [--runs 5]

What the helper process of ``mailhub mx`` does with each message before the group commit
(``app.services.inbound.analysis.analyze``): the storage parse (MIME, bodies, ``html_to_text``
with the spam model listening) and the spam verdict (the model's own reading of the MIME,
tokens, hashing, weighing). The messages are msggen's inbound mix (seed 7: ~70 % ~2 KB text,
25 % ~50 KB HTML newsletters, 5 % ~1 MB with an attachment), as ``bench/inbound.py`` sends
them. Each kind's figure is the best of ``--runs`` passes; "mix" is their weighted mean. Run it
with PYTHONPATH at the tree to measure (another checkout gives the "before").
"""

from __future__ import annotations

import argparse
from pathlib import Path

# bench/ is this script's folder (sys.path[0]); html_text puts the checkout *after* PYTHONPATH
from html_text import add_peers_option, best_ms, inbound_mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_peers_option(parser)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
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


if __name__ == "__main__":
    main()
