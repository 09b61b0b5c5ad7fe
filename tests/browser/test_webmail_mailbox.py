"""Working through a mailbox in the webmail (issue 13): search with highlights, labels, archive,
delete and undo, mark as spam; drafts autosaved across a reload; sign out."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from tests.browser.webmail import (
    composer,
    folder_link,
    items,
    open_folder,
    open_message,
    row,
    rows,
    send_mail,
    sign_in,
)

SEARCH = """query($q: String!) { search(query: $q) { edges { node { item { subject } } } } }"""


async def searchable(mailhub, token: str, query: str, subject: str) -> None:
    """Setup: wait until the index has the message (indexing is eventually consistent)."""
    for _ in range(200):
        body = await mailhub.gql(SEARCH, {"q": query}, token)
        if any(e["node"]["item"]["subject"] == subject for e in body["data"]["search"]["edges"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject!r} never became searchable")


async def toast_action(page: Page, text: str, action: str) -> None:
    toast = page.get_by_role("status").filter(has_text=text)
    await expect(toast).to_be_visible()
    await toast.get_by_role("button", name=action).click()


async def test_search_labels_archive_delete_undo_and_spam(
    mailhub, new_context, screenshot, request
):
    alice = await mailhub.user("alice")
    bob = await mailhub.user("bob")
    a, b = await mailhub.token(alice), await mailhub.token(bob)
    await send_mail(mailhub, a, bob, "Invoice 42 for October", "The payment is due on Friday.")
    await send_mail(mailhub, a, bob, "Team lunch", "Tacos at noon?")
    await send_mail(mailhub, a, bob, "Cheap watches", "Best replica watches, click now.")
    await send_mail(mailhub, a, bob, "Old newsletter", "Nothing to see here.")
    await searchable(mailhub, b, "payment", "Invoice 42 for October")

    _, page = await new_context("bob")
    await sign_in(page, mailhub.base, bob)
    await expect(rows(page)).to_have_count(4)

    # search: only the match, with the matching word highlighted
    search = page.get_by_role("searchbox", name="Search mail")
    await search.fill("payment")
    await search.press("Enter")
    await expect(row(page, "Invoice 42 for October")).to_be_visible()
    await expect(rows(page)).to_have_count(1)
    await expect(row(page, "Invoice 42 for October").locator("mark")).to_have_text("payment")
    await screenshot(page, "search")

    # a label: added in the reader, listed in the sidebar, its list holds the message
    await open_folder(page, "Inbox")
    await open_message(page, "Team lunch")
    await page.get_by_label("New label").fill("food")
    await page.get_by_role("button", name="Add label").click()
    labels = page.get_by_role("navigation", name="Labels")
    await expect(labels.get_by_role("link", name="food")).to_be_visible()
    await labels.get_by_role("link", name="food").click()
    await expect(row(page, "Team lunch")).to_be_visible()
    await expect(rows(page)).to_have_count(1)

    # archive: out of the Inbox, into Archive
    await open_folder(page, "Inbox")
    await open_message(page, "Invoice 42 for October")
    await page.get_by_role("toolbar", name="Actions").get_by_role("button", name="Archive").click()
    await expect(row(page, "Invoice 42 for October")).to_have_count(0)
    await open_folder(page, "Archive")
    await expect(row(page, "Invoice 42 for October")).to_be_visible()

    # delete, then undo: back in the Inbox
    await open_folder(page, "Inbox")
    await open_message(page, "Old newsletter")
    await (
        page.get_by_role("toolbar", name="Actions")
        .get_by_role("button", name="Delete", exact=True)
        .click()
    )
    await expect(row(page, "Old newsletter")).to_have_count(0)
    await toast_action(page, "Moved to Trash.", "Undo")
    await expect(row(page, "Old newsletter")).to_be_visible()

    # mark as spam: moved to Spam
    await open_message(page, "Cheap watches")
    await (
        page.get_by_role("toolbar", name="Actions")
        .get_by_role("button", name="Mark as spam")
        .click()
    )
    await expect(row(page, "Cheap watches")).to_have_count(0)
    await open_folder(page, "Spam")
    await expect(row(page, "Cheap watches")).to_be_visible()

    # what the server holds now is what the screen showed
    folders = {
        i["subject"]: (i["folder"], i["labels"])
        for f in ("INBOX", "ARCHIVE", "SPAM", "TRASH")
        for i in await items(mailhub, b, f)
    }
    assert folders == {
        "Invoice 42 for October": ("ARCHIVE", []),
        "Team lunch": ("INBOX", ["food"]),
        "Cheap watches": ("SPAM", []),
        "Old newsletter": ("INBOX", []),
    }
    offline = request.node.offline
    assert offline.blocked == [] and offline.page_errors == []


async def test_a_draft_is_autosaved_and_survives_a_reload_then_sign_out(
    mailhub, new_context, screenshot, request
):
    alice = await mailhub.user("alice")
    a = await mailhub.token(alice)
    _, page = await new_context("alice")
    await sign_in(page, mailhub.base, alice)

    await page.get_by_role("button", name="Compose").click()
    form = composer(page)
    await form.get_by_label("To").fill("carol@remote.test")
    await form.get_by_label("Subject").fill("Unfinished thoughts")
    await form.get_by_label("Message").fill("Half a sentence, to be contin")
    # no Save button: the composer saves by itself
    await expect(form.get_by_role("status")).to_have_text("Draft saved", timeout=15_000)
    drafts = await items(mailhub, a, "DRAFTS")
    assert [d["subject"] for d in drafts] == ["Unfinished thoughts"]

    await page.reload()
    await expect(folder_link(page, "Inbox")).to_be_visible()  # still signed in
    await open_folder(page, "Drafts")
    await expect(row(page, "Unfinished thoughts")).to_be_visible()
    await row(page, "Unfinished thoughts").get_by_role("link").click()
    form = composer(page)
    await expect(form.get_by_label("Message")).to_have_value("Half a sentence, to be contin")
    await expect(form.get_by_label("To")).to_have_value("carol@remote.test")
    await screenshot(page, "draft")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.reload()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await expect(folder_link(page, "Inbox")).to_have_count(0)
    offline = request.node.offline
    assert offline.blocked == [] and offline.page_errors == []
