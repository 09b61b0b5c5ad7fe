"""API keys in GraphQL (CONTRACT.md "API keys"): create (shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from schema import types as T


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="The key's first characters, to recognise it.")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="When the key last authenticated a request (updated at most once a minute)."
    )

    @staticmethod
    def of(d: dict[str, Any]) -> ApiKey:
        return ApiKey(
            id=strawberry.ID(str(d["_id"])),
            name=d["name"],
            prefix=d["prefix"],
            scopes=list(d["scopes"]),
            created_at=d["created_at"],
            last_used_at=d.get("last_used_at"),
        )


@strawberry.type
class ApiKeyCreated:
    key: str = strawberry.field(description="The key itself: shown this once, stored hashed.")
    api_key: ApiKey


ApiKeyResult = Annotated[ApiKeyCreated | T.ValidationErrorType, strawberry.union("ApiKeyResult")]


@strawberry.type
class ApiKeysQuery:
    @strawberry.field(description="The viewer's API keys (never the keys themselves).")
    async def api_keys(self, info: Info) -> list[ApiKey]:
        docs = await info.context.system.accounts.api_keys.of_user(await info.context.viewer())
        return [ApiKey.of(d) for d in docs]


@strawberry.type
class ApiKeysMutation:
    @strawberry.mutation(
        description="A key acting as the viewer within `scopes` (send templates campaigns "
        "webhooks read); sent as `Authorization: Bearer <key>`."
    )
    async def create_api_key(self, info: Info, name: str, scopes: list[str]) -> ApiKeyResult:
        key, doc = await info.context.system.accounts.api_keys.create(
            await info.context.viewer(), name, scopes
        )
        return ApiKeyCreated(key=key, api_key=ApiKey.of(doc))

    @strawberry.mutation(description="The key stops working at once; its subscriptions end.")
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> T.DeleteResult:
        if not await info.context.system.accounts.api_keys.revoke(
            await info.context.viewer(), str(id)
        ):
            return T.NotFoundType(message=f"no API key with id {id}")
        return T.DeleteSuccess(ids=[id])
