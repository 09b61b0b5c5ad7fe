"""A faster execution of plain attribute fields.

graphql-core completes every field the same way: build a resolve info, call the resolver, check
for an awaitable, dispatch on the return type, then coerce a leaf or recurse into an object.
For a field that is just an attribute of a Strawberry object (no resolver, no arguments, no
extensions) most of that work has a known outcome: a scalar or enum needs ``getattr`` plus the
scalar's output coercion; an object (or a list of objects) needs ``getattr`` plus the
sub-selection. A 50-item folder page is ~600 fields, nearly all of them such attributes, and
the general path was most of the time GraphQL added to a page read (docs/benchmarks.md, API
reads: execution of a page went from 2.9 to about 1 ms of CPU).

``FastExecutionContext.execute_fields`` takes that shortcut for eligible fields and hands every
other field (resolvers, arguments, abstract types, lists of leaves, @stream) to graphql-core
unchanged. A value the shortcut cannot complete — a null for a non-null field, a value the
scalar refuses, an object of the wrong type — goes the general way before anything about it
has run, so such errors and their paths are exactly graphql-core's; errors raised inside a
sub-selection are located and nulled with graphql-core's own ``handle_field_error``, as its
``execute_field`` / ``complete_list_item_value`` do. With resolver middleware installed (a
schema extension with a ``resolve`` hook) the shortcut is off.

One module although over 400 lines: it mirrors one part of graphql-core's executor, and keeping
that mirror in one place is what lets docs/overrides.md and its guard test pin it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
)
from graphql.pyutils import Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

LEAF, OBJECT, OBJECT_LIST = 0, 1, 2


Shape = tuple[tuple[str, str, Any], ...]  # (response name, field name, sub-shape or None)
_GENERATED_PER_TYPE = 64  # distinct selection shapes kept per type


class PlainField(NamedTuple):
    kind: int
    python_name: str
    read: Callable[[Any, str], Any]
    field_type: GraphQLOutputType  # the declared type (with its non-null wrapper)
    non_null: bool
    coerce: Callable[[Any], Any] | None  # LEAF
    object_type: GraphQLObjectType | None  # OBJECT, and the items of OBJECT_LIST
    item_type: GraphQLOutputType | None  # OBJECT_LIST: the declared item type


class SchemaCaches:
    """What the shortcut computes once per schema: the plan of each object type and the
    generated completers per (type, selection shape). Keyed by the type objects themselves
    (identity) and held per schema, so a type can only ever meet its own plan: caching by
    ``id(type)`` once let a rebuilt schema's type inherit the plan of a dead type that had had
    the same id (an Int field then came back as the string "5")."""

    def __init__(self) -> None:
        self.plans: dict[GraphQLObjectType, dict[str, PlainField]] = {}
        self.generated: dict[GraphQLObjectType, dict[Shape, Callable[[Any], Any]]] = {}

    def field_plan(self, parent_type: GraphQLObjectType) -> dict[str, PlainField]:
        """The shortcut-eligible fields of a type, by GraphQL name (computed once per type)."""
        plan = self.plans.get(parent_type)
        if plan is None:
            plan = self.plans[parent_type] = _build_plan(parent_type)
        return plan

    def generated_completer(
        self, object_type: GraphQLObjectType, shape: Shape
    ) -> Callable[[Any], Any]:
        by_shape = self.generated.setdefault(object_type, {})
        function = by_shape.get(shape)
        if function is None:
            if len(by_shape) >= _GENERATED_PER_TYPE:
                by_shape.clear()
            function = by_shape[shape] = _Generator(self).function(object_type, shape)
        return function


CACHES_EXTENSION = "mailhub-fast-execution"


def caches_for(schema: GraphQLSchema) -> SchemaCaches:
    """The schema's caches, kept in its ``extensions`` (graphql-core's place for data of ours
    on its objects) so they live and die with it. Not a global map keyed by the schema: the
    plans hold Strawberry's ``is_type_of`` closures, which refer back to the schema, so a map
    entry would keep every schema alive."""
    caches = schema.extensions.get(CACHES_EXTENSION)
    if caches is None:
        caches = schema.extensions[CACHES_EXTENSION] = SchemaCaches()
    return caches  # type: ignore[no-any-return]


def _build_plan(parent_type: GraphQLObjectType) -> dict[str, PlainField]:
    if GraphQLCoreConverter.DEFINITION_BACKREF not in (parent_type.extensions or {}):
        return {}  # not a Strawberry object type (introspection types)
    plan: dict[str, PlainField] = {}
    for name, graphql_field in parent_type.fields.items():
        field = (graphql_field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if field is None or graphql_field.args or not field.is_basic_field:
            continue
        if not getattr(graphql_field.resolve, "_is_default", False):
            continue  # Strawberry wraps it (exception handlers, ...): keep the general path
        declared = graphql_field.type
        non_null = isinstance(declared, GraphQLNonNull)
        inner = declared.of_type if non_null else declared
        common = (field.python_name, field.default_resolver, declared, non_null)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType):
            plan[name] = PlainField(LEAF, *common, inner.coerce_output_value, None, None)
        elif isinstance(inner, GraphQLObjectType):
            plan[name] = PlainField(OBJECT, *common, None, inner, None)
        elif isinstance(inner, GraphQLList):
            item = inner.of_type
            item_inner = item.of_type if isinstance(item, GraphQLNonNull) else item
            if isinstance(item_inner, GraphQLObjectType):
                plan[name] = PlainField(OBJECT_LIST, *common, None, item_inner, item)
    return plan


def _is_a(object_type: GraphQLObjectType, value: Any) -> bool:
    return object_type.is_type_of is None or object_type.is_type_of(value, None) is True  # type: ignore[arg-type]


# --- whole plain selections, compiled to Python ---------------------------------------------
#
# When every field of a selection (and of its sub-selections) is a plain attribute, completing
# an object is a fixed sequence of attribute reads, checks and coercions. That sequence is
# generated once per (type, selection shape) as a Python function and cached across requests;
# a 50-item page is then one call. The function has no side effects (it only reads attributes
# of already-resolved objects), so on anything unusual — a null where the type forbids one, a
# value a scalar refuses, an object of another type, any exception — it is abandoned and the
# object is completed the field-by-field way, which reports the error exactly as graphql-core
# does.


class _Generator:
    def __init__(self, caches: SchemaCaches) -> None:
        self.caches = caches
        self.env: dict[str, Any] = {"isinstance": isinstance, "list": list, "tuple": tuple}
        self.lines: list[str] = []
        self.names = 0

    def name(self, prefix: str, value: Any = None) -> str:
        self.names += 1
        name = f"{prefix}{self.names}"
        if value is not None:
            self.env[name] = value
        return name

    def function(
        self, object_type: GraphQLObjectType, shape: Shape, *, item: bool = False
    ) -> Callable[[Any], Any]:
        """``complete(src)`` for one object of ``object_type``; as a list ``item`` it first
        checks what the list's general path would (present, of the item type)."""
        self.lines = []
        if item:
            self.emit(1, "if src is None: raise ValueError")
            self.type_check(object_type, "src", 1)
        result = self.object(object_type, shape, "src", 1)
        source = "def complete(src):\n" + "\n".join(self.lines) + f"\n    return {result}\n"
        namespace = dict(self.env)
        exec(compile(source, f"<plain selection on {object_type.name}>", "exec"), namespace)
        return namespace["complete"]  # type: ignore[no-any-return]

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def object(self, object_type: GraphQLObjectType, shape: Shape, src: str, depth: int) -> str:
        plan = self.caches.field_plan(object_type)
        entries = []
        for response_name, field_name, sub in shape:
            if field_name == "__typename":
                entries.append(f"{response_name!r}: {object_type.name!r}")
                continue
            plain = plan[field_name]
            value = self.name("v")
            if plain.read is getattr and plain.python_name.isidentifier():
                self.emit(depth, f"{value} = {src}.{plain.python_name}")
            else:
                read = self.name("read", plain.read)
                self.emit(depth, f"{value} = {read}({src}, {plain.python_name!r})")
            if plain.non_null:
                self.emit(depth, f"if {value} is None: raise ValueError")
            if plain.kind == LEAF:
                coerce = self.name("coerce", plain.coerce)
                inner = plain.field_type
                inner = inner.of_type if isinstance(inner, GraphQLNonNull) else inner
                exact = _PASSTHROUGH.get(id(inner))
                tests = [] if plain.non_null else [f"{value} is not None"]
                if exact is not None:
                    tests.append(f"type({value}) is not {self.name('exact', exact)}")
                if tests:
                    self.emit(depth, f"if {' and '.join(tests)}:")
                    self.emit(depth + 1, f"{value} = {coerce}({value})")
                    self.emit(depth + 1, f"if {value} is None: raise ValueError")
                else:
                    self.emit(depth, f"{value} = {coerce}({value})")
                    self.emit(depth, f"if {value} is None: raise ValueError")
            elif plain.kind == OBJECT:
                assert plain.object_type is not None
                inner_depth = depth
                if not plain.non_null:
                    self.emit(depth, f"if {value} is not None:")
                    inner_depth = depth + 1
                self.type_check(plain.object_type, value, inner_depth)
                built = self.object(plain.object_type, sub, value, inner_depth)
                self.emit(inner_depth, f"{value} = {built}")
            else:  # OBJECT_LIST: items completed by a generated function of their own
                assert plain.object_type is not None and plain.item_type is not None
                item = self.name(
                    "item", _Generator(self.caches).function(plain.object_type, sub, item=True)
                )
                inner_depth = depth
                if not plain.non_null:
                    self.emit(depth, f"if {value} is not None:")
                    inner_depth = depth + 1
                self.emit(
                    inner_depth, f"if not isinstance({value}, (list, tuple)): raise ValueError"
                )
                if isinstance(plain.item_type, GraphQLNonNull):
                    each = f"{item}(x)"
                else:
                    each = f"None if x is None else {item}(x)"
                self.emit(inner_depth, f"{value} = [{each} for x in {value}]")
            entries.append(f"{response_name!r}: {value}")
        result = self.name("d")
        self.emit(depth, f"{result} = {{{', '.join(entries)}}}")
        return result

    def type_check(self, object_type: GraphQLObjectType, value: str, depth: int) -> None:
        if object_type.is_type_of is not None:
            check = self.name("is_a", object_type.is_type_of)
            self.emit(depth, f"if {check}({value}, None) is not True: raise ValueError")


# Scalars whose output coercion returns a value of exactly this type unchanged.
_PASSTHROUGH: dict[int, type] = {
    id(GraphQLString): str,
    id(GraphQLID): str,
    id(GraphQLBoolean): bool,
}

# A compiled entry per selected field: (response name, field details, plan or None, the exact
# type a leaf value may have to skip coercion).
Compiled = list[tuple[str, Any, PlainField | None, type | None]]


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        self._shortcut = manager is None or not manager._middleware_resolvers
        self._caches = caches_for(self.schema)
        # by selection (a selection belongs to one parent type; every item of a list shares
        # one selection object); each entry keeps its key object alive so ids stay unique
        self._compiled: dict[int, tuple[Any, Compiled]] = {}
        self._subselections: dict[int, tuple[Any, Any, bool]] = {}
        self._completers: dict[int, tuple[Any, Callable[[Any], Any] | None]] = {}

    def _completer(
        self, object_type: GraphQLObjectType, grouped_field_set: Any
    ) -> Callable[[Any], Any] | None:
        """The generated function completing this selection, if it is wholly plain."""
        cached = self._completers.get(id(grouped_field_set))
        if cached is None or cached[0] is not grouped_field_set:
            shape = self._shape(object_type, grouped_field_set)
            function = (
                None if shape is None else self._caches.generated_completer(object_type, shape)
            )
            cached = self._completers[id(grouped_field_set)] = (grouped_field_set, function)
        return cached[1]

    def _shape(self, object_type: GraphQLObjectType, grouped_field_set: Any) -> Shape | None:
        plan = self._caches.field_plan(object_type)
        if not plan:
            return None
        shape: list[tuple[str, str, Any]] = []
        for response_name, details in grouped_field_set.items():
            node = details[0].node
            field_name = node.name.value
            if field_name == "__typename":
                shape.append((response_name, field_name, None))
                continue
            plain = plan.get(field_name)
            if plain is None or any(d.node.arguments for d in details):
                return None
            sub = None
            if plain.kind != LEAF:
                assert plain.object_type is not None
                if plain.kind == OBJECT_LIST and any(d.node.directives for d in details):
                    return None  # @stream
                grouped, no_defer = self._subselection(plain.object_type, details)
                sub = self._shape(plain.object_type, grouped) if no_defer else None
                if sub is None:
                    return None
            shape.append((response_name, field_name, sub))
        return tuple(shape)

    def _compile(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> Compiled:
        key = id(grouped_field_set)
        cached = self._compiled.get(key)
        if cached is not None and cached[0] is grouped_field_set:
            return cached[1]
        plan = self._caches.field_plan(parent_type)
        compiled: Compiled = []
        for response_name, details in grouped_field_set.items():
            node = details[0].node
            plain = None if node.arguments else plan.get(node.name.value)
            exact = None
            if plain is not None and plain.kind == LEAF:
                inner = plain.field_type
                inner = inner.of_type if isinstance(inner, GraphQLNonNull) else inner
                exact = _PASSTHROUGH.get(id(inner))
            compiled.append((response_name, details, plain, exact))
        self._compiled[key] = (grouped_field_set, compiled)
        return compiled

    def _subselection(self, object_type: GraphQLObjectType, details: Any) -> tuple[Any, bool]:
        """The selection of an object field and whether it can run without incremental
        delivery (no @defer in it): graphql-core's collect_and_execute_subfields then comes
        down to execute_fields, which the shortcut calls directly."""
        cached = self._subselections.get(id(details))
        if cached is None or cached[0] is not details:
            grouped, new_defer_usages, _ = self.collect_subfields(object_type, details)
            cached = self._subselections[id(details)] = (details, grouped, not new_defer_usages)
        return cached[1], cached[2]

    def execute_fields(  # type: ignore[override]
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not self._shortcut:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        if position_context is None:
            completer = self._completer(parent_type, grouped_field_set)
            if completer is not None:
                try:
                    return completer(source_value)
                except Exception:  # noqa: S110 - field by field below, which reports it
                    pass
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, details, plain, exact in self._compile(
                parent_type, grouped_field_set
            ):
                result: Any = Undefined
                if plain is not None:
                    if plain.kind == LEAF:  # inline: most fields are leaves
                        try:
                            value = plain.read(source_value, plain.python_name)
                        except Exception:  # the general path raises it, located
                            value = Undefined
                        if value is None:
                            if not plain.non_null:
                                results[response_name] = None
                                continue
                        elif value is not Undefined:
                            if type(value) is not exact:
                                try:
                                    value = plain.coerce(value)  # type: ignore[misc]
                                except Exception:  # the general path raises it, located
                                    value = None
                            if value is not None:
                                results[response_name] = value
                                continue
                    else:
                        field_path = Path(path, response_name, parent_type.name)
                        result = self._plain_object(
                            plain, source_value, details, field_path, position_context
                        )
                if result is Undefined:  # not completed above (nothing has run yet)
                    result = self.execute_field(
                        parent_type,
                        source_value,
                        details,
                        Path(path, response_name, parent_type.name),
                        position_context,
                    )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise

        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited = await gather_with_cancel(*(results[f] for f in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def _plain_object(
        self,
        plain: PlainField,
        source: Any,
        details: Any,
        field_path: Path,
        position_context: Any,
    ) -> Any:
        """The object (or list) field's completed value, or Undefined for the general path."""
        try:
            value = plain.read(source, plain.python_name)
        except Exception:  # the general path raises it, located at the field
            return Undefined
        if value is None:
            return Undefined if plain.non_null else None
        object_type = plain.object_type
        assert object_type is not None
        if plain.kind == OBJECT:
            if not _is_a(object_type, value):
                return Undefined
            return self._guarded(
                lambda: self._execute_object(
                    object_type, details, field_path, value, position_context
                ),
                plain.field_type,
                details,
                field_path,
            )
        # OBJECT_LIST: the shortcut only when every item is a present object of the item type
        if (
            not isinstance(value, list | tuple)
            or any(node.directives for node in (d.node for d in details))  # @stream
            or not all(item is not None and _is_a(object_type, item) for item in value)
        ):
            return Undefined
        return self._guarded(
            lambda: self._complete_objects(
                plain, object_type, details, field_path, value, position_context
            ),
            plain.field_type,
            details,
            field_path,
        )

    def _complete_objects(
        self,
        plain: PlainField,
        object_type: GraphQLObjectType,
        details: Any,
        list_path: Path,
        items: list[Any] | tuple[Any, ...],
        position_context: Any,
    ) -> Any:
        item_type = plain.item_type
        assert item_type is not None
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        try:
            for index, item in enumerate(items):
                item_path = list_path.add_key(index, None)
                done = self._guarded(
                    partial(
                        self._execute_object,
                        object_type,
                        details,
                        item_path,
                        item,
                        position_context,
                    ),
                    item_type,
                    details,
                    item_path,
                )
                if self.is_awaitable(done):
                    awaitable_indices.append(index)
                completed.append(done)
        except Exception:
            if awaitable_indices:
                self.settle_in_background([completed[i] for i in awaitable_indices])
            raise
        if not awaitable_indices:
            return completed

        async def get_completed() -> list[Any]:
            awaited = await gather_with_cancel(*(completed[i] for i in awaitable_indices))
            for index, value in zip(awaitable_indices, awaited, strict=True):
                completed[index] = value
            return completed

        return get_completed()

    def _execute_object(
        self,
        object_type: GraphQLObjectType,
        details: Any,
        path: Path,
        value: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's collect_and_execute_subfields; without @defer in the selection that
        comes down to execute_fields on the memoized selection, called here directly."""
        grouped, no_defer = self._subselection(object_type, details)
        if no_defer and position_context is None:
            return self.execute_fields(object_type, value, path, grouped, None)
        return self.collect_and_execute_subfields(
            object_type, details, path, value, position_context
        )

    def _guarded(
        self,
        complete: Callable[[], Any],
        field_type: GraphQLOutputType,
        details: Any,
        path: Path,
    ) -> Any:
        """Run ``complete`` with graphql-core's field error handling: an error is located at
        ``path`` and the value is null, or the error propagates for a non-null type."""
        try:
            done = complete()
        except Exception as error:
            self.handle_field_error(error, field_type, details, path)
            return None
        if self.is_awaitable(done):
            return self._await_guarded(done, field_type, details, path)
        return done

    async def _await_guarded(
        self, done: Awaitable[Any], field_type: GraphQLOutputType, details: Any, path: Path
    ) -> Any:
        try:
            return await done
        except Exception as error:
            self.handle_field_error(error, field_type, details, path)
            return None
