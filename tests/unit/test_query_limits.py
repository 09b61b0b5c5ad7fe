"""Document limits (schema/limits.py): measured once per fragment, so validation stays linear."""

from __future__ import annotations

from graphql import parse, validate

from app.config import Settings
from schema import build_schema
from schema.limits import create_limits_rule

SCHEMA = build_schema(Settings(_env_file=None))._schema
RULE = create_limits_rule(max_depth=3, max_aliases=4, max_fields=100)


def errors(document: str) -> list[str]:
    return [e.message for e in validate(SCHEMA, parse(document), [RULE])]


def doubling_fragments(n: int) -> str:
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)
    ]
    return f"query {{ ...F{n} }} " + " ".join(fragments)


def test_fragments_that_double_at_each_level_are_refused_by_their_expanded_size():
    # 2^60 fields once expanded: only a check that measures each fragment once ever returns
    assert errors(doubling_fragments(60)) == [
        "The document expands to more than 100 fields (a fragment's fields count at each use)"
    ]
    assert errors(doubling_fragments(6)) == []  # 64 fields


def test_depth_is_counted_through_fragments_and_introspection_is_free():
    deep = "query Deep { threads { edges { node { ...M } } } } fragment M on Thread { messages { id } }"
    assert errors(deep) == ["'Deep' exceeds maximum operation depth of 3"]
    assert errors("{ threads { edges { node { id } } } }") == []
    assert errors("{ __schema { types { fields { type { name } } } } }") == []


def test_aliases_count_at_each_use_of_their_fragment():
    document = "{ ...A ...A ...A } fragment A on Query { a: me { id } b: me { id } }"
    assert errors(document) == ["6 aliases found. Allowed: 4"]


def test_cyclic_and_unknown_fragments_are_left_to_the_standard_rules():
    assert errors("{ ...Missing }") == []
    cyclic = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"
    assert errors(cyclic) == []
    assert validate(SCHEMA, parse(cyclic))  # NoFragmentCyclesRule reports it


INTROSPECTION = "{ __schema { queryType { name } types { name fields { name } } } }"


async def test_introspection_is_open_by_default_and_bounded_like_any_document():
    """The schema is the published contract (CONTRACT.md, GraphiQL): introspection answers
    anonymous clients, within the same limits as every other document (docs/api.md)."""
    result = await build_schema(Settings(_env_file=None)).execute(INTROSPECTION)
    assert result.errors is None and result.data["__schema"]["queryType"]["name"] == "Query"
    nested = "ofType { " * 1500 + "name" + " }" * 1500
    deep = "{ __schema { types { fields { type { " + nested + " } } } } }"
    result = await build_schema(Settings(_env_file=None)).execute(deep)
    assert result.errors and result.data is None  # the parser's nesting or the token limit
    doubled = doubling_fragments(20).replace("__typename", "__schema { types { name } }")
    result = await build_schema(Settings(_env_file=None)).execute(doubled)
    assert result.errors and "expands to more than" in result.errors[0].message


async def test_introspection_can_be_turned_off():
    schema = build_schema(Settings(graphql_introspection=False, _env_file=None))
    result = await schema.execute(INTROSPECTION)
    assert result.errors and "introspection" in result.errors[0].message.lower()
    assert (await schema.execute("{ __typename }")).errors is None
