"""The spam model is loaded by the MX at start-up (a bad one stops it there), and by no
process that never scores: building a System does not import scikit-learn's model."""

from __future__ import annotations

import pytest

from app.adapters.spam_scorer import ModelScorer
from app.bootstrap import build_system
from app.mx.server import start_mx


def test_a_scorer_reads_its_model_when_first_needed(tmp_path) -> None:
    scorer = ModelScorer(tmp_path / "missing.skops")  # nothing read yet: no error
    with pytest.raises(Exception, match="missing"):
        scorer.load()
    good = ModelScorer()
    assert good._model is None
    verdict = good.score(b"Subject: lunch?\n\nShall we meet at noon tomorrow?\n")
    assert good._model is not None and not verdict.is_spam


async def test_the_mx_refuses_to_start_without_its_model(settings, tmp_path) -> None:
    bad = settings.model_copy(
        update={"spam_model_path": tmp_path / "missing.skops", "smtp_port": 0}
    )
    system = await build_system(bad)  # the API and the worker start fine without scoring
    try:
        with pytest.raises(Exception, match="missing"):
            await start_mx(bad, system)
    finally:
        await system.close()
