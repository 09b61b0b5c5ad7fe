"""A running mailhub as `mailhub dev` runs it — the API (uvicorn, free loopback port), the MX and
the delivery worker in one event loop, on the real embedded servers of tests/conftest.py — and
Debian's chromium driven by Playwright (the async API: our tests and servers share one loop).

`playwright install` cannot download browsers here, so the browser is the apt package
(`chromium`; MAILHUB_TEST_CHROMIUM overrides the path). The front-ends must be built
(`make assets`, which `make test` runs first); a missing build or browser fails loudly rather
than skipping.

Every browser context is offline: a request to any host but this machine is aborted and
recorded, and each test asserts there were none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from app.bootstrap import build_system
from app.embedded import free_port
from app.web.app import create_app
from app.web.frontends import Frontends
from tests.support.cleanup import drop_database
from tests.support.mx import DOMAIN, MailZone, mail_zone, smtp_send

CHROMIUM = os.environ.get("MAILHUB_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MAILHUB_TEST_ARTIFACTS", "var/test-artifacts/browser"))
PASSWORD = "correct horse battery"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="session")
def zone() -> Iterator[MailZone]:
    """DNS for the MX's SPF/DKIM/DMARC checks (tests/support/mx.py), never the internet's."""
    z = mail_zone()
    yield z
    z.dns.stop()


@dataclass
class Mailhub:
    base: str
    smtp_port: int
    system: Any
    http: httpx.AsyncClient
    settings: Any = None
    stop_worker: Callable[[], Awaitable[None]] | None = None
    api: tuple[uvicorn.Server, asyncio.Task[None]] | None = None

    async def start_api(self) -> None:
        """The HTTP/websocket server on the fixture's port (again, after ``stop_api``)."""
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.settings, self.system),
                host="127.0.0.1",
                port=self.settings.http_port,
                log_level="warning",
                ws="websockets-sansio",
                ws_per_message_deflate=False,
                lifespan="on",
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
            if serving.done():
                serving.result()
        self.api = (server, serving)

    async def stop_api(self) -> None:
        """Every browser loses its websocket (the MX and the worker keep running)."""
        if self.api is not None:
            server, serving = self.api
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
            self.api = None

    async def start_worker(self) -> None:
        """The delivery worker (started by the fixture unless ``mailhub_worker`` is False)."""
        from jobs.worker import start_embedded_worker

        if self.stop_worker is None:
            self.stop_worker = await start_embedded_worker(self.settings, self.system)

    async def user(self, local: str, name: str | None = None) -> str:
        email = f"{local}@{DOMAIN}"
        await self.system.accounts.create_user(email, PASSWORD, name or local.title())
        return email

    async def token(self, email: str, password: str = PASSWORD) -> str:
        body = await self.gql(
            "mutation($e:String!,$p:String!){login(email:$e,password:$p){"
            "__typename ... on LoginSuccess{token}}}",
            {"e": email, "p": password},
        )
        return str(body["data"]["login"]["token"])

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert not body.get("errors"), body["errors"]
        return body

    async def deliver(self, raw: bytes, to: str, mail_from: str = "alice@pass.test") -> None:
        """One message through the MX, as another server would hand it over."""
        result = await smtp_send(self.smtp_port, raw, mail_from=mail_from, rcpts=[to])
        assert result.get("data", (0,))[0] == 250, result


@pytest.fixture
def mailhub_overrides() -> dict[str, Any]:
    """Settings a test module changes (override this fixture), e.g. the undo window."""
    return {}


@pytest.fixture
def mailhub_worker() -> bool:
    """False: the test starts the worker itself (``await mailhub.start_worker()``)."""
    return True


@pytest.fixture
async def mailhub(settings, zone, mailhub_overrides, mailhub_worker) -> AsyncIterator[Mailhub]:  # type: ignore[no-untyped-def]
    from app.mx.server import start_mx

    frontends = Frontends(settings.static_dir)
    missing = [a.name for a in (frontends.graphiql, frontends.webmail) if not a.index.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built: run `make assets` (make test does)")
    settings = settings.model_copy(
        update={
            "dns_servers": [zone.address],
            "smtp_port": 0,
            "http_port": free_port(),
            **mailhub_overrides,
        }
    )
    system = await build_system(settings)
    await system.accounts.add_domain(DOMAIN)
    mx = await start_mx(settings, system)
    base = f"http://127.0.0.1:{settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        hub = Mailhub(base, mx.port, system, http, settings)
        try:
            await hub.start_api()
            if mailhub_worker:
                await hub.start_worker()
            yield hub
        finally:
            await hub.stop_api()
            if hub.stop_worker is not None:
                with contextlib.suppress(Exception):
                    await hub.stop_worker()
        await mx.stop(grace=2)
        await drop_database(system.mongo.client, settings.mongodb_database)
        await system.close()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no browser at {CHROMIUM}: apt-get install chromium (or MAILHUB_TEST_CHROMIUM)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        await browser.close()


@dataclass
class Offline:
    """What the pages of one test tried to reach beyond this machine, and what they logged."""

    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]


@pytest.fixture
async def new_context(
    chromium: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[tuple[BrowserContext, Page]]]]:
    """``await new_context(name)``: an offline browser context and its first page."""
    contexts: list[tuple[str, BrowserContext]] = []
    offline = Offline()
    request.node.offline = offline

    async def block_other_hosts(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            await route.continue_()
        else:
            offline.blocked.append(route.request.url)
            await route.abort("internetdisconnected")

    async def make(name: str = "user", **options: Any) -> tuple[BrowserContext, Page]:
        context = await chromium.new_context(
            accept_downloads=True, viewport={"width": 1280, "height": 800}, **options
        )
        await context.route(re.compile(r".*"), block_other_hosts)
        page = await context.new_page()
        page.on(
            "console",
            lambda m: offline.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: offline.page_errors.append(str(e)))

        async def record_dialog(dialog: Any) -> None:
            offline.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", record_dialog)
        contexts.append((name, context))
        return context, page

    yield make
    directory = artifacts_dir(request)
    for name, context in contexts:
        for i, page in enumerate(context.pages):
            with contextlib.suppress(Exception):
                await page.screenshot(path=str(directory / f"{name}-{i}-last.png"), full_page=True)
        await context.close()


def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    directory = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Awaitable[Path]]:
    """``await screenshot(page, "inbox")``: saved under var/test-artifacts/browser/<test>/."""

    async def take(page: Page, name: str) -> Path:
        path = artifacts_dir(request) / f"{name}.png"
        await page.screenshot(path=str(path))
        return path

    return take
