"""Parsing and spam scoring in the MX's helper processes (app/services/inbound/analysis.py):
the same results as on the event loop, a dead helper fails no message, and mail received
through a real listener with a helper is stored with the helper's verdict."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.adapters.spam_scorer import ModelScorer
from app.services.inbound.analysis import Analysis, default_helpers
from tests.support.mx import MailZone, mail_zone, message, running_mx, smtp_send

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLES = sorted((DATA / "spam").glob("*.eml")) + sorted((DATA / "inbound").glob("*.eml"))


@pytest.fixture(scope="module")
def zone() -> Iterator[MailZone]:
    z = mail_zone()
    yield z
    z.dns.stop()


def test_one_helper_when_there_are_more_cores_than_mx_processes():
    assert default_helpers(2) == 1
    assert default_helpers(8, 4) == 1
    assert default_helpers(1) == 0
    assert default_helpers(2, 2) == 0
    assert default_helpers(None) == 0  # unknown core count: stay on the loop


async def test_a_helper_parses_and_scores_as_the_event_loop_does():
    assert len(SAMPLES) >= 5
    inline = Analysis(ModelScorer())
    helped = Analysis(ModelScorer())
    await helped.start_helpers(1)
    try:
        assert helped.helpers == 1
        for path in SAMPLES:
            raw = path.read_bytes()
            assert await helped.analyze(raw, score=True) == await inline.analyze(raw, score=True)
        parsed, verdict = await helped.analyze(SAMPLES[0].read_bytes(), score=False)
        assert verdict is None and parsed.subject is not None
    finally:
        await helped.stop_helpers()
    assert helped.helpers == 0


async def test_a_dead_helper_fails_no_message_and_is_replaced():
    analysis = Analysis(ModelScorer())
    await analysis.start_helpers(1)
    try:
        pool = analysis.pool
        assert pool is not None
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        raw = SAMPLES[0].read_bytes()
        expected = await Analysis(ModelScorer()).analyze(raw, score=True)
        assert await analysis.analyze(raw, score=True) == expected  # inline, this once
        for _ in range(300):  # the replacement loads the model (~2 s)
            if analysis.helpers == 1:
                break
            await asyncio.sleep(0.1)
        assert analysis.helpers == 1 and pool.pids != [pid]
        calls = pool.calls
        assert await analysis.analyze(raw, score=True) == expected  # the new helper
        assert pool.calls == calls + 1
    finally:
        await analysis.stop_helpers()


async def test_only_a_model_scorer_moves_to_a_helper():
    class Fixed:
        def score(self, raw: bytes):  # a test double: it lives in this process only
            raise AssertionError("not called")

    analysis = Analysis(Fixed())  # type: ignore[arg-type]
    await analysis.start_helpers(2)
    assert analysis.helpers == 0


async def test_mail_through_an_mx_with_a_helper_is_stored_with_its_verdict(settings, zone):
    async with running_mx(settings, zone) as h:
        await h.system.inbound.analysis.start_helpers(1)
        assert h.system.inbound.analysis.helpers == 1
        try:
            _, bob = await h.user("bob")
            raw = message(subject="Quarterly numbers")
            reply = await smtp_send(h.port, raw)
            assert reply["data"][0] == 250, reply
            items = await h.items(bob)
        finally:
            await h.system.inbound.analysis.stop_helpers()
    assert [(i["folder"], i["subject"]) for i in items] == [("INBOX", "Quarterly numbers")]
    expected = ModelScorer().score(raw)
    assert items[0]["spam"]["score"] == pytest.approx(expected.score)
    assert items[0]["spam"]["is_spam"] is expected.is_spam
