"""Parsing and spam scoring of inbound mail, on the MX's event loop or in a helper process.

They are most of the MX's CPU per message (the stdlib MIME parser, html.parser and the spam
tokenizer: ≈ 70%). On the event loop they run between the steps of everything else, the group
commit's transaction included: every round trip of a commit waits behind whichever message is
being parsed or scored, so the commit cycle, which bounds the rate, stretches with the load.
``mailhub mx`` therefore hands them to helper processes (``MAILHUB_MX_HELPERS``; default: one
per MX process when the machine has two cores or more): the loop keeps the SMTP sessions, the
DNS checks and the commits, and a second core does the parsing and scoring. A helper loads the
same model file as the MX (``ModelScorer``), so verdicts are the same as inline ones.

The helpers are spawned processes (no copy of the MX's loop or connections) answering over a
socket the loop reads itself (``helper_processes``: no threads in the MX between a message and
its helper). A helper that dies fails nobody: the message is analysed inline and a new helper is
started for the messages after it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from app.adapters.spam_scorer import ModelScorer, Scorer, SpamVerdict
from app.domain.parsing import ParsedMessage, parse_message, parse_tree
from app.helper_processes import HelperDied, HelperProcesses, code_of

log = structlog.get_logger(__name__)
CODE = code_of(__file__)  # a helper's copy of this module must be the MX's (helper_processes)

_helper_scorer: ModelScorer | None = None  # in a helper process: its own copy of the model


def default_helpers(cpus: int | None, mx_processes: int = 1) -> int:
    """Helpers per MX process when the setting is not given: one when the machine has more
    cores than MX processes (with one MX process on two cores, its loop and its helper each
    get one), else none (nothing to gain, and a process more to schedule)."""
    return 1 if (cpus or 1) > mx_processes else 0


def _start_helper(model_path: Path | str | None) -> None:
    global _helper_scorer
    _helper_scorer = ModelScorer(model_path)
    _helper_scorer.load()


def _analyze_in_helper(raw: bytes, score: bool) -> tuple[ParsedMessage, SpamVerdict | None]:
    assert _helper_scorer is not None
    return analyze(raw, _helper_scorer, score)


def analyze(raw: bytes, scorer: Scorer, score: bool) -> tuple[ParsedMessage, SpamVerdict | None]:
    """Parse ``raw`` and, when asked, score it. A ``ModelScorer`` shares the storage parse:
    the model reads the same MIME tree (``ml.message_text.read_tree``), and its text, links
    and image count of the HTML body come from the same ``html.parser`` events
    (``ml.SharedHtml``), not from a second parse of its own."""
    if not score:
        return parse_message(raw), None
    if isinstance(scorer, ModelScorer):
        shared = scorer.shared_html()
        tree = parse_tree(raw)
        parsed = parse_message(raw, html_listener=shared, tree=tree)
        return parsed, scorer.score(raw, shared, tree)
    return parse_message(raw), scorer.score(raw)


class Analysis:
    """``analyze(raw)``: the parsed message and (when asked) its spam verdict."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._pool: HelperProcesses | None = None

    @property
    def pool(self) -> HelperProcesses | None:
        """The helper processes (None while every message is analysed inline)."""
        return self._pool

    @property
    def helpers(self) -> int:
        """Helper processes running now (0: every message is analysed inline)."""
        return self._pool.alive if self._pool is not None else 0

    async def start_helpers(self, count: int) -> None:
        """Run parsing and scoring in ``count`` helper processes from now on (0: inline).
        Only a ``ModelScorer``'s work can move (a helper loads the same model file); returns
        once every helper has loaded it, and raises as the MX's own start would if it cannot."""
        await self.stop_helpers()
        if count <= 0 or not isinstance(self.scorer, ModelScorer):
            return
        pool = HelperProcesses(count, _analyze_in_helper, _start_helper, (self.scorer.path,))
        await pool.start()
        self._pool = pool

    async def stop_helpers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()

    async def analyze(self, raw: bytes, *, score: bool) -> tuple[ParsedMessage, SpamVerdict | None]:
        pool = self._pool
        if pool is not None and pool.alive:  # none while a lost helper's replacement starts
            try:
                result: tuple[ParsedMessage, SpamVerdict | None] = await pool.call(raw, score)
                return result
            except HelperDied:
                log.warning("mx helper process died; analysing inline, starting a new one")
        return analyze(raw, self.scorer, score)
