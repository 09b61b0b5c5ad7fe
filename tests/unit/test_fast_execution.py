"""The shortcut for plain attribute fields (schema/execution.py) must give exactly what
graphql-core's general path gives: same data, same errors, same paths — for good values and
for every way a value can be wrong."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import pytest
import strawberry

from schema.execution import FastExecutionContext


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Leaf:
    name: str
    maybe: str | None = None

    @strawberry.field
    def boom(self) -> str:
        raise ValueError("boom")

    @strawberry.field
    async def later(self) -> str:
        return f"later {self.name}"

    @strawberry.field
    def nullable_boom(self) -> str | None:
        raise ValueError("nullable boom")


@strawberry.type
class Node:
    id: strawberry.ID
    count: int
    ratio: float
    flag: bool
    color: Color
    at: datetime
    tags: list[str]
    leaf: Leaf
    maybe_leaf: Leaf | None
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None


def node(i: int, **overrides: object) -> Node:
    values: dict[str, object] = {
        "id": strawberry.ID(f"n{i}"),
        "count": i,
        "ratio": i / 3,
        "flag": i % 2 == 0,
        "color": Color.RED if i % 2 else Color.BLUE,
        "at": datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC),
        "tags": [f"t{i}"],
        "leaf": Leaf(name=f"leaf{i}"),
        "maybe_leaf": None if i % 2 else Leaf(name=f"m{i}", maybe="x"),
        "leaves": [Leaf(name=f"a{i}"), Leaf(name=f"b{i}")],
        "maybe_leaves": [Leaf(name="c"), None],
    }
    values.update(overrides)
    return Node(**values)  # type: ignore[arg-type]


NODES: list[Node] = []


@strawberry.type
class Query:
    @strawberry.field
    def nodes(self) -> list[Node]:
        return NODES

    @strawberry.field
    async def one(self) -> Node | None:
        return NODES[0] if NODES else None


def schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    return (
        strawberry.Schema(query=Query),
        strawberry.Schema(query=Query, execution_context_class=FastExecutionContext),
    )


ALL = """{ nodes { id count ratio flag color at tags leaf { name maybe later }
  maybeLeaf { name maybe } leaves { name } maybeLeaves { name } } }"""

PLAIN = """{ nodes { __typename id count ratio flag color at c2: count leaf { name maybe }
  maybeLeaf { name maybe __typename } leaves { name } maybeLeaves { name } } }"""

CASES = {
    "wholly plain selection": (PLAIN, lambda: [node(i) for i in range(6)]),
    "all fields": (ALL, lambda: [node(i) for i in range(5)]),
    "aliases, fragments, typename, skip": (
        """query { nodes { ...F a: count b: count __typename leaf @skip(if: true) { name }
           leaves @include(if: true) { n: name } } } fragment F on Node { id color }""",
        lambda: [node(i) for i in range(3)],
    ),
    "null for a non-null leaf": ("{ nodes { id count } }", lambda: [node(0, count=None)]),
    "scalar refuses the value": ("{ nodes { id count } }", lambda: [node(0, count="x")]),
    "enum refuses the value": ("{ nodes { color } }", lambda: [node(0, color="green")]),
    "null for a non-null object": ("{ nodes { id leaf { name } } }", lambda: [node(1, leaf=None)]),
    "object of the wrong type": ("{ nodes { leaf { name } } }", lambda: [node(1, leaf=node(2))]),
    "error inside a non-null object": (
        "{ nodes { id leaf { name boom } } }",
        lambda: [node(1), node(2)],
    ),
    "error inside a nullable field": (
        "{ nodes { id leaf { name nullableBoom } } }",
        lambda: [node(1)],
    ),
    "error inside a list item": ("{ nodes { leaves { name boom } } }", lambda: [node(3)]),
    "null item in a non-null list": (
        "{ nodes { leaves { name } } }",
        lambda: [node(3, leaves=[Leaf(name="a"), None])],
    ),
    "nullable list with null items": (
        "{ nodes { maybeLeaves { name } } }",
        lambda: [node(3), node(4, maybe_leaves=None)],
    ),
    "not a list": ("{ nodes { leaves { name } } }", lambda: [node(3, leaves=5)]),
    "async field under the shortcut": (
        "{ one { leaf { later } leaves { later } } }",
        lambda: [node(7)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_fast_execution_matches_graphql_core(case: str) -> None:
    query, make = CASES[case]
    NODES[:] = make()
    base, fast = schemas()
    expected = await base.execute(query)
    got = await fast.execute(query)
    assert got.data == expected.data
    assert [(e.message, e.path) for e in got.errors or []] == [
        (e.message, e.path) for e in expected.errors or []
    ]
    if case == "all fields":
        assert got.data and len(got.data["nodes"]) == 5 and not got.errors
    if case == "wholly plain selection":
        assert got.data and len(got.data["nodes"]) == 6 and not got.errors
    if case.startswith(("null ", "scalar", "enum", "error", "object", "not")):
        assert got.errors, "the case must exercise an error"


async def test_a_wholly_plain_selection_runs_as_one_generated_function() -> None:
    from schema.execution import caches_for

    NODES[:] = [node(i) for i in range(3)]
    _, fast = schemas()
    result = await fast.execute(PLAIN)
    assert not result.errors
    node_type = fast._schema.type_map["Node"]
    (completer,) = caches_for(fast._schema).generated[node_type].values()
    assert completer(NODES[1]) == result.data["nodes"][1]
    with pytest.raises(ValueError):  # a null where the type forbids one abandons it
        completer(node(1, leaf=None))
