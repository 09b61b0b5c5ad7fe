"""Email templates (seed §15): sandboxed Jinja2 rendering and JSON Schema checked variables.

A template's author is a user; its variables come from an application. Neither may reach
Python objects, run forever or fill memory, so rendering is Jinja2's
``ImmutableSandboxedEnvironment`` tightened further:

- attribute access reaches dict keys of the variables and ``loop.*`` only: ``''.__class__``,
  ``cycler.__init__`` and every method are refused (``SecurityError``); no global but a bounded
  ``range``; a fixed allow-list of filters, none of which takes an amplifying width.
- ``*``, ``**``, ``%``, ``+`` and ``~`` check the size of what they would build *before*
  building it, so ``'x' * 10**9`` fails instead of allocating a gigabyte.
- every loop over ``range`` or over a list of the variables checks the deadline on each step,
  and the output generator checks size and deadline on each chunk: a huge or nested loop ends
  with ``TemplateLimitExceeded`` within about the time limit.

Errors are ``ValidationError``s naming the part (``subject``, ``text``, ``html``) or, for
variables, each variable (``variables.orderId``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jsonschema_rs
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jsonschema import Draft202012Validator
from jsonschema import exceptions as schema_errors

from app.domain.errors import FieldProblem, ValidationError
from app.domain.html_safety import html_to_text

PARTS = ("subject", "text", "html")
MAX_SOURCE_CHARS = 256 * 1024  # per part
MAX_RANGE = 10_000
MAX_KEY = 100
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_SAFE_LOOP_ATTRS = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"}
    | {"previtem", "nextitem", "changed", "cycle"}
)
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


@dataclass(frozen=True)
class RenderLimits:
    max_output_chars: int = 1_000_000  # per part
    max_seconds: float = 0.5  # per message (all parts)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str | None
    html: str | None

    def text_part(self) -> str | None:
        """The text part a message gets: the rendered text, else a readable form of the HTML."""
        if self.text is not None:
            return self.text
        return html_to_text(self.html) if self.html else None


class TemplateLimitExceeded(Exception):
    """Rendering went over the output size or time limit (raised inside the sandbox)."""


class _Budget:
    """The deadline and output size of the one render running on this thread."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(f"rendering took longer than {self.limits.max_seconds:g} s")

    def size(self, n: int) -> None:
        if n > self.limits.max_output_chars:
            raise TemplateLimitExceeded(
                f"rendered output larger than {self.limits.max_output_chars} characters"
            )


# The budget of the render running on this thread: compiled templates are shared between
# threads (a cache per version), so the budget cannot live on the environment.
_current = threading.local()


class _CheckedList(list):  # type: ignore[type-arg]
    """A list of the variables whose iteration checks the render deadline on every step."""

    budget: _Budget

    def __iter__(self) -> Iterator[Any]:
        budget = self.budget
        for item in list.__iter__(self):
            budget.tick()
            yield item


def _checked(value: Any, budget: _Budget) -> Any:
    """Variables as the sandbox sees them: JSON values, every list deadline-checked."""
    if isinstance(value, dict):
        return {k: _checked(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        out = _CheckedList(_checked(v, budget) for v in value)
        out.budget = budget
        return out
    return value


def _kind(obj: Any) -> str:
    if isinstance(obj, jinja2.Undefined):
        return "an undefined value"
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(obj), "a value"
    )


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def _limits(self) -> _Budget:
        budget: _Budget | None = getattr(_current, "budget", None)
        if budget is None:  # compile-time constant folding: a small budget
            return _Budget(RenderLimits(max_output_chars=10_000, max_seconds=0.1))
        return budget

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``order.id`` reads the key, never a method: ``order.items`` is the key "items".
        # (Variables are dicts: ``type(obj) is dict`` spares the ABC check of most lookups.)
        if type(obj) is dict or isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, LoopContext) and attribute in _SAFE_LOOP_ATTRS:
            return getattr(obj, attribute)
        raise SecurityError(f"no attribute access in templates ({attribute!r} of {_kind(obj)})")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=str(argument))
        if isinstance(obj, list | tuple | str) and isinstance(argument, int | slice):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=str(argument))
        if isinstance(argument, str):
            raise SecurityError(f"no attribute access in templates ({argument!r} of {_kind(obj)})")
        return self.undefined(obj=obj, name=str(argument))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = self._limits()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    budget.size(len(seq) * max(n, 0))
        elif operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise TemplateLimitExceeded("exponent larger than 64")
        elif operator == "%" and isinstance(left, str):
            for width, precision in _FORMAT_WIDTH.findall(left):
                for n in (width, precision):
                    if n == "*" or (n and int(n) > 1000):
                        raise TemplateLimitExceeded("format width larger than 1000")
        elif operator == "+" and isinstance(left, str | list | tuple) and hasattr(right, "__len__"):
            budget.size(len(left) + len(right))
        return super().call_binop(context, operator, left, right)


def _bounded_range(env: _Sandbox) -> Callable[..., Iterator[int]]:
    def bounded_range(*args: int) -> Iterator[int]:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimitExceeded(f"range() of more than {MAX_RANGE} items")
        budget = env._limits()
        for n in numbers:
            budget.tick()
            yield n

    return bounded_range


_FILTERS = (
    "abs batch capitalize count d default dictsort e escape first float forceescape int items"
    " join last length list lower map max min reject rejectattr replace reverse round safe"
    " select selectattr slice sort string striptags sum title tojson trim truncate unique"
    " upper urlencode wordcount"
).split()


def _bounded_replace(env: _Sandbox, original: Callable[..., Any]) -> Callable[..., Any]:
    def replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> Any:
        text = str(s)
        hits = text.count(old) if old else len(text) + 1
        if count is not None:
            hits = min(hits, max(count, 0))
        env._limits().size(len(text) + hits * max(len(str(new)) - len(old), 0))
        return original(eval_ctx, s, old, new, count)

    replace.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return replace


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        auto_reload=False,
        cache_size=0,
        keep_trailing_newline=True,
    )
    env.globals = {"range": _bounded_range(env)}
    filters = {name: env.filters[name] for name in _FILTERS}
    filters["replace"] = _bounded_replace(env, env.filters["replace"])
    env.filters = filters
    env.tests = {
        name: env.tests[name]
        for name in (
            "defined undefined none boolean number string mapping sequence iterable"
            " even odd divisibleby eq ne lt le gt ge in true false integer float lower upper"
        ).split()
        if name in env.tests
    }
    return env


def _bounded_join(env: _Sandbox, join: Callable[[Any], str]) -> Callable[[Any], str]:
    """``~`` concatenation (Jinja's str_join / markup_join), size-checked before joining."""

    def bounded(seq: Any) -> str:
        parts = list(seq)
        env._limits().size(sum(len(str(p)) for p in parts))
        return join(parts)

    return bounded


@dataclass
class CompiledTemplate:
    """One version's parts, compiled once (each part in its own sandbox environment)."""

    subject: jinja2.Template
    text: jinja2.Template | None
    html: jinja2.Template | None
    envs: tuple[_Sandbox, ...]


def compile_parts(subject: str, text: str | None, html: str | None) -> CompiledTemplate:
    """Compile a version's parts; syntax errors name the part and the line."""
    problems: list[FieldProblem] = []
    compiled: dict[str, jinja2.Template | None] = {}
    envs: list[_Sandbox] = []
    for part, source in (("subject", subject), ("text", text), ("html", html)):
        if source is None:
            compiled[part] = None
            continue
        if len(source) > MAX_SOURCE_CHARS:
            problems.append(FieldProblem(part, f"longer than {MAX_SOURCE_CHARS} characters"))
            continue
        env = _environment(autoescape=part == "html")
        try:
            template = env.from_string(source)
        except TemplateSyntaxError as e:
            problems.append(FieldProblem(part, f"line {e.lineno}: {e.message}"))
            continue
        except (TemplateLimitExceeded, SecurityError, TemplateError) as e:
            problems.append(FieldProblem(part, str(e)))
            continue
        namespace = template.root_render_func.__globals__
        for name in ("str_join", "markup_join"):
            namespace[name] = _bounded_join(env, namespace[name])
        compiled[part] = template
        envs.append(env)
    if problems:
        raise ValidationError(
            message="the template does not compile: "
            + "; ".join(f"{p.field}: {p.message}" for p in problems),
            fields=problems,
        )
    subject_template = compiled["subject"]
    assert subject_template is not None
    return CompiledTemplate(subject_template, compiled["text"], compiled["html"], tuple(envs))


def _render_part(template: jinja2.Template, variables: dict[str, Any], budget: _Budget) -> str:
    _current.budget = budget
    try:
        out: list[str] = []
        size, limit = 0, budget.limits.max_output_chars
        for n, chunk in enumerate(template.generate(variables)):
            size += len(chunk)
            if size > limit:
                budget.size(size)
            if not n % 16:  # a clock read per chunk cost more than the chunk; loops tick too
                budget.tick()
            out.append(chunk)
        return "".join(out)
    finally:
        _current.budget = None


def render(compiled: CompiledTemplate, variables: dict[str, Any], limits: RenderLimits) -> Rendered:
    """Render every part with the variables; any failure is a ValidationError on that part."""
    budget = _Budget(limits)
    values = _checked(variables, budget)
    result: dict[str, str | None] = {}
    for part in PARTS:
        template: jinja2.Template | None = getattr(compiled, part)
        if template is None:
            result[part] = None
            continue
        try:
            result[part] = _render_part(template, values, budget)
        except TemplateLimitExceeded as e:
            raise ValidationError.on(part, f"template limit: {e}") from None
        except SecurityError as e:
            raise ValidationError.on(part, f"not allowed in a template: {e}") from None
        except UndefinedError as e:
            raise ValidationError.on(part, f"undefined in the template: {e}") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
            raise ValidationError.on(part, f"the template failed: {e}") from None
        except RecursionError:
            raise ValidationError.on(part, "the template recursed too deeply") from None
    subject = " ".join((result["subject"] or "").split())  # a header: one line
    if not subject:
        raise ValidationError.on("subject", "the subject renders empty")
    return Rendered(subject=subject, text=result["text"], html=result["html"])


# --- variables ------------------------------------------------------------------------------


def check_schema(schema: Any) -> dict[str, Any]:
    """A version's variables schema must be a valid JSON Schema (draft 2020-12) object."""
    if schema is None:
        return {"type": "object"}
    if not isinstance(schema, dict):
        raise ValidationError.on("variables", "variables must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except schema_errors.SchemaError as e:
        raise ValidationError.on("variables", f"not a valid JSON Schema: {e.message}") from None
    return schema


@dataclass(frozen=True)
class VariablesValidator:
    """A version's JSON Schema, compiled twice: ``jsonschema`` says what is wrong, field by
    field; ``jsonschema_rs`` (Rust, ~100× faster: 2 µs instead of 0.3 ms for the benchmark's
    receipt) only says whether the variables pass, which is the common case of a send. A
    schema using ``format`` gets no fast path: the two libraries' format checks differ."""

    full: Draft202012Validator
    fast: Any = None  # a jsonschema_rs validator, or None


def variables_validator(schema: dict[str, Any]) -> VariablesValidator:
    full = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    fast = None
    if '"format"' not in json.dumps(schema):
        try:
            fast = jsonschema_rs.Draft202012Validator(schema)
        except Exception:  # a schema the fast library cannot compile: the full check only
            fast = None
    return VariablesValidator(full, fast)


def _field(path: list[Any]) -> str:
    out = "variables"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def check_variables(validator: VariablesValidator, variables: Any) -> None:
    """Refuse variables the schema does not accept: one field problem per variable."""
    if not isinstance(variables, dict):
        raise ValidationError.on("variables", "variables must be a JSON object")
    if validator.fast is not None and validator.fast.is_valid(variables):
        return
    problems: list[FieldProblem] = []
    for error in sorted(validator.full.iter_errors(variables), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    problems.append(FieldProblem(_field([*path, name]), "required"))
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set((error.schema or {}).get("properties", {}))  # type: ignore[union-attr]
            for name in error.instance:
                if name not in known:
                    problems.append(FieldProblem(_field([*path, name]), "not allowed"))
        else:
            problems.append(FieldProblem(_field(path), error.message))
    problems = list(dict.fromkeys(problems))  # "required" reports each missing name per error
    if problems:
        raise ValidationError(
            message="variables do not match the template's schema: "
            + "; ".join(f"{p.field}: {p.message}" for p in problems[:10]),
            fields=problems,
        )


def check_key(key: str) -> str:
    key = (key or "").strip()
    if not KEY_PATTERN.match(key):
        raise ValidationError.on(
            "key", "1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return key
