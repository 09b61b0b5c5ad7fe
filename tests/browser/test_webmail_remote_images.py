"""Remote images: blocked in the reader until the person asks, then shown (issue 13).

The "remote" host is a tiny HTTP server on another loopback port (another origin, so neither
the page's nor the reader's Content-Security-Policy treats it as 'self'); it counts requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from playwright.async_api import expect

from tests.browser.webmail import filed_in, open_folder, open_message, sign_in

PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@contextlib.asynccontextmanager
async def image_host():
    hits: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        hits.append(request_line.split()[1])
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
            + f"Content-Length: {len(PIXEL)}\r\n\r\n".encode()
            + PIXEL
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        server.close()
        await server.wait_closed()


async def test_remote_images_load_only_after_show_images(mailhub, new_context, request):
    bob = await mailhub.user("bob")
    async with image_host() as (host, hits):
        msg = EmailMessage()
        msg["From"] = "Newsletter <alice@pass.test>"
        msg["To"] = bob
        msg["Subject"] = "Pictures inside"
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="pass.test")
        msg.set_content("See the picture.")
        msg.add_alternative(
            f'<p>See the picture.</p><img alt="tracker" width="1" height="1" src="{host}/open.png">',
            subtype="html",
        )
        await mailhub.deliver(msg.as_bytes().replace(b"\n", b"\r\n"), bob)

        folder = await filed_in(mailhub, await mailhub.token(bob), "Pictures inside")
        _, page = await new_context("bob")
        await sign_in(page, mailhub.base, bob)
        await open_folder(page, folder)
        await open_message(page, "Pictures inside")
        body = page.frame_locator("iframe[title='Message body']")
        await expect(body.locator("body")).to_contain_text("See the picture.")
        show = page.get_by_role("button", name="Show images")
        await expect(show).to_be_visible()
        assert hits == []  # opening the message told the sender nothing

        await show.click()
        image = body.get_by_role("img", name="tracker")
        await expect(image).to_have_js_property("complete", True)
        await expect(image).not_to_have_js_property("naturalWidth", 0)
        assert hits == ["/open.png"]
        offline = request.node.offline
        assert offline.csp_violations() == [] and offline.page_errors == []
