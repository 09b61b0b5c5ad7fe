"""The undo window (MAILHUB_UNDO_SECONDS): every send waits, and cancelSend can take it back."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_outbound_scheduling import CANCEL, FOLDER, SEND


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"undo_seconds": 2})


async def test_the_undo_window_holds_every_send_so_it_can_be_taken_back(api):
    alice, alice_token = await api.user("alice")
    bob, bob_token = await api.user("bob")
    sent = (
        await api.gql(SEND, {"input": {"to": [bob], "subject": "Oops", "text": "x"}}, alice_token)
    )["data"]["sendEmail"]
    assert sent["item"]["recipients"][0]["status"] == "scheduled"
    canceled = (await api.gql(CANCEL, {"id": sent["item"]["id"]}, alice_token))["data"][
        "cancelSend"
    ]
    assert canceled["item"]["folder"] == "DRAFTS"
    await asyncio.sleep(2.5)
    assert (await api.gql(FOLDER, {"f": "INBOX"}, bob_token))["data"]["messages"]["edges"] == []
