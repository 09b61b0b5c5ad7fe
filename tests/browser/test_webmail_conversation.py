"""Two people in two browsers (issue 13): compose with an attachment, live arrival, download,
reply, the reply threaded for the sender, and her delivery status turning to sent live."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.webmail import composer, open_folder, open_message, row, sign_in

SUBJECT = "Quarterly numbers"


@pytest.fixture
def mailhub_overrides():
    # an undo window: alice's send is held as scheduled until the worker delivers it ...
    return {"undo_seconds": 1}


@pytest.fixture
def mailhub_worker():
    # ... and the worker starts only once she is looking at her Sent item, so its delivery
    # status visibly changes from scheduled to sent while the page stays loaded
    return False


async def test_alice_and_bob_exchange_mail_with_an_attachment_live(
    mailhub, new_context, screenshot, request, tmp_path: Path
):
    alice = await mailhub.user("alice")
    bob = await mailhub.user("bob")
    report = tmp_path / "report.csv"
    report.write_bytes(b"quarter,revenue\n" + os.urandom(50_000).hex().encode())
    _, alice_page = await new_context("alice")
    _, bob_page = await new_context("bob")
    await sign_in(alice_page, mailhub.base, alice)
    await sign_in(bob_page, mailhub.base, bob)
    await expect(row(bob_page, SUBJECT)).to_have_count(0)

    # alice writes to bob, with an attachment picked in the file chooser
    await alice_page.get_by_role("button", name="Compose").click()
    form = composer(alice_page)
    await form.get_by_label("To").fill(bob)
    await form.get_by_label("Subject").fill(SUBJECT)
    await form.get_by_label("Message").fill("Bob, the report is attached.")
    async with alice_page.expect_file_chooser() as chooser:
        await form.get_by_role("button", name="Attach").click()
    await (await chooser.value).set_files(str(report))
    await expect(form.get_by_role("list", name="Files")).to_contain_text("uploaded")
    await screenshot(alice_page, "composer")
    await form.get_by_role("button", name="Send").click()
    await expect(composer(alice_page)).to_have_count(0)

    # her Sent item: scheduled (held for the undo window), then sent, without a reload
    await open_folder(alice_page, "Sent")
    await open_message(alice_page, SUBJECT)
    status = alice_page.get_by_role("table", name="Delivery status").get_by_role("row", name=bob)
    await expect(status).to_have_attribute("data-status", "scheduled")
    await alice_page.evaluate("window.__sameDocument = true")
    await mailhub.start_worker()
    await expect(status).to_have_attribute("data-status", "sent", timeout=20_000)
    await expect(status.get_by_role("cell").first).to_have_text("sent")
    assert await alice_page.evaluate("window.__sameDocument") is True  # live, not reloaded

    # bob's Inbox, open all along, shows it without a reload
    await expect(row(bob_page, SUBJECT)).to_be_visible(timeout=20_000)
    await screenshot(bob_page, "inbox")
    await open_message(bob_page, SUBJECT)
    await expect(
        bob_page.frame_locator("iframe[title='Message body']").locator("body")
    ).to_contain_text("the report is attached")
    await screenshot(bob_page, "reader")
    async with bob_page.expect_download() as download_info:
        await bob_page.get_by_role("button", name="Download report.csv").click()
    download = await download_info.value
    assert download.suggested_filename == "report.csv"
    downloaded = Path(await download.path())
    assert (
        hashlib.sha256(downloaded.read_bytes()).hexdigest()
        == hashlib.sha256(report.read_bytes()).hexdigest()
    )

    # "show original": the raw message, fetched with bob's token from rawUrl
    await bob_page.get_by_role("button", name="Show original").click()
    original = bob_page.get_by_role("region", name="Raw source")
    await expect(original).to_contain_text(f"Subject: {SUBJECT}")
    await expect(original).to_contain_text("Content-Disposition: attachment")

    # bob replies
    await (
        bob_page.get_by_role("toolbar", name="Actions")
        .get_by_role("button", name="Reply", exact=True)
        .click()
    )
    reply = composer(bob_page)
    await expect(reply.get_by_label("Subject")).to_have_value(f"Re: {SUBJECT}")
    await expect(reply.get_by_label("To")).to_have_value(alice)
    await reply.get_by_label("Message").press("Control+Home")
    await reply.get_by_label("Message").type("Thanks, numbers look good. ")
    await reply.get_by_role("button", name="Send").click()
    await expect(composer(bob_page)).to_have_count(0)

    # alice sees the reply arrive and threaded with her message
    await open_folder(alice_page, "Inbox")
    await expect(row(alice_page, f"Re: {SUBJECT}")).to_be_visible(timeout=20_000)
    await open_message(alice_page, f"Re: {SUBJECT}")
    conversation = alice_page.get_by_role("list", name="Conversation")
    await expect(conversation.get_by_role("listitem")).to_have_count(2)
    await expect(alice_page.get_by_text("2 messages in this conversation")).to_be_visible()
    await screenshot(alice_page, "thread")

    offline = request.node.offline
    assert offline.blocked == [] and offline.csp_violations() == []
    assert offline.page_errors == []
