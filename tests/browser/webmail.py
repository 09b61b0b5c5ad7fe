"""What a person does in the webmail, as steps the browser tests share (accessible names only)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import PASSWORD

SEND = """mutation($input: SendEmailInput!) { sendEmail(input: $input) { __typename
  ... on SendEmailSuccess { item { id messageId } } } }"""
FOLDER = """query($folder: Folder) { messages(folder: $folder, first: 50) {
  edges { node { id subject folder labels read } } } }"""


async def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    await page.goto(base + "/")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(folder_link(page, "Inbox")).to_be_visible()


def folder_link(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Folders").get_by_role("link", name=name, exact=True)


def rows(page: Page) -> Locator:
    return page.get_by_role("list", name="Mail").get_by_role("listitem")


def row(page: Page, subject: str) -> Locator:
    return rows(page).filter(has_text=subject)


async def open_folder(page: Page, name: str) -> None:
    await folder_link(page, name).click()
    await expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()


async def open_message(page: Page, subject: str) -> None:
    await row(page, subject).get_by_role("link").click()
    await expect(reader_heading(page, subject)).to_be_visible()


def reader_heading(page: Page, subject: str) -> Locator:
    return page.get_by_role("region", name="Reading pane").get_by_role(
        "heading", level=2, name=subject, exact=True
    )


def composer(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Composer")


async def send_mail(mailhub: Any, token: str, to: str, subject: str, text: str) -> dict[str, Any]:
    """Mail that is already there before the person looks (setup, through the API)."""
    body = await mailhub.gql(SEND, {"input": {"to": [to], "subject": subject, "text": text}}, token)
    result: dict[str, Any] = body["data"]["sendEmail"]
    assert result["__typename"] == "SendEmailSuccess", result
    return result


async def items(mailhub: Any, token: str, folder: str) -> list[dict[str, Any]]:
    body = await mailhub.gql(FOLDER, {"folder": folder}, token)
    return [e["node"] for e in body["data"]["messages"]["edges"]]


async def filed_in(mailhub: Any, token: str, subject: str) -> str:
    """The folder (as the sidebar names it) the spam filter put an inbound message in."""
    found = [
        folder
        for folder in ("INBOX", "SPAM")
        for i in await items(mailhub, token, folder)
        if i["subject"] == subject
    ]
    assert len(found) == 1, found
    return found[0].capitalize()
