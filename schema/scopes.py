"""API-key scopes in GraphQL: each operation needs the scopes of its root fields.

The scopes are put on the request context before execution; ``Context.viewer()`` refuses an
API key without them (``FORBIDDEN``). Login tokens are not limited. Which field needs which
scope: app/domain/api_scopes.py (deny by default).
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from app.domain.api_scopes import scopes_needed


def _root_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], depth: int = 0
) -> list[str]:
    names: list[str] = []
    if depth > 5:
        return names
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            names.append(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            names += _root_fields(selection.selection_set, fragments, depth + 1)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                names += _root_fields(fragment.selection_set, fragments, depth + 1)
    return names


class ApiKeyScopes(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        context = ec.context
        if document is not None and hasattr(context, "required_scopes"):
            fragments = {
                d.name.value: d
                for d in document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            chosen = [
                o
                for o in operations
                if ec.operation_name is None or (o.name and o.name.value == ec.operation_name)
            ][:1]
            names = [n for o in chosen for n in _root_fields(o.selection_set, fragments)]
            context.required_scopes = scopes_needed(names)
        yield
