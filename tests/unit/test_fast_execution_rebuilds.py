"""Plans of the fast executor (schema/execution.py) belong to the schema they were built for.

They were once cached by ``id(type)`` with no reference kept: after a schema was rebuilt (the
e2e tests build one per test) a new type could get the id of a dead type and with it the dead
type's plan, and an ``Int`` field came back as the string ``"5"``.
"""

from __future__ import annotations

import gc
import weakref

import strawberry

from schema.execution import FastExecutionContext


@strawberry.type
class Counted:
    value: int


@strawberry.type
class Named:
    value: str


@strawberry.type
class Query:
    @strawberry.field
    def counted(self) -> Counted:
        return Counted(value=5)

    @strawberry.field
    def named(self) -> Named:
        return Named(value="five")


def test_a_rebuilt_schema_never_uses_a_plan_of_a_dead_type() -> None:
    answers = []
    alive: list[weakref.ref[strawberry.Schema]] = []
    for _ in range(100):
        schema = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
        result = schema.execute_sync("{ named { value } counted { value } }")
        assert result.errors is None
        answers.append(result.data)
        alive.append(weakref.ref(schema))
        del schema, result
        gc.collect()  # the dead schema's types free their memory (and their ids) now
    wrong = [a for a in answers if a != {"named": {"value": "five"}, "counted": {"value": 5}}]
    assert wrong == []
    assert [r for r in alive if r() is not None] == [], "the caches die with their schema"


def test_the_setting_turns_the_shortcut_off() -> None:
    from app.config import Settings
    from schema import build_schema

    on = build_schema(Settings(_env_file=None))
    off = build_schema(Settings(_env_file=None, graphql_fast_execution=False))
    assert on.execution_context_class is FastExecutionContext
    assert off.execution_context_class is not FastExecutionContext
