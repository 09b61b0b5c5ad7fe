"""Open and click tracking (issue 15), pure: rewriting a message's links and telling machine
opens and clicks from people's.

Only campaign mail with ``trackOpens``/``trackClicks`` is rewritten; person-to-person mail never
passes through here.

Machine rules (each event gets ``machine: true`` and the name of the first rule that matched):

- ``head_request``: a HEAD request. Browsers and mail clients GET; link checkers HEAD.
- ``known_agent``: the User-Agent is a known prefetcher or scanner: Google's image proxy
  (``GoogleImageProxy``), Yahoo's and other webmail image proxies, Microsoft SafeLinks /
  Defender, Proofpoint, Mimecast, Barracuda, Symantec/Broadcom, Bing preview, and generic
  HTTP libraries (curl, python-requests, Go-http-client, …).
- ``proxy_prefetch``: an open within ``prefetch_seconds`` (default 10) of delivery from a
  fetcher that does not say what it is — an empty User-Agent or the bare ``Mozilla/5.0``
  that Apple Mail Privacy Protection's proxy sends. Apple fetches every image of every
  message as soon as it arrives, whether or not anybody reads it.
- ``click_burst``: a second different link of the same message clicked within one second
  of another click: scanners follow every link at once, people do not. The earlier clicks of
  the burst are re-flagged too (the service does that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

# 1×1 transparent GIF
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

KNOWN_MACHINE_AGENTS = re.compile(
    r"googleimageproxy|ggpht\.com|yahoomailproxy|yahoo! slurp|bingpreview|bingbot"
    r"|safelinks|microsoft office|ms-office|defender|proofpoint|mimecast|barracuda"
    r"|symantec|broadcom|messagelabs|forcepoint|trend ?micro|sophos|fortiguard|zscaler"
    r"|curl/|wget/|python-requests|python-urllib|aiohttp|httpx|go-http-client|java/|okhttp"
    r"|libwww-perl|headlesschrome|phantomjs|scanner|crawler|spider|\bbot\b",
    re.IGNORECASE,
)
ANONYMOUS_AGENTS = {"", "mozilla/5.0"}  # Apple MPP's proxy sends the bare "Mozilla/5.0"
PREFETCH_SECONDS = 10.0
BURST_SECONDS = 1.0

# href="…" / href='…' of <a> (and <area>) elements, http(s) only: mailto:, tel: and anchors stay.
_HREF = re.compile(
    r"""(<(?:a|area)\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE
)


@dataclass(frozen=True)
class TrackedHtml:
    html: str
    links: list[str]  # the original URLs, by index (the click tokens carry the index)


def rewrite_links(html: str, click_url: Callable[[int], str]) -> TrackedHtml:
    """Every http(s) link of ``html`` replaced by ``click_url(index)``; the originals kept in
    order. The same URL twice gets one index (clicking either counts the same link)."""
    links: list[str] = []
    where: dict[str, int] = {}

    def replace(m: re.Match[str]) -> str:
        url = _unescape(m.group(3))
        index = where.get(url)
        if index is None:
            index = where[url] = len(links)
            links.append(url)
        return f"{m.group(1)}{m.group(2)}{click_url(index)}{m.group(2)}"

    return TrackedHtml(_HREF.sub(replace, html), links)


def _unescape(url: str) -> str:
    return url.replace("&amp;", "&")


def add_pixel(html: str, pixel_url: str) -> str:
    """The open pixel as the last thing in the body (or at the end when there is no body tag)."""
    img = (
        f'<img src="{pixel_url}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    at = html.lower().rfind("</body>")
    return html + img if at < 0 else html[:at] + img + html[at:]


@dataclass(frozen=True)
class Hit:
    """One request to a tracking URL."""

    method: str  # GET or HEAD
    user_agent: str
    at: datetime
    delivered_at: datetime | None  # when the message was delivered (None: not yet known)


def machine_open(hit: Hit, prefetch_seconds: float = PREFETCH_SECONDS) -> str | None:
    """The rule that makes this open a machine's, or None for a person's."""
    common = _common_rules(hit)
    if common:
        return common
    if hit.user_agent.strip().lower() in ANONYMOUS_AGENTS and hit.delivered_at is not None:
        if (hit.at - hit.delivered_at).total_seconds() <= prefetch_seconds:
            return "proxy_prefetch"
    return None


def machine_click(hit: Hit, link_index: int, recent: Sequence[tuple[datetime, int]]) -> str | None:
    """The rule that makes this click a machine's; ``recent`` are (time, link index) of the
    message's other clicks."""
    common = _common_rules(hit)
    if common:
        return common
    if burst_partners(hit.at, link_index, recent):
        return "click_burst"
    return None


def burst_partners(
    at: datetime, link_index: int, recent: Sequence[tuple[datetime, int]]
) -> list[tuple[datetime, int]]:
    """The other clicks, on a different link, within BURST_SECONDS of ``at``."""
    return [
        (t, i)
        for t, i in recent
        if i != link_index and abs((at - t).total_seconds()) <= BURST_SECONDS
    ]


def _common_rules(hit: Hit) -> str | None:
    if hit.method.upper() == "HEAD":
        return "head_request"
    if KNOWN_MACHINE_AGENTS.search(hit.user_agent or ""):
        return "known_agent"
    return None
