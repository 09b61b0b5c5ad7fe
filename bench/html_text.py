"""Time the two HTML readers on the inbound benchmark's HTML mail: ms per message, best of runs.

    .venv/bin/python bench/html_text.py [--peers DIR]

``--peers``: the shared peers' folder (default: ``shared/peers`` beside the checkout, or
``MAILHUB_PEERS_DIR``, as bench/inbound.py finds it). The documents are the HTML parts of msggen's inbound mix (200 messages, seed 42: 50 HTML-only
newsletters of ~50 KB). Timed: ``app.domain.html_safety.html_to_text`` (storage's text),
``ml.message_text.html_to_text`` (the spam model's own parse) and storage's parse with the
model listening (``ml.SharedHtml``, what the MX runs). Run it with PYTHONPATH at the tree to
measure (another checkout gives the "before").
"""

from __future__ import annotations

import argparse
import email
import gc
import os
import sys
import time
from collections.abc import Callable
from email import policy
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: another tree there is the one measured
T = TypeVar("T")


def add_peers_option(parser: argparse.ArgumentParser) -> None:
    """``--peers``: the shared peers' folder (``MAILHUB_PEERS_DIR``, else beside the checkout)."""
    parser.add_argument(
        "--peers",
        default=os.environ.get("MAILHUB_PEERS_DIR") or str(ROOT.parent / "shared" / "peers"),
    )


def inbound_mix(peers: str, messages: int, seed: int) -> list[tuple[str, bytes]]:
    """msggen's inbound mix as the MX receives it: (kind, message), dot-stuffing undone."""
    sys.path.insert(0, peers)
    import msggen  # type: ignore[import-not-found]

    corpus = msggen.build_corpus(
        messages, seed, "inbound", lambda r: f"u{r.randrange(50)}@bench.test"
    )
    return [(kind, data.replace(b"\r\n..", b"\r\n.")) for _rcpt, kind, data in corpus]


def _documents(peers: str) -> list[str]:
    docs = []
    for kind, data in inbound_mix(peers, 200, 42):
        if kind != "html":
            continue
        message = email.message_from_bytes(data, policy=policy.default)
        for part in message.walk():
            if part.get_content_type() == "text/html":
                docs.append(part.get_content())
    return docs


def best_ms(fn: Callable[[T], object], items: list[T], runs: int) -> float:
    """Milliseconds per item of ``fn`` over ``items``: the best of ``runs`` passes."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_peers_option(parser)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from app.domain import html_safety
    from ml import message_text

    docs = _documents(args.peers)
    print(f"{len(docs)} documents, {sum(map(len, docs)) // len(docs)} characters on average")

    def shared(doc: str) -> None:
        html_safety.html_to_text(doc, message_text.SharedHtml())

    for name, fn in (
        ("app.domain.html_safety.html_to_text", html_safety.html_to_text),
        ("ml.message_text.html_to_text", message_text.html_to_text),
        ("html_safety.html_to_text + SharedHtml", shared),
    ):
        print(f"{name:40} {best_ms(fn, docs, args.runs):.3f} ms/message")


if __name__ == "__main__":
    main()
