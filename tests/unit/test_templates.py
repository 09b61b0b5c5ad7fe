"""Template rendering (app/domain/templates.py): the sandbox, the limits, the variables schema."""

from __future__ import annotations

import time

import pytest

from app.domain.errors import ValidationError
from app.domain.templates import (
    RenderLimits,
    check_schema,
    check_variables,
    compile_parts,
    render,
    variables_validator,
)

LIMITS = RenderLimits(max_output_chars=100_000, max_seconds=0.5)


def rendered(subject: str, text: str | None = None, html: str | None = None, **variables):  # type: ignore[no-untyped-def]
    return render(compile_parts(subject, text, html), variables, LIMITS)


def refused(source: str, **variables: object) -> ValidationError:
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        rendered("s", text=source, **variables)
    # never a hang: every refusal comes within about the time limit
    assert time.monotonic() - started < LIMITS.max_seconds + 2
    return caught.value


def test_variables_fill_subject_text_and_html_with_html_escaped_only_in_html():
    r = rendered(
        "Order {{ order.id }} for {{ name }}",
        text="Hi {{ name }}: {% for i in order.items %}{{ i.sku }}{% if not loop.last %}, "
        "{% endif %}{% endfor %}",
        html="<p>Hi {{ name }}</p>",
        name="<Ann & Bob>",
        order={"id": 42, "items": [{"sku": "A"}, {"sku": "B"}]},
    )
    assert r.subject == "Order 42 for <Ann & Bob>"
    assert r.text == "Hi <Ann & Bob>: A, B"
    assert r.html == "<p>Hi &lt;Ann &amp; Bob&gt;</p>"


def test_a_key_named_like_a_dict_method_reads_the_key():
    r = rendered("{{ order.items|length }} {{ order.keys }}", order={"items": [1, 2], "keys": "k"})
    assert r.subject == "2 k"


def test_text_part_falls_back_to_readable_text_from_the_html():
    r = rendered("s", html="<h1>Receipt</h1><p>Total: <b>{{ total }}</b></p>", total="9.50")
    assert r.text is None
    assert "Receipt" in (r.text_part() or "") and "Total: 9.50" in (r.text_part() or "")


def test_the_subject_is_one_line_even_when_a_variable_has_line_breaks():
    assert rendered("Hi {{ n }}", n="a\r\nBcc: x@y").subject == "Hi a Bcc: x@y"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x.__class__ }}",
        "{{ x['__class__'] }}",
        "{{ x.upper() }}",
        "{{ lipsum() }}",
        "{{ namespace() }}",
        "{{ self.__init__ }}",
        "{{ (items|list).pop() }}",
        "{{ config }}",
    ],
)
def test_python_internals_and_methods_are_unreachable(source):
    error = refused(source, x="s", items=[1])
    assert error.fields[0].field == "text"


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{{ range(1000000000)|list }}",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% for a in xs %}{% for b in xs %}{% for c in xs %}{% endfor %}{% endfor %}{% endfor %}",
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ 2 ** 100000000 }}",
        "{{ '%999999999d' % 1 }}",
        "{% set a = 'x' * 90000 %}{{ a ~ a }}",
        "{% set a = 'x' * 90000 %}{{ a + a }}",
        "{{ 'ab'|replace('', 'x' * 50000) }}",
    ],
)
def test_huge_loops_and_outputs_end_with_a_clear_error(source):
    error = refused(source, xs=list(range(2000)))
    assert error.fields[0].field == "text"
    assert "limit" in error.message or "range" in error.message


def test_undefined_variables_are_errors_not_blanks():
    error = refused("Hello {{ missing }}")
    assert "missing" in error.message


def test_syntax_errors_name_the_part_and_line():
    with pytest.raises(ValidationError) as caught:
        compile_parts("ok", None, "<p>\n{% for %}</p>")
    assert caught.value.fields[0].field == "html"
    assert "line 2" in caught.value.fields[0].message


def test_filters_that_could_amplify_output_do_not_exist():
    with pytest.raises(ValidationError):
        compile_parts("{{ 'x'|center(1000000000) }}", None, None)
    with pytest.raises(ValidationError):
        compile_parts("{{ 'x'|indent(1000000000) }}", None, None)


SCHEMA = {
    "type": "object",
    "required": ["orderId", "items"],
    "properties": {
        "orderId": {"type": "string", "pattern": "^[0-9]+$"},
        "email": {"type": "string", "format": "email"},
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["sku"], "properties": {"sku": {}}},
        },
    },
    "additionalProperties": False,
}


def test_variables_failing_the_schema_name_each_variable():
    validator = variables_validator(check_schema(SCHEMA))
    with pytest.raises(ValidationError) as caught:
        check_variables(validator, {"orderId": "x1", "items": [{}], "extra": 1})
    fields = sorted(p.field for p in caught.value.fields)
    assert fields == ["variables.extra", "variables.items[0].sku", "variables.orderId"]
    with pytest.raises(ValidationError) as caught:
        check_variables(validator, {})
    assert sorted(p.field for p in caught.value.fields) == ["variables.items", "variables.orderId"]
    check_variables(validator, {"orderId": "12", "items": [{"sku": "A"}]})


def test_the_fast_check_agrees_with_the_full_one_and_formats_use_the_full_one():
    no_format = {**SCHEMA, "properties": {**SCHEMA["properties"], "email": {"type": "string"}}}
    validator = variables_validator(check_schema(no_format))
    assert validator.fast is not None  # the common case: valid variables in microseconds
    for variables in ({"orderId": "12", "items": [{"sku": "A"}]}, {"orderId": "x", "items": []}):
        assert validator.fast.is_valid(variables) == validator.full.is_valid(variables)
    with_format = {"type": "object", "properties": {"at": {"type": "string", "format": "date"}}}
    dated = variables_validator(check_schema(with_format))
    assert dated.fast is None and variables_validator(check_schema(SCHEMA)).fast is None
    with pytest.raises(ValidationError) as caught:
        check_variables(dated, {"at": "not a date"})
    assert [p.field for p in caught.value.fields] == ["variables.at"]
    check_variables(dated, {"at": "2026-12-04"})


def test_a_schema_that_is_not_json_schema_is_refused():
    with pytest.raises(ValidationError) as caught:
        check_schema({"type": "no-such-type"})
    assert caught.value.fields[0].field == "variables"


async def test_a_batch_of_renders_answers_each_in_order_and_one_failure_stops_no_other():
    from bson import ObjectId

    from app.domain.templates import Rendered
    from app.services.templates.render import RENDER_CHUNK, TemplateRenderer, encode_variables

    renderer = TemplateRenderer(store=None, limits=LIMITS)  # type: ignore[arg-type]
    try:
        version = {
            "_id": ObjectId(),
            "subject": "Order {{ orderId }}",
            "text": "{% for i in items %}{{ i.sku }} {% endfor %}",
            "html": None,
            "variables": SCHEMA,
        }
        escape = {**version, "_id": ObjectId(), "text": "{{ ''.__class__.__mro__ }}"}
        good = [{"orderId": str(n), "items": [{"sku": f"S{n}"}]} for n in range(RENDER_CHUNK + 5)]
        jobs = [(version, v) for v in good]
        jobs[3] = (version, {"orderId": "x", "items": []})  # fails the schema
        jobs[RENDER_CHUNK] = (escape, good[RENDER_CHUNK])  # a sandbox escape, in the 2nd chunk
        jobs[7] = (version, {"orderId": "7", "items": [{"sku": object()}]})  # not JSON
        jobs[9] = (version, encode_variables(good[9]))  # already encoded
        answers = await renderer.render_versions(jobs)
        assert len(answers) == len(jobs)
        failures = {n for n, a in enumerate(answers) if isinstance(a, ValidationError)}
        assert failures == {3, 7, RENDER_CHUNK}
        assert answers[3].fields[0].field == "variables.orderId"  # type: ignore[union-attr]
        assert answers[7].fields[0].field == "variables"  # type: ignore[union-attr]
        assert "not allowed" in answers[RENDER_CHUNK].message  # type: ignore[union-attr]
        for n, answer in enumerate(answers):
            if n not in failures:
                assert isinstance(answer, Rendered)
                assert (answer.subject, answer.text) == (f"Order {n}", f"S{n} ")
        with pytest.raises(ValidationError):
            await renderer.render_version(version, {"orderId": "x", "items": []})
    finally:
        renderer.close()
