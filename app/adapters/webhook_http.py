"""HTTP client for outbound webhook POSTs (httpx), with the address policy enforced at send time.

The host is resolved here and *every* address checked (app/domain/webhooks.py); the request then
goes to the checked address itself (Host header and TLS SNI keep the name), so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot reach an internal service.
httpx errors are translated into a ``PostResult`` at this edge; nothing here raises for a bad
endpoint.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.domain.webhooks import check_url, refused_addresses

USER_AGENT = "mailhub-webhooks/1"
MAX_ERROR = 300


@dataclass(frozen=True)
class PostResult:
    ok: bool
    status: int | None
    error: str | None  # for the endpoint's lastError


class AddressRefused(Exception):
    """The URL's host resolves to an address webhooks may not reach."""


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise AddressRefused(f"cannot resolve {host}: {e}") from e
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_destination(url: str, allow_private: bool) -> str:
    """The address to connect to for ``url``, after checking every address of its host."""
    _, host, port = check_url(url)
    addresses = await resolve(host, port)
    if not addresses:
        raise AddressRefused(f"{host} has no address")
    if not allow_private:
        refused = refused_addresses(addresses)
        if refused:
            raise AddressRefused(
                f"{host} resolves to a non-public address ({refused[0]}); webhooks only go to "
                "public hosts (MAILHUB_WEBHOOK_ALLOW_PRIVATE=true allows others, for development)"
            )
    return addresses[0]


class WebhookClient:
    def __init__(self, timeout_seconds: float, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.timeout = timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,  # a redirect could point anywhere: it is a failure
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        try:
            address = await check_destination(url, self.allow_private)
        except AddressRefused as e:
            return PostResult(False, None, str(e)[:MAX_ERROR])
        parts = urlsplit(url)
        ip_host = f"[{address}]" if ":" in address else address
        netloc = f"{ip_host}:{parts.port}" if parts.port else ip_host
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rsplit("@", 1)[-1]
        try:
            async with asyncio.timeout(self.timeout + 1):
                response = await self._client.post(
                    pinned,
                    content=body,
                    headers={**headers, "Host": host_header, "Content-Type": "application/json"},
                    extensions={"sni_hostname": parts.hostname or ""},
                )
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            return PostResult(False, None, f"{type(e).__name__}: {e}"[:MAX_ERROR])
        if 200 <= response.status_code < 300:
            return PostResult(True, response.status_code, None)
        return PostResult(
            False, response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"
        )
