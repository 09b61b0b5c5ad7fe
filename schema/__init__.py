"""The GraphQL schema of CONTRACT.md: thin resolvers, each calling one service.

Each capability contributes its own Query/Mutation/Subscription classes from its own module;
they are merged here into the one schema.
"""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.tools import merge_types

from app.config import Settings
from schema.api_keys import ApiKeysMutation, ApiKeysQuery
from schema.campaigns import CampaignsMutation, CampaignsQuery, CampaignsSubscription
from schema.delivery import DeliveryMutation, DeliveryQuery
from schema.errors import EXCEPTION_HANDLERS, ErrorShaping, log_client_errors
from schema.events import EventsMutation, EventsQuery
from schema.execution import FastExecutionContext
from schema.limits import create_limits_rule
from schema.mutation import Mutation
from schema.query import Query
from schema.realtime import RealtimeQuery, RealtimeSubscription
from schema.scopes import ApiKeyScopes
from schema.search import SearchQuery
from schema.spam import SpamMutation
from schema.suppressions import SuppressionsMutation, SuppressionsQuery
from schema.templates import TemplatesMutation, TemplatesQuery

QUERIES: list[type] = [
    Query,
    RealtimeQuery,
    SearchQuery,
    SuppressionsQuery,
    DeliveryQuery,
    ApiKeysQuery,
    TemplatesQuery,
    EventsQuery,
    CampaignsQuery,
]
MUTATIONS: list[type] = [
    Mutation,
    SuppressionsMutation,
    DeliveryMutation,
    SpamMutation,
    ApiKeysMutation,
    TemplatesMutation,
    EventsMutation,
    CampaignsMutation,
]
SUBSCRIPTIONS: list[type] = [RealtimeSubscription, CampaignsSubscription]


class MailhubSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Instead of Strawberry's error log (a traceback for every error, even a bad token):
        one info line per client error; bugs are logged where they are masked."""
        log_client_errors(errors)


def build_schema(settings: Settings) -> strawberry.Schema:
    subscription: Any = merge_types("Subscription", tuple(SUBSCRIPTIONS)) if SUBSCRIPTIONS else None
    # The limit rules are built once, not per request: the validation cache is keyed by the
    # rule classes, so per-request classes (what QueryDepthLimiter(...) makes) never hit it.
    rules: list[type[ASTValidationRule]] = [
        create_limits_rule(
            settings.graphql_max_depth, settings.graphql_max_aliases, settings.graphql_max_fields
        )
    ]
    if not settings.graphql_introspection:  # open by default: docs/api.md says why
        rules.append(NoSchemaIntrospectionCustomRule)
    return MailhubSchema(
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
            ApiKeyScopes,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        execution_context_class=(FastExecutionContext if settings.graphql_fast_execution else None),
    )
