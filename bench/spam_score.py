"""Time `ml.score` on corpus messages: p50 / p95 per message, model loaded once.

    .venv/bin/python bench/spam_score.py [--messages 3000]

Needs the corpus (`python -m ml fetch-corpus`). Each message is scored from raw bytes, so the
time includes MIME parsing, decoding, HTML to text, tokenizing, hashing and calibration.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml import load_model, score  # noqa: E402
from ml.corpus import load_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    messages = [m.raw for m in load_corpus().messages]
    random.Random(0).shuffle(messages)
    sample = messages[: args.messages]
    model = load_model()
    for raw in sample[:200]:  # warm up caches and the allocator
        score(raw, model)
    timings = []
    for raw in sample:
        start = time.perf_counter_ns()
        score(raw, model)
        timings.append((time.perf_counter_ns() - start) / 1e6)
    timings.sort()
    p95 = timings[int(0.95 * len(timings)) - 1]
    print(
        f"spam score: {len(timings)} corpus messages, model {model.version}: "
        f"p50 {statistics.median(timings):.3f} ms, p95 {p95:.3f} ms, max {timings[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
