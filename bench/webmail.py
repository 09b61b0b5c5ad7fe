"""The webmail in a real browser (issue 13): live arrival, first load, a 10,000-message list.

    .venv/bin/python bench/webmail.py [--messages 100] [--list-size 10000]

Needs the built front-end (`make assets`) and Debian's chromium (MAILHUB_BENCH_CHROMIUM
overrides /usr/bin/chromium). Starts its own SecantusDB and Redis, one `mailhub api` and one
`mailhub mx` process (as bench/realtime.py does), creates bob with a password, and drives
headless chromium with Playwright, every request to another host aborted:

1. first load — a fresh context opens `/`: bytes transferred (encoded bodies + headers, as the
   network saw them; the bundles are gzip-compressed), of which JavaScript, and the time until
   the sign-in form takes input; then the time from pressing "Sign in" to the Inbox list shown.
2. MX 250 → row visible — bob's Inbox is open; each of ``--messages`` messages is sent over
   SMTP; per message, the time from the 250 reply to DATA (client clock, right after
   `sendmail` returns) to the first animation frame after its row entered the list (a
   MutationObserver in the page; both clocks are this machine's wall clock).
3. a long list — ``--list-size`` more Inbox items are written for bob as filing stores them
   (through the MX, 10,000 take many minutes on this machine: the browser is what is measured
   here), bob signs in again and scrolls the Inbox until every row has been loaded (100 per
   page, keyset cursors); then the tab's JS heap (CDP Performance.getMetrics), DOM node count and how many
   rows are actually in the DOM (the list is virtualised), plus the time one scroll to the
   bottom and back takes to render.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Page, Route, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.embedded import EmbeddedStack, free_port  # noqa: E402
from bench.realtime import pct, wait_http, wait_smtp  # noqa: E402

DOMAIN = "wm.bench.test"
DATABASE = "bench_webmail"
BOB = f"bob@{DOMAIN}"
PASSWORD = "bench-password-123"
CHROMIUM = os.environ.get("MAILHUB_BENCH_CHROMIUM", "/usr/bin/chromium")
STATIC = Path(__file__).resolve().parents[1] / "app" / "web" / "static" / "webmail" / "index.html"

# Resolves on the first animation frame after a row containing the subject is in the list.
ROW_SEEN = """(subject) => new Promise((resolve) => {
  const seen = () => [...document.querySelectorAll('[role=list][aria-label=Mail] [role=listitem]')]
    .some((r) => r.textContent.includes(subject));
  const done = () => requestAnimationFrame(() => resolve(performance.timeOrigin + performance.now()));
  if (seen()) return done();
  const observer = new MutationObserver(() => { if (seen()) { observer.disconnect(); done(); } });
  observer.observe(document.body, { childList: true, subtree: true, characterData: true });
})"""


def message(i: int, nonce: str) -> tuple[str, bytes]:
    subject = f"Meeting notes {i} {nonce}"
    body = (
        f"From: Carol Jones <carol@partner.example>\r\nTo: {BOB}\r\nSubject: {subject}\r\n"
        f"Message-ID: <wm-{i}-{nonce}@partner.example>\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hi Bob,\r\n\r\nhere are the notes from today's meeting ({i}). Let me know what you think\r\n"
        "about the schedule for next week.\r\n\r\nThanks,\r\nCarol\r\n"
    )
    return subject, body.encode()


def send_one(port: int, raw: bytes) -> float:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.sendmail("carol@partner.example", [BOB], raw)
        return time.time()  # right after the 250 to DATA


async def block_other_hosts(route: Route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        await route.continue_()
    else:
        await route.abort("internetdisconnected")


async def sign_in(page: Page, base: str) -> float:
    await page.get_by_label("Email").fill(BOB)
    await page.get_by_label("Password").fill(PASSWORD)
    started = time.perf_counter()
    await page.get_by_role("button", name="Sign in").click()
    # the Inbox's first page is in: its header shows the count ("0 messages" when empty)
    await page.get_by_role("heading", level=1, name="Inbox").wait_for()
    await page.get_by_text(re.compile(r"^\d[\d,]* messages?$")).wait_for()
    return time.perf_counter() - started


async def first_load(browser, base: str) -> dict[str, float]:
    context = await browser.new_context()
    await context.route("**/*", block_other_hosts)
    page = await context.new_page()
    responses = []
    page.on("requestfinished", lambda request: responses.append(request))
    started = time.perf_counter()
    await page.goto(base + "/")
    await page.get_by_label("Email").wait_for()
    await page.wait_for_function("() => !document.querySelector('#signin-email')?.disabled")
    interactive = time.perf_counter() - started
    await page.wait_for_load_state("networkidle")
    total = js = 0
    loaded = list(responses)  # what the page itself needed, before signing in
    for request in loaded:
        sizes = await request.sizes()
        size = sizes["responseBodySize"] + sizes["responseHeadersSize"]
        total += size
        if request.resource_type == "script":
            js += size
    inbox = await sign_in(page, base)
    await context.close()
    return {
        "bytes": total,
        "js": js,
        "requests": len(loaded),
        "tti": interactive,
        "inbox": inbox,
    }


async def live_arrival(browser, base: str, smtp_port: int, count: int) -> list[float]:
    context = await browser.new_context()
    await context.route("**/*", block_other_hosts)
    page = await context.new_page()
    await page.goto(base + "/")
    await sign_in(page, base)
    await page.get_by_text("Live", exact=True).wait_for()
    nonce = uuid.uuid4().hex[:8]
    latencies = []
    for i in range(count):
        subject, raw = message(i, nonce)
        seen = asyncio.create_task(page.evaluate(ROW_SEEN, subject))
        await asyncio.sleep(0)  # the observer is installed before the message can arrive
        accepted_at = await asyncio.to_thread(send_one, smtp_port, raw)
        shown_at_ms = await asyncio.wait_for(seen, 30)
        latencies.append(max(0.0, shown_at_ms / 1000 - accepted_at))
    await context.close()
    return latencies


async def long_list(browser, base: str, mongo_uri: str, size: int) -> dict[str, float]:
    await bulk_inbox(mongo_uri, size)
    context = await browser.new_context()
    await context.route("**/*", block_other_hosts)
    page = await context.new_page()
    await page.goto(base + "/")
    await sign_in(page, base)
    await page.locator("[role=list][aria-label=Mail] [role=listitem]").first.wait_for()
    scroller = "document.querySelector('[role=list][aria-label=Mail]').parentElement"
    loaded, stable_since = 0, time.perf_counter()
    while time.perf_counter() - stable_since < 5:
        await page.evaluate(f"{scroller}.scrollTop = {scroller}.scrollHeight")
        await page.wait_for_timeout(150)
        now = await page.evaluate(
            "Math.max(0, ...[...document.querySelectorAll('[role=list][aria-label=Mail] [role=listitem]')]"
            ".map((r) => Number(r.getAttribute('aria-posinset')) || 0))"
        )
        if now > loaded:
            loaded, stable_since = now, time.perf_counter()
    cdp = await context.new_cdp_session(page)
    await cdp.send("HeapProfiler.collectGarbage")
    await cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    rows_in_dom = await page.locator("[role=list][aria-label=Mail] [role=listitem]").count()
    scroll_ms = await page.evaluate(
        f"""() => new Promise((resolve) => {{
          const el = {scroller}; const t0 = performance.now();
          el.scrollTop = 0;
          requestAnimationFrame(() => {{ el.scrollTop = el.scrollHeight;
            requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0))); }});
        }})"""
    )
    await context.close()
    return {
        "loaded": loaded,
        "heap_mb": metrics["JSHeapUsedSize"] / 2**20,
        "heap_total_mb": metrics["JSHeapTotalSize"] / 2**20,
        "nodes": metrics["Nodes"],
        "rows_in_dom": rows_in_dom,
        "scroll_ms": scroll_ms,
    }


async def bulk_inbox(mongo_uri: str, size: int) -> None:
    """``size`` Inbox items for bob written as filing stores them (the MX takes minutes for
    10,000 on this machine; what is measured here is the browser, not the inbound path)."""
    from datetime import UTC, datetime, timedelta

    from bson import ObjectId

    from app.adapters.mongo import Mongo

    mongo = Mongo.open(mongo_uri, DATABASE)
    db = mongo.db
    bob = await db.users.find_one({"email": BOB})
    now = datetime.now(UTC) - timedelta(hours=1)  # older than the live messages
    batch = []
    for i in range(size):
        batch.append(
            {
                "_id": ObjectId(),
                "user_id": bob["_id"],
                "message_id": ObjectId(),  # a list row needs no message body until it is opened
                "role": "received",
                "thread_id": ObjectId(),
                "folder": "INBOX",
                "labels": [],
                "read": i % 3 == 0,
                "starred": False,
                "received_at": now - timedelta(seconds=size - i),
                "version": 1,
                "from": {"name": f"Sender {i % 97}", "email": f"s{i % 97}@partner.example"},
                "to": [{"name": None, "email": BOB}],
                "cc": [],
                "subject": f"Listed message {i}",
                "snippet": "Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2,
                "has_attachments": i % 10 == 0,
                "size": 2048,
            }
        )
        if len(batch) == 5000:
            await db.mailbox_items.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await db.mailbox_items.insert_many(batch, ordered=False)
    unread = sum(1 for i in range(size) if i % 3)
    await db.mailbox_counters.update_one(
        {"user_id": bob["_id"], "kind": "folder", "name": "INBOX"},
        {"$inc": {"total": size, "unread": unread}},
        upsert=True,
    )
    await mongo.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--list-size", type=int, default=10_000)
    args = ap.parse_args()
    if not STATIC.is_file():
        sys.exit("the webmail is not built: make assets")
    stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="bench-wm-")))
    stack.start(typesense=False)
    http_port, smtp_port = free_port(), free_port()
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": stack.url("mongodb"),
        "MAILHUB_MONGODB_DATABASE": DATABASE,
        "MAILHUB_REDIS_URL": stack.url("redis"),
        "MAILHUB_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "MAILHUB_LOG_LEVEL": "WARNING",
        "MAILHUB_SMTP_PORT": str(smtp_port),
        "MAILHUB_HTTP_PORT": str(http_port),
    }
    mailhub = str(Path(sys.executable).parent / "mailhub")
    for command in (["domains", "add", DOMAIN], ["users", "create", BOB, "--password", PASSWORD]):
        subprocess.run([mailhub, *command], env=env, check=True, stdout=subprocess.DEVNULL)
    api = subprocess.Popen(
        [mailhub, "api", "--port", str(http_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mx = subprocess.Popen(
        [mailhub, "mx", "--port", str(smtp_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(f"{base}/healthz", api)
        wait_smtp(smtp_port)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            load = await first_load(browser, base)
            latencies = (
                await live_arrival(browser, base, smtp_port, args.messages) if args.messages else []
            )
            listing = (
                await long_list(browser, base, stack.url("mongodb"), args.list_size)
                if args.list_size
                else None
            )
            await browser.close()
    finally:
        api.terminate()
        mx.terminate()
        api.wait(10)
        mx.wait(10)
        stack.stop()

    print(
        "| first load | bytes transferred | of which JS | requests | sign-in form interactive | Sign in → Inbox shown |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| `/` | {load['bytes'] / 1024:.1f} KB | {load['js'] / 1024:.1f} KB | {load['requests']:.0f} "
        f"| {load['tti'] * 1000:.0f} ms | {load['inbox'] * 1000:.0f} ms |"
    )
    if latencies:
        print(
            f"\n| MX 250 → row visible in the open Inbox ({len(latencies)} messages) | p50 | p99 | max |"
        )
        print("|---|---|---|---|")
        print(
            f"| | {pct(latencies, 50):.1f} ms | {pct(latencies, 99):.1f} ms | {max(latencies) * 1000:.1f} ms |"
        )
    if listing:
        print(
            "\n| rows listed | JS heap used (after GC) | JS heap total | DOM nodes | rows in the DOM "
            "| scroll top → bottom rendered |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {listing['loaded']:,.0f} | {listing['heap_mb']:.1f} MB | {listing['heap_total_mb']:.1f} MB "
            f"| {listing['nodes']:,.0f} | {listing['rows_in_dom']:.0f} | {listing['scroll_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    asyncio.run(main())
