"""Per-request context: the system, the (lazily authenticated) viewer, and batch loaders.

The loaders are why a page of 50 items costs a bounded number of database round trips:
every MailboxItem on the page asks the same loader, which fetches all of them with one $in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from strawberry.dataloader import DataLoader

from app.bootstrap import System
from app.domain.errors import Forbidden
from app.domain.viewer import Viewer


@dataclass
class Context:
    system: System
    token: str | None
    client: str
    request: Any = None
    response: Any = None
    _viewer: Viewer | None = None
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)
    connection_params: dict[str, Any] | None = None  # websocket connection_init payload
    # the API-key scopes this operation needs (schema/scopes.py, app/web/rest.py); None: none
    required_scopes: set[str | None] | None = None

    async def authenticate_websocket(self) -> Viewer:
        """graphql-transport-ws: the token comes in connection_init as {"token": ...}."""
        params = self.connection_params or {}
        token = params.get("token") if isinstance(params.get("token"), str) else None
        self.token = token or self.token
        return await self.viewer()

    async def disconnect_slow_client(self) -> None:
        """Back-pressure: close the websocket of a client whose queue overflowed."""
        close = getattr(self.request, "close", None)
        if close is not None:
            try:
                await close(code=4008, reason="client too slow")
            except Exception:  # already closing
                pass

    async def viewer(self) -> Viewer:
        if self._viewer is None:
            self._viewer = await self.system.accounts.authenticate(self.token)
        if self._viewer.scopes is not None and self.required_scopes is not None:
            for scope in self.required_scopes:  # an API key: only within its scopes
                if not self._viewer.allows(scope):
                    raise Forbidden(
                        f"this API key lacks the scope {scope!r} for this operation"
                        if scope
                        else "this operation is not available to API keys; use a login token"
                    )
        return self._viewer

    def loader(self, name: str) -> DataLoader[Any, Any]:
        if name not in self.loaders:
            self.loaders[name] = DataLoader(load_fn=getattr(self, f"_load_{name}"))
        return self.loaders[name]

    async def _load_messages(self, ids: list[ObjectId]) -> list[dict[str, Any] | None]:
        found = await self.system.mailbox.messages_by_ids(list(ids))
        return [found.get(i) for i in ids]

    async def _load_recipients(self, ids: list[ObjectId]) -> list[list[dict[str, Any]]]:
        found = await self.system.mailbox.recipients_by_message(list(ids))
        return [found.get(i, []) for i in ids]

    async def _load_thread_items(self, ids: list[ObjectId]) -> list[list[dict[str, Any]]]:
        found = await self.system.mailbox.items_of_threads(await self.viewer(), list(ids))
        return [found.get(i, []) for i in ids]
