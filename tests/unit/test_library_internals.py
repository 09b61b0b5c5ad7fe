"""Tripwires for the places we override or re-implement a library's internals (docs/overrides.md).

Each override was written against one exact version of its library (pinned in pyproject.toml)
and mirrors some of that library's code. These tests fail as soon as an upgrade changes what we
rely on: the installed version, the private attributes and signatures we use, and the source of
each library function our code re-implements (a fingerprint of it). When one fails: read the
library's new code, bring our override in line (or drop it), run the behaviour tests named in
docs/overrides.md, then update the pin and the fingerprint here.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import strawberry

ROOT = Path(__file__).resolve().parents[2]

# distribution → the override(s) written against its pinned version
OVERRIDDEN = {
    "graphql-core": "schema/execution.py",
    "strawberry-graphql": "schema/execution.py",
    "arq": "app/adapters/job_worker.py, app/adapters/queue.py (JobQueue.enqueue_many)",
    "aiosmtpd": "app/mx/server.py (MxSMTP.smtp_DATA, MxSMTP._getaddr), app/mx/data.py",
    "dkimpy": "app/adapters/dkim_signer.py",
    "pymongo": "app/adapters/blob_batches.py (GridFS documents written and read by hand), "
    "app/adapters/mongo.py (CollectionsDatabase)",
    "pyspf": "app/adapters/mail_auth.py (spf.DNSLookup answered through c-ares)",
}


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in project["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", spec.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.mark.parametrize("distribution", sorted(OVERRIDDEN))
def test_each_overridden_library_is_pinned_exactly_and_installed_at_that_version(
    distribution: str,
) -> None:
    pins = _pins()
    assert distribution in pins, f"pin {distribution} exactly: {OVERRIDDEN[distribution]}"
    assert metadata.version(distribution) == pins[distribution]


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def _graphql_core() -> dict[str, Any]:
    # what our FastExecutionContext inherits, wherever graphql-core defines it
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext as Inherited

    return {
        f"graphql-core {name}": getattr(Inherited, name)
        for name in (
            "execute_fields",
            "execute_field",
            "complete_value",
            "complete_leaf_value",
            "complete_list_value",
            "complete_list_item_value",
            "complete_object_value",
            "collect_subfields",
            "collect_and_execute_subfields",
            "handle_field_error",
            "settle_in_background",
        )
    }


def _strawberry() -> dict[str, Any]:
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
    from strawberry.schema.schema_converter import GraphQLCoreConverter

    return {
        "strawberry StrawberryGraphQLCoreExecutionContext": StrawberryGraphQLCoreExecutionContext,
        "strawberry GraphQLCoreConverter.from_resolver": GraphQLCoreConverter.from_resolver,
    }


def _arq() -> dict[str, Any]:
    from arq.connections import ArqRedis
    from arq.jobs import deserialize_job_raw, serialize_job
    from arq.worker import Worker

    return {
        "arq ArqRedis.enqueue_job": ArqRedis.enqueue_job,
        "arq serialize_job": serialize_job,
        "arq Worker.start_jobs": Worker.start_jobs,
        "arq Worker._poll_iteration": Worker._poll_iteration,
        "arq Worker.close": Worker.close,
        "arq Worker.finish_job": Worker.finish_job,
        "arq Worker.run_job": Worker.run_job,
        "arq deserialize_job_raw": deserialize_job_raw,
    }


def _aiosmtpd() -> dict[str, Any]:
    from aiosmtpd.smtp import SMTP

    return {
        "aiosmtpd SMTP.smtp_DATA": SMTP.smtp_DATA,
        "aiosmtpd SMTP._set_post_data_state": SMTP._set_post_data_state,
        "aiosmtpd SMTP._call_handler_hook": SMTP._call_handler_hook,
        "aiosmtpd SMTP._getaddr": SMTP._getaddr,
    }


def _dkimpy() -> dict[str, Any]:
    import dkim

    return {
        "dkimpy DKIM.sign": dkim.DKIM.sign,
        "dkimpy DKIM.gen_header": dkim.DKIM.gen_header,
        "dkimpy hash_headers": dkim.hash_headers,
        "dkimpy select_headers": dkim.select_headers,
        "dkimpy fold": dkim.fold,
        "dkimpy canonicalization": dkim.canonicalization,
    }


def _pyspf() -> dict[str, Any]:
    import spf

    return {
        # the caller of the hook: DNSLookup(name, qtype, strict, timeout), ((name, qtype), v) pairs
        "pyspf query.dns": spf.query.dns,
        # the hook whose answers ours mirrors, record type by record type
        "pyspf DNSLookup_dnspython": spf.DNSLookup_dnspython,
    }


def _pymongo() -> dict[str, Any]:
    from pymongo.asynchronous.database import AsyncDatabase

    return {
        # CollectionsDatabase keeps what __getattr__ returns: it must stay a plain collection
        # of that name (__getitem__), made the same way on every call
        "pymongo AsyncDatabase.__getattr__": AsyncDatabase.__getattr__,
        "pymongo AsyncDatabase.__getitem__": AsyncDatabase.__getitem__,
    }


# The source each override mirrors, as reviewed (see docs/overrides.md for what to re-check).
FINGERPRINTS: dict[str, str] = {
    "aiosmtpd SMTP._call_handler_hook": "6ff23a6634ea0307",
    "aiosmtpd SMTP._getaddr": "0aeb21c56ac1260e",
    "aiosmtpd SMTP._set_post_data_state": "1dc8a8abca2a8164",
    "aiosmtpd SMTP.smtp_DATA": "3a33f30d3fd6d02f",
    "arq ArqRedis.enqueue_job": "7da8706a747c1171",
    "arq serialize_job": "1fc854cc50e16e5c",
    "arq Worker._poll_iteration": "f8d39d823a0a59f2",
    "arq Worker.close": "5bcc9cb356680829",
    "arq Worker.finish_job": "903f09c92830d3fd",
    "arq Worker.run_job": "589a19059ff84ee7",
    "arq Worker.start_jobs": "b45797cfa40bed7f",
    "arq deserialize_job_raw": "f330dfaff8e2160f",
    "dkimpy DKIM.gen_header": "e86f61152fe59398",
    "dkimpy DKIM.sign": "427b6d31fef46a04",
    "dkimpy canonicalization": "86c85952ac069fcf",
    "dkimpy fold": "4a8b005293a2ebe2",
    "dkimpy hash_headers": "216b8155ca91b6f8",
    "dkimpy select_headers": "e9342396df1b1134",
    "graphql-core collect_and_execute_subfields": "98432d93fb1b2526",
    "graphql-core collect_subfields": "53924d281ad7f699",
    "graphql-core complete_leaf_value": "a8c54d5838ad9753",
    "graphql-core complete_list_item_value": "8883b4d65a1ae099",
    "graphql-core complete_list_value": "3ee91ce2f0fa9b62",
    "graphql-core complete_object_value": "55e77f58eca1ddc4",
    "graphql-core complete_value": "06c34f7681a13120",
    "graphql-core execute_field": "5281dc836ecc24a0",
    "graphql-core execute_fields": "797f54fbd779b4e3",
    "graphql-core handle_field_error": "d33a6ee408cd1695",
    "graphql-core settle_in_background": "da2b2c7303b6fa2d",
    "pymongo AsyncDatabase.__getattr__": "65a872a9cb11a219",
    "pymongo AsyncDatabase.__getitem__": "83b49c1d2cf28461",
    "pyspf DNSLookup_dnspython": "2ad82e1400fbbd2b",
    "pyspf query.dns": "63ad0ef0805e0745",
    "strawberry GraphQLCoreConverter.from_resolver": "bcac1354fecdee79",
    "strawberry StrawberryGraphQLCoreExecutionContext": "61e417afeaa66527",
}


def _mirrored() -> dict[str, Any]:
    return {
        **_graphql_core(),
        **_strawberry(),
        **_arq(),
        **_aiosmtpd(),
        **_dkimpy(),
        **_pyspf(),
        **_pymongo(),
    }


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_library_code_an_override_mirrors_is_unchanged(name: str) -> None:
    assert _fingerprint(_mirrored()[name]) == FINGERPRINTS[name], (
        f"{name} changed: re-check the override that mirrors it (docs/overrides.md), "
        "then update its fingerprint here"
    )


# --- the private names each override uses -------------------------------------------------


@strawberry.type
class Item:
    name: str


@strawberry.type
class Query:
    @strawberry.field
    def item(self) -> Item:
        return Item(name="x")


def test_the_graphql_internals_the_fast_execution_uses_are_there() -> None:
    from graphql import GraphQLObjectType
    from strawberry.schema.schema_converter import GraphQLCoreConverter

    from schema.execution import FastExecutionContext, caches_for

    schema = strawberry.Schema(query=Query, execution_context_class=FastExecutionContext)
    item_type = schema._schema.type_map["Item"]
    assert isinstance(item_type, GraphQLObjectType)
    field = item_type.fields["name"]
    assert GraphQLCoreConverter.DEFINITION_BACKREF in item_type.extensions
    backref = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    assert backref.is_basic_field and backref.python_name == "name"
    assert callable(backref.default_resolver)
    assert getattr(field.resolve, "_is_default", False) is True
    assert schema.execute_sync("{ item { name } }").data == {"item": {"name": "x"}}
    # the shortcut found the plain field (it would silently fall back without these names)
    assert set(caches_for(schema._schema).plans[item_type]) == {"name"}
    parameters = list(inspect.signature(FastExecutionContext.execute_fields).parameters)
    inherited = inspect.signature(
        inspect.getmro(FastExecutionContext)[1].execute_fields  # type: ignore[attr-defined]
    )
    assert parameters == list(inherited.parameters)


async def test_the_arq_internals_the_claim_worker_uses_are_there() -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    async def job(ctx: dict[str, Any]) -> None:
        return None

    worker = Worker(
        functions=[func(job, name="job", keep_result=0)],
        redis_settings=RedisSettings(),
        handle_signals=False,
    )
    for name in (
        "sem",
        "job_counter",
        "max_jobs",
        "tasks",
        "in_progress_timeout_s",
        "allow_pick_jobs",
        "_queue_read_offset",
        "queue_read_limit",
        "functions",
        "jobs_complete",
        "job_deserializer",
        "_handle_signals",
        "_pool",
        "health_check_key",
        "on_shutdown",
        "ctx",
        "queue_name",
    ):
        assert hasattr(worker, name), name
    assert worker.functions["job"].keep_result_s == 0
    assert callable(worker.functions["job"].coroutine)
    for method in ("_release_sem_dec_counter_on_complete", "handle_sig", "run_job"):
        assert callable(getattr(worker, method)), method
    assert list(inspect.signature(Worker.start_jobs).parameters) == ["self", "job_ids"]


def test_the_arq_internals_enqueue_many_uses_are_there() -> None:
    from arq import constants
    from arq.connections import ArqRedis

    pool = ArqRedis()
    assert isinstance(pool.expires_extra_ms, int) and pool.job_serializer is None
    assert (constants.job_key_prefix, constants.result_key_prefix) == ("arq:job:", "arq:result:")


async def test_the_aiosmtpd_internals_smtp_data_uses_are_there() -> None:
    from aiosmtpd.smtp import SMTP

    class Handler:
        pass

    smtp = SMTP(Handler(), decode_data=False)
    for name in (
        "_decode_data",
        "envelope",
        "data_size_limit",
        "line_length_limit",
        "session",
        "local_part_limit",  # MxSMTP._getaddr
    ):
        assert hasattr(smtp, name), name
    for method in (
        "check_helo_needed",
        "check_auth_needed",
        "_set_post_data_state",
        "_call_handler_hook",
        "_create_envelope",
        "_handle_client",
        "push",
    ):
        assert callable(getattr(smtp, method)), method
    # the stream reader/writer smtp_DATA reads from are set when a connection is made
    made = inspect.getsource(SMTP.connection_made)
    assert "self._reader" in made and "self._writer" in made


def test_the_dkimpy_internals_the_signer_uses_are_there() -> None:
    import dkim

    for name in (
        "fold",
        "RE_BTAG",
        "HashThrough",
        "hash_headers",
        "select_headers",
        "CanonicalizationPolicy",
        "ParameterError",
    ):
        assert hasattr(dkim, name), name
    signer = dkim.DKIM(b"From: a@example.test\r\n\r\nbody\r\n", linesep=b"\r\n")
    for name in ("should_not_sign", "body", "headers", "debug_content"):
        assert hasattr(signer, name), name


def test_the_fast_html_parser_runs_only_on_the_html_parser_it_was_written_against() -> None:
    """The standard library is not pinned like a package: ``html_fast`` checks its own
    fingerprints of what it mirrors at import, and turns itself off on a Python whose
    ``html.parser`` differs (docs/overrides.md)."""
    from app.domain import html_fast

    assert html_fast.ACTIVE == (html_fast.stock_fingerprints() == html_fast.REVIEWED)
    assert html_fast.fingerprint(html_fast.HTMLParser.goahead) == _fingerprint(
        html_fast.HTMLParser.goahead
    )
    changed = html_fast.stock_fingerprints()
    changed["HTMLParser.goahead"] = "0" * 16  # what a changed stdlib looks like
    assert changed != html_fast.REVIEWED


def test_the_html_parser_internals_the_fast_parser_uses_are_there() -> None:
    import html.parser

    from app.domain.html_fast import FastHTMLParser

    assert html.parser.HTMLParser.CDATA_CONTENT_ELEMENTS == ("script", "style")
    assert isinstance(html.parser.starttagopen, re.Pattern)  # type: ignore[attr-defined]
    parser = FastHTMLParser(convert_charrefs=True)
    for name in ("rawdata", "cdata_elem", "interesting", "lasttag", "convert_charrefs"):
        assert hasattr(parser, name), name
    parser.feed('<a href="x">')
    # get_starttag_text() reads the name-mangled attribute the fast path sets
    assert parser._HTMLParser__starttag_text == '<a href="x">'  # type: ignore[attr-defined]
    assert parser.get_starttag_text() == '<a href="x">'


def test_the_fast_mime_parser_runs_only_on_the_email_parser_it_was_written_against() -> None:
    """As ``html_fast``: ``mime_fast`` fingerprints the stdlib ``email`` parser code it relies
    on and turns itself off on a Python whose parser differs (docs/overrides.md)."""
    import email.feedparser

    from app.domain import mime_fast

    assert mime_fast.ACTIVE == (mime_fast.stock_fingerprints() == mime_fast.REVIEWED)
    assert mime_fast.fingerprint(email.feedparser.FeedParser._parsegen) == _fingerprint(  # type: ignore[attr-defined]
        email.feedparser.FeedParser._parsegen  # type: ignore[attr-defined]
    )
    changed = mime_fast.stock_fingerprints()
    changed["FeedParser._parsegen"] = "0" * 16  # what a changed stdlib looks like
    assert changed != mime_fast.REVIEWED
    # What the fast parser reads and sets inside the stock classes.
    lines = email.feedparser.BufferedSubFile()  # type: ignore[attr-defined]
    for name in ("_lines", "_eofstack", "_closed", "_partial"):
        assert hasattr(lines, name), name
    assert "NLCRE_eol" in email.feedparser.FeedParser._parsegen.__code__.co_names  # type: ignore[attr-defined]
