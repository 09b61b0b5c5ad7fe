"""The spam scorer interface and its implementation on the committed naive-Bayes model (``ml``).

Services depend on ``Scorer``; ``ModelScorer`` loads the model file once (``ml.load_model``) and
judges each message with ``ml.score``. There is no fallback that says "ham": a scorer that
cannot load its model fails loudly — the MX loads it at start-up (``start_mx``). Other
processes build the same System but never score; they do not pay the ~2 s of importing
scikit-learn and reading the model (a delivery worker starts in a fraction of a second).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Scoring reads a bounded prefix: the model's tokens come from headers and text, and a 40 MB
# attachment would only cost CPU (the MX must stay responsive under a mix of large messages).
MAX_SCORED_BYTES = 256 * 1024


@dataclass(frozen=True)
class SpamVerdict:
    is_spam: bool  # definitely spam: filed in SPAM
    score: float
    model_version: str
    reasons: list[str] = field(default_factory=list)
    # Probably spam: stays in the Inbox with a visible flag (never together with is_spam).
    probable: bool = False

    def as_doc(self) -> dict[str, Any]:
        """The ``spam`` field stored on messages and mailbox views (MailboxItem.spam).

        ``dataclasses.asdict`` spelled out: it deep-copies field by field through its generic
        recursion, a measurable part of the MX's work per message. ``test_spam_verdict`` holds
        the two equal."""
        return {
            "is_spam": self.is_spam,
            "score": self.score,
            "model_version": self.model_version,
            "reasons": list(self.reasons),
            "probable": self.probable,
        }


class Scorer(Protocol):
    def score(self, raw: bytes) -> SpamVerdict: ...


class ModelScorer:
    """Scores with the committed model; ``path`` None means the newest committed version."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._path = path
        self._model: Any = None
        self._ml: Any = None

    def load(self) -> None:
        """Load the model now (idempotent); raises if it is missing or invalid."""
        if self._model is None:
            import ml

            self._model = ml.load_model(self._path)
            self._ml = ml

    @property
    def path(self) -> Path | str | None:
        """The model file it loads (None: the newest committed version)."""
        return self._path

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def shared_html(self) -> Any:
        """A listener for ``parse_message(raw, html_listener=...)``: the HTML it reads for
        storage is then not parsed again by ``score(raw, shared)`` (``ml.SharedHtml``)."""
        self.load()
        return self._ml.SharedHtml()

    def score(self, raw: bytes, shared: Any = None, tree: Any = None) -> SpamVerdict:
        """``shared``: ``shared_html()`` after the storage parse listened with it; ``tree``:
        that parse's MIME tree (``parsing.parse_tree(raw)``), read instead of parsing ``raw``
        again when the model reads all of ``raw`` (a longer message: only its prefix)."""
        model = self.model
        parsed_html = shared.documents if shared is not None else None
        bounded = bounded_for_scoring(raw)
        tree = tree if bounded is raw else None
        verdict = self._ml.score(bounded, model, parsed_html, tree)
        return SpamVerdict(
            bool(verdict.is_spam),
            float(verdict.score),
            str(verdict.model_version),
            [str(r) for r in verdict.reasons],
            bool(verdict.probable),
        )


def bounded_for_scoring(raw: bytes) -> bytes:
    """The prefix of a message that scoring reads."""
    if len(raw) <= MAX_SCORED_BYTES:
        return raw
    # Cut at a line end so the parser sees whole lines; a truncated MIME tree parses leniently.
    cut = raw.rfind(b"\n", 0, MAX_SCORED_BYTES)
    return raw[: cut + 1 if cut > 0 else MAX_SCORED_BYTES]
