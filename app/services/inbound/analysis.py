"""Parsing and spam scoring of inbound mail, on the MX's event loop or in a helper process.

They are most of the MX's CPU per message (the stdlib MIME parser, html.parser and the spam
tokenizer: ≈ 70%). On the event loop they run between the steps of everything else, the group
commit's transaction included: every round trip of a commit waits behind whichever message is
being parsed or scored, so the commit cycle, which bounds the rate, stretches with the load.
``mailhub mx`` therefore hands them to helper processes (``MAILHUB_MX_HELPERS``; default: one
per MX process when the machine has two cores or more): the loop keeps the SMTP sessions, the
DNS checks and the commits, and a second core does the parsing and scoring. A helper loads the
same model file as the MX (``ModelScorer``), so verdicts are the same as inline ones.

Stdlib ``concurrent.futures.ProcessPoolExecutor`` (spawned processes: no copy of the MX's loop
or connections). A helper that dies fails nobody: the message is analysed inline and a new pool
is started for the next one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import structlog

from app.adapters.spam_scorer import ModelScorer, Scorer, SpamVerdict
from app.domain.parsing import ParsedMessage, parse_message, parse_tree

log = structlog.get_logger(__name__)

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


def _ready() -> bool:
    return _helper_scorer is not None


class Analysis:
    """``analyze(raw)``: the parsed message and (when asked) its spam verdict."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._pool: ProcessPoolExecutor | None = None
        self._helpers = 0

    @property
    def helpers(self) -> int:
        return self._helpers if self._pool is not None else 0

    async def start_helpers(self, count: int) -> None:
        """Run parsing and scoring in ``count`` helper processes from now on (0: inline).
        Only a ``ModelScorer``'s work can move (a helper loads the same model file); returns
        once every helper has loaded it, and raises as the MX's own start would if it cannot."""
        await self.stop_helpers()
        if count <= 0 or not isinstance(self.scorer, ModelScorer):
            return
        self._helpers = count
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(count)))
        except BaseException:
            await self.stop_helpers()
            raise

    async def stop_helpers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        assert isinstance(self.scorer, ModelScorer)
        return ProcessPoolExecutor(
            max_workers=self._helpers,
            mp_context=get_context("spawn"),
            initializer=_start_helper,
            initargs=(self.scorer.path,),
        )

    async def analyze(self, raw: bytes, *, score: bool) -> tuple[ParsedMessage, SpamVerdict | None]:
        pool = self._pool
        if pool is not None:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    pool, _analyze_in_helper, raw, score
                )
            except BrokenProcessPool:
                log.warning("mx helper process died; analysing inline, starting a new one")
                if self._pool is pool:
                    self._pool = self._new_pool()
                    pool.shutdown(wait=False, cancel_futures=True)
        return analyze(raw, self.scorer, score)
