"""The GraphQL schema of CONTRACT.md: thin resolvers, each calling one service."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from app.config import Settings
from schema.errors import EXCEPTION_HANDLERS, ErrorShaping
from schema.mutation import Mutation
from schema.query import Query


def build_schema(settings: Settings) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
            lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            ErrorShaping,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
