"""What a GraphQL document may cost to validate and run, checked in one pass over it.

Strawberry's depth and alias limiters expand every fragment spread afresh: a document of 21
fragments that each spread the one before twice (1.4 KB) makes them walk 2^20 spreads — seconds
of blocked event loop, before authentication. Here each fragment is measured once and its cost
reused at every spread, so the check is linear in the document; and the expanded size (fields
counted at each use of their fragment) is capped, since that is also what execution would walk.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)


@dataclass(frozen=True)
class Cost:
    depth: int  # fields with a selection set on the longest path (introspection fields: 0)
    aliases: int  # aliased fields, counted at each use of their fragment
    fields: int  # fields once every fragment spread is expanded


_FREE = Cost(0, 0, 0)


class _Measure:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.done: dict[str, Cost] = {}
        self.open: set[str] = set()  # a cycle is NoFragmentCyclesRule's to report

    def selections(self, selection_set: SelectionSetNode | None) -> Cost:
        depth = aliases = fields = 0
        for node in selection_set.selections if selection_set else ():
            cost = self.selection(node)
            depth = max(depth, cost.depth)
            aliases += cost.aliases
            fields += cost.fields
        return Cost(depth, aliases, fields)

    def selection(self, node: object) -> Cost:
        if isinstance(node, FieldNode):
            inner = self.selections(node.selection_set)
            introspection = node.name.value.startswith("__")
            nested = 1 + inner.depth if node.selection_set and not introspection else 0
            return Cost(nested, inner.aliases + (1 if node.alias else 0), inner.fields + 1)
        if isinstance(node, InlineFragmentNode):
            return self.selections(node.selection_set)
        if isinstance(node, FragmentSpreadNode):
            return self.fragment(node.name.value)
        return _FREE

    def fragment(self, name: str) -> Cost:
        if name in self.done:
            return self.done[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.open:  # unknown or cyclic: other rules report it
            return _FREE
        self.open.add(name)
        cost = self.selections(definition.selection_set)
        self.open.discard(name)
        self.done[name] = cost
        return cost


def document_cost(
    operations: list[OperationDefinitionNode], fragments: dict[str, FragmentDefinitionNode]
) -> dict[str, Cost]:
    """The cost of each operation (by name, "" for an anonymous one)."""
    measure = _Measure(fragments)
    return {
        (op.name.value if op.name else ""): measure.selections(op.selection_set)
        for op in operations
    }


def create_limits_rule(max_depth: int, max_aliases: int, max_fields: int) -> type[ValidationRule]:
    """One validation rule for depth, aliases and expanded size (built once per schema: the
    validation cache is keyed by the rule classes)."""

    class DocumentLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            definitions = context.document.definitions
            fragments = {
                d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)
            }
            operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
            costs = document_cost(operations, fragments)
            for name, cost in costs.items():
                label = f"'{name}'" if name else "The operation"
                if cost.depth > max_depth:
                    context.report_error(
                        GraphQLError(f"{label} exceeds maximum operation depth of {max_depth}")
                    )
            if sum(c.fields for c in costs.values()) > max_fields:
                context.report_error(
                    GraphQLError(
                        f"The document expands to more than {max_fields} fields "
                        "(a fragment's fields count at each use)"
                    )
                )
            aliases = sum(c.aliases for c in costs.values())
            if aliases > max_aliases:
                context.report_error(
                    GraphQLError(f"{aliases} aliases found. Allowed: {max_aliases}")
                )

    return DocumentLimits
