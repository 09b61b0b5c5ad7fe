"""A hostile message opened in the reader runs nothing (issue 13).

The message comes in through the MX like any other. Every vector tries to set a global
(``__xss``) on the page, on the reader's frame or through ``parent``/``top``, to open a dialog,
or to navigate; the test then checks from the page itself that none did, and that the harmless
text of the same message was shown (so the reader really rendered it).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from playwright.async_api import expect

from tests.browser.webmail import filed_in, open_folder, open_message, sign_in

SUBJECT = "Your invoice (XSS vectors)"
MARK = "parent.__xss=1;top.__xss=1;window.__xss=1;alert(1)"
VECTORS = f"""
<p id="visible">Harmless greeting text</p>
<script>{MARK}</script>
<img src="x" onerror="{MARK}">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" onload="{MARK}">
<a id="js-link" href="javascript:{MARK}">Open the invoice</a>
<a href="  JaVaScRiPt:{MARK}">spaced scheme</a>
<svg onload="{MARK}"><script>{MARK}</script><a xlink:href="javascript:{MARK}"><text>svg link</text></a></svg>
<iframe srcdoc="<script>{MARK}</script>"></iframe>
<iframe src="javascript:{MARK}"></iframe>
<meta http-equiv="refresh" content="0;url=javascript:{MARK}">
<object data="javascript:{MARK}"></object>
<embed src="javascript:{MARK}">
<form action="javascript:{MARK}"><button id="go">Pay now</button></form>
<div style="background-image:url(javascript:{MARK})" onmouseover="{MARK}">hover me</div>
<details open ontoggle="{MARK}"><summary>toggle</summary></details>
<math><mtext><table><mglyph><style><img src=x onerror="{MARK}"></style></mglyph></table></mtext></math>
<noscript><p title="</noscript><img src=x onerror={MARK}>"></p></noscript>
<base href="javascript:{MARK}//">
<body onload="{MARK}">
"""


def hostile_message(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Billing <alice@pass.test>"
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="pass.test")
    msg.set_content("Harmless greeting text")
    msg.add_alternative(f"<html><body>{VECTORS}</body></html>", subtype="html")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_a_message_full_of_xss_vectors_runs_nothing_in_the_reader(
    mailhub, new_context, screenshot, request
):
    bob = await mailhub.user("bob")
    await mailhub.deliver(hostile_message(bob), bob)
    # wherever the spam filter put it (Inbox or Spam), bob opens it there
    folder = await filed_in(mailhub, await mailhub.token(bob), SUBJECT)

    _, page = await new_context("bob")
    await sign_in(page, mailhub.base, bob)
    await open_folder(page, folder)
    await open_message(page, SUBJECT)
    body = page.frame_locator("iframe[title='Message body']")
    await expect(body.locator("body")).to_contain_text("Harmless greeting text")

    # hover and click what a reader would: nothing may run
    await body.get_by_text("hover me").hover()
    links = body.get_by_text("Open the invoice")
    if await links.count():
        await links.click(no_wait_after=True)
    buttons = body.get_by_text("Pay now")
    if await buttons.count():
        await buttons.click(no_wait_after=True)
    await page.wait_for_load_state()
    await screenshot(page, "xss-reader")

    for frame in page.frames:
        assert await frame.evaluate("typeof window.__xss") == "undefined", frame.url
    reader = next(f for f in page.frames if f.parent_frame is page.main_frame)
    assert reader.url == "about:srcdoc"  # no meta refresh or javascript: navigation
    assert page.url.startswith(mailhub.base)
    # the reader's document holds none of the active content
    active = await reader.evaluate(
        """() => [...document.querySelectorAll('*')].flatMap(el =>
             [...el.attributes].filter(a => /^on/i.test(a.name) ||
               /javascript:/i.test(a.value) || a.name === 'srcdoc').map(a => el.tagName + ' ' + a.name)
           ).concat([...document.querySelectorAll('script,iframe,object,embed,svg,math,base[href],form,meta[http-equiv=refresh i]')]
             .map(el => el.tagName))"""
    )
    assert active == []
    offline = request.node.offline
    assert offline.dialogs == [] and offline.page_errors == []
    assert offline.blocked == []
