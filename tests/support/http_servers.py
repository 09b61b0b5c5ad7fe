"""Real HTTP servers on loopback for tests: the mailhub api over a given System, and a webhook
receiver (Starlette) that records what it gets and answers with a scripted status."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.embedded import free_port


@contextlib.asynccontextmanager
async def serving(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@dataclass
class Delivery:
    body: bytes
    signature: str
    events: list[dict[str, Any]]
    status: int


@dataclass
class Receiver:
    """Answers each POST with the next status of ``script`` (then 200), recording every one."""

    script: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    before: Callable[[], Awaitable[None]] | None = None  # awaited first (to stall a request)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if self.before is not None:
            await self.before()
        status = self.script.pop(0) if self.script else 200
        self.deliveries.append(
            Delivery(
                body,
                request.headers.get("mailhub-signature", ""),
                json.loads(body),
                status,
            )
        )
        return Response(status_code=status)

    def accepted_events(self) -> list[dict[str, Any]]:
        return [e for d in self.deliveries if 200 <= d.status < 300 for e in d.events]

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.handle, methods=["POST"])])


@contextlib.asynccontextmanager
async def webhook_receiver(script: list[int] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(script=list(script or []))
    async with serving(receiver.app()) as base:
        receiver.url = base + "/hook"
        yield receiver


@dataclass
class ApiClient:
    base: str
    http: httpx.AsyncClient

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def mailhub_api(settings: Any, system: Any) -> AsyncIterator[ApiClient]:
    from app.web.app import create_app

    async with serving(create_app(settings, system)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            yield ApiClient(base, http)
