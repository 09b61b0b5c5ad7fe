"""An open Inbox whose socket dropped catches up when it comes back (issue 13): the message
that arrived meanwhile appears without a reload (the client asks `changes(since:)`)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from playwright.async_api import expect

from tests.browser.webmail import row, send_mail, sign_in


def note(to: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@pass.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="pass.test")
    msg.set_content("Hi Bob,\nthe minutes of today's meeting are below.\nAlice\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def test_an_inbox_that_was_offline_catches_up_when_the_socket_returns(
    mailhub, new_context, request
):
    bob = await mailhub.user("bob")
    carol = await mailhub.user("carol")
    await send_mail(mailhub, await mailhub.token(carol), bob, "Before the outage", "hello")
    _, page = await new_context("bob")
    await sign_in(page, mailhub.base, bob)
    await expect(row(page, "Before the outage")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    await page.evaluate("window.__sameDocument = true")

    # the API goes away (every websocket with it); mail keeps arriving through the MX
    await mailhub.stop_api()
    await expect(page.get_by_role("status").filter(has_text="Live")).to_have_count(0)
    await mailhub.deliver(note(bob, "Minutes during the outage"), bob)
    await expect(row(page, "Minutes during the outage")).to_have_count(0)

    # back: the client reconnects and catches up, no reload
    await mailhub.start_api()
    await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible(timeout=30_000)
    await expect(row(page, "Minutes during the outage")).to_be_visible(timeout=15_000)
    await expect(row(page, "Before the outage")).to_be_visible()
    assert await page.evaluate("window.__sameDocument") is True
    assert request.node.offline.blocked == []
