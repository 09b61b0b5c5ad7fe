"""The GraphQL schema of CONTRACT.md: thin resolvers, each calling one service.

Each capability contributes its own Query/Mutation/Subscription classes from its own module;
they are merged here into the one schema.
"""

from __future__ import annotations

from typing import Any

import strawberry
from graphql.validation import ASTValidationRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.tools import merge_types

from app.config import Settings
from schema.delivery import DeliveryMutation, DeliveryQuery
from schema.errors import EXCEPTION_HANDLERS, ErrorShaping
from schema.execution import FastExecutionContext
from schema.mutation import Mutation
from schema.query import Query
from schema.realtime import RealtimeQuery, RealtimeSubscription
from schema.search import SearchQuery
from schema.spam import SpamMutation
from schema.suppressions import SuppressionsMutation, SuppressionsQuery

QUERIES: list[type] = [Query, RealtimeQuery, SearchQuery, SuppressionsQuery, DeliveryQuery]
MUTATIONS: list[type] = [Mutation, SuppressionsMutation, DeliveryMutation, SpamMutation]
SUBSCRIPTIONS: list[type] = [RealtimeSubscription]


def build_schema(settings: Settings) -> strawberry.Schema:
    subscription: Any = merge_types("Subscription", tuple(SUBSCRIPTIONS)) if SUBSCRIPTIONS else None
    # The limit rules are built once, not per request: the validation cache is keyed by the
    # rule classes, so per-request classes (what QueryDepthLimiter(...) makes) never hit it.
    rules: list[type[ASTValidationRule]] = [
        depth_rule(settings.graphql_max_depth, None, None),
        aliases_rule(settings.graphql_max_aliases),
    ]
    return strawberry.Schema(
        query=merge_types("Query", tuple(QUERIES)),
        mutation=merge_types("Mutation", tuple(MUTATIONS)),
        subscription=subscription,
        extensions=[
            lambda: AddValidationRules(rules),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            # Clients send the same few documents over and over: parse and validate each once.
            # Limits still apply: a document is cached only after passing them.
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            ErrorShaping,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        execution_context_class=(FastExecutionContext if settings.graphql_fast_execution else None),
    )
