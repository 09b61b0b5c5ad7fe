"""The GraphQL schema of CONTRACT.md: thin resolvers, each calling one service.

Each capability contributes its own Query/Mutation/Subscription classes from its own module;
they are merged here into the one schema.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.tools import merge_types

from app.config import Settings
from schema.errors import EXCEPTION_HANDLERS, ErrorShaping
from schema.mutation import Mutation
from schema.query import Query

QUERIES: list[type] = [Query]
MUTATIONS: list[type] = [Mutation]
SUBSCRIPTIONS: list[type] = []


def build_schema(settings: Settings) -> strawberry.Schema:
    subscription: Any = merge_types("Subscription", tuple(SUBSCRIPTIONS)) if SUBSCRIPTIONS else None
    return strawberry.Schema(
        query=merge_types("Query", tuple(QUERIES)),
        mutation=merge_types("Mutation", tuple(MUTATIONS)),
        subscription=subscription,
        extensions=[
            lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
            lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            ErrorShaping,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
