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
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: another tree there is the one measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--peers",
        default=os.environ.get("MAILHUB_PEERS_DIR") or str(ROOT.parent / "shared" / "peers"),
    )
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, args.peers)
    import msggen  # type: ignore[import-not-found]

    from app.adapters.spam_scorer import ModelScorer
    from app.services.inbound import analysis

    corpus = msggen.build_corpus(
        args.messages, 7, "inbound", lambda r: f"u{r.randrange(50)}@bench.test"
    )
    by_kind: dict[str, list[bytes]] = {}
    for _rcpt, kind, data in corpus:  # as sent: dot-stuffed; as received: not
        by_kind.setdefault(kind, []).append(data.replace(b"\r\n..", b"\r\n."))
    scorer = ModelScorer(None)
    scorer.load()
    print(f"tree: {Path(analysis.__file__).resolve().parents[3]}")
    total = 0.0
    for kind, messages in sorted(by_kind.items()):
        best = float("inf")
        for _ in range(args.runs):
            gc.collect()
            start = time.perf_counter()
            for raw in messages:
                analysis.analyze(raw, scorer, True)
            best = min(best, time.perf_counter() - start)
        total += best
        print(f"{kind:6} {len(messages):4} messages  {best / len(messages) * 1e3:7.3f} ms/message")
    print(f"mix    {len(corpus):4} messages  {total / len(corpus) * 1e3:7.3f} ms/message")


if __name__ == "__main__":
    main()
