"""The MX's analysis of the inbound mix, with the fast MIME parse and with stock's.

    .venv/bin/python bench/mime_parse.py [--n 400] [--reps 5]

msggen's inbound mix (fixed seed 42: 70% ~2 KB text, 25% ~50 KB HTML, 5% ~1 MB attachment), the
same messages the inbound benchmark sends. For each kind: the MIME parse alone
(``mime_fast.parse_bytes`` against stock ``BytesParser.parsebytes``, storage's policy) and the
MX's whole analysis (``app.services.inbound.analysis.analyze``: parse, HTML, spam score) with
``mime_fast.ACTIVE`` on and off; best of ``--reps`` passes, process time per message, and the
mix's average weighted by the kinds' shares. Run it under the benchmark lock on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from email.parser import BytesParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.environ.get("MAILHUB_PEERS_DIR", str(ROOT.parent / "shared" / "peers")))

from app.adapters.spam_scorer import ModelScorer  # noqa: E402
from app.domain import mime_fast  # noqa: E402
from app.domain.parsing import _PARSE_POLICY  # noqa: E402
from app.services.inbound.analysis import analyze  # noqa: E402


def best_ms(work: Callable[[bytes], object], messages: list[bytes], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        for raw in messages:
            work(raw)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import msggen  # type: ignore[import-not-found]

    corpus = msggen.build_corpus(args.n, 42, "inbound", lambda r: f"u{r.randrange(50)}@bench.test")
    kinds: dict[str, list[bytes]] = {}
    for _, kind, raw in corpus:
        kinds.setdefault(kind, []).append(raw)
    scorer = ModelScorer()
    scorer.load()
    print(f"fast MIME parse active on this Python: {mime_fast.ACTIVE}")
    mix = {"stock": 0.0, "fast": 0.0}
    for kind, messages in kinds.items():
        share = len(messages) / len(corpus)
        stock_parse = best_ms(
            lambda raw: BytesParser(policy=_PARSE_POLICY).parsebytes(raw), messages, args.reps
        )
        fast_parse = best_ms(
            lambda raw: mime_fast.parse_bytes(raw, _PARSE_POLICY), messages, args.reps
        )
        analysis = {}
        for name, active in (("stock", False), ("fast", mime_fast.ACTIVE)):
            mime_fast.ACTIVE = active
            analysis[name] = best_ms(lambda raw: analyze(raw, scorer, True), messages, args.reps)
            mix[name] += share * analysis[name]
        mime_fast.ACTIVE = mime_fast.stock_fingerprints() == mime_fast.REVIEWED
        print(
            f"{kind:5} {len(messages):4} messages  MIME parse {stock_parse:7.2f} -> "
            f"{fast_parse:6.2f} ms   analysis {analysis['stock']:7.2f} -> {analysis['fast']:6.2f} ms"
        )
    print(f"the mix, analysis per message: {mix['stock']:.2f} -> {mix['fast']:.2f} ms")


if __name__ == "__main__":
    main()
