"""The spam scorer interface and its implementation on the committed naive-Bayes model (``ml``).

Services depend on ``Scorer``; ``ModelScorer`` loads the model file once (``ml.load_model``) and
judges each message with ``ml.score``. There is no fallback that says "ham": a scorer that
cannot load its model fails at start-up, loudly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Scoring reads a bounded prefix: the model's tokens come from headers and text, and a 40 MB
# attachment would only cost CPU (the MX must stay responsive under a mix of large messages).
MAX_SCORED_BYTES = 256 * 1024


@dataclass(frozen=True)
class SpamVerdict:
    is_spam: bool
    score: float
    model_version: str
    reasons: list[str] = field(default_factory=list)

    def as_doc(self) -> dict[str, Any]:
        """The ``spam`` field stored on messages and mailbox views (MailboxItem.spam)."""
        return asdict(self)


class Scorer(Protocol):
    def score(self, raw: bytes) -> SpamVerdict: ...


class ModelScorer:
    """Scores with the committed model; ``path`` None means the newest committed version."""

    def __init__(self, path: Path | str | None = None) -> None:
        import ml

        self._ml = ml
        self.model = ml.load_model(path)

    def score(self, raw: bytes) -> SpamVerdict:
        verdict = self._ml.score(bounded_for_scoring(raw), self.model)
        return SpamVerdict(
            bool(verdict.is_spam),
            float(verdict.score),
            str(verdict.model_version),
            [str(r) for r in verdict.reasons],
        )


def bounded_for_scoring(raw: bytes) -> bytes:
    """The prefix of a message that scoring reads."""
    if len(raw) <= MAX_SCORED_BYTES:
        return raw
    # Cut at a line end so the parser sees whole lines; a truncated MIME tree parses leniently.
    cut = raw.rfind(b"\n", 0, MAX_SCORED_BYTES)
    return raw[: cut + 1 if cut > 0 else MAX_SCORED_BYTES]
