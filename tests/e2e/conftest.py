"""A running api (uvicorn on a free loopback port) over the real servers, and a tiny client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from app.bootstrap import build_system
from app.embedded import free_port
from app.web.app import create_app
from tests.support.cleanup import drop_database

DOMAIN = "example.test"


@pytest.fixture
def graphql_fast_execution() -> bool:
    """schema/execution.py's shortcut is on by default; a module that parametrizes this name
    (``tests.support.graphql_execution.BOTH_WAYS``) runs each test with it on and off."""
    return True


@pytest.fixture
def settings(settings, graphql_fast_execution):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"graphql_fast_execution": graphql_fast_execution})


@pytest.fixture
async def system(settings) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    system = await build_system(settings)
    await system.accounts.add_domain(DOMAIN)
    yield system
    await drop_database(system.mongo.client, settings.mongodb_database)
    await system.close()


@dataclass
class Api:
    base: str
    http: httpx.AsyncClient
    system: Any

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        expect_errors: bool = False,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert r.status_code == 200, r.text
        body = r.json()
        if not expect_errors:
            assert not body.get("errors"), body["errors"]
        return body

    async def user(
        self, local: str, password: str = "correct horse battery", name: str | None = None
    ) -> tuple[str, str]:
        """Create a user and log in; returns (email, token)."""
        email = f"{local}@{DOMAIN}"
        await self.system.accounts.create_user(email, password, name or local.title())
        body = await self.gql(
            "mutation($e:String!,$p:String!){login(email:$e,password:$p){"
            "__typename ... on LoginSuccess{token}}}",
            {"e": email, "p": password},
        )
        return email, body["data"]["login"]["token"]


@pytest.fixture
async def api(settings, system) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, system),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        # events are small JSON frames: compression would cost ~50 KB of zlib state per socket
        ws_per_message_deflate=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        yield Api(base, http, system)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
