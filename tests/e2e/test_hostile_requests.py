"""Malformed and hostile requests at every edge: each is a typed 400 (``VALIDATION_ERROR`` for
bad values, ``BAD_REQUEST`` for a body that is not a GraphQL request), never a 500, and nothing
of it is logged as an error (docs/api.md, "Errors")."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from tests.e2e.test_send_and_read import INBOX, SEND


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, object]]]:
    """Every log event of the test, from structlog and the stdlib alike, as dictionaries."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield events
    events.extend(
        {"event": r.getMessage(), "log_level": r.levelname.lower(), "exc_info": r.exc_info}
        for r in caplog.records
    )


def no_errors_or_tracebacks(events: list[dict[str, object]]) -> bool:
    return not [
        e
        for e in events
        if e.get("log_level") in ("warning", "error", "critical", "exception") or e.get("exc_info")
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (INBOX, {"first": 2147483648}),
        (INBOX, {"first": "ten"}),
        (SEND, {"input": {"to": ["x@remote.test"], "subject": "s", "sendAt": "yesterday"}}),
        (
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { __typename } }",
            {"e": "alice@example.test", "p": {"an": "object"}},
        ),
    ],
    ids=["int-out-of-range", "int-as-string", "datetime-word", "password-object"],
)
async def test_variables_of_the_wrong_type_are_validation_errors(api, logged, query, variables):
    _, token = await api.user("alice")
    body = await api.gql(query, variables, token, expect_errors=True)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "Internal error" not in error["message"]
    assert no_errors_or_tracebacks(logged)


async def test_a_rest_page_size_out_of_range_is_a_validation_error(api, logged):
    _, token = await api.user("alice")
    for limit in ("3000000000", "0", "1" * 5000):
        r = await api.http.get(f"/api/mailbox/inbox?limit={limit}", headers=bearer(token))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        assert r.json()["error"]["fields"][0]["field"] == "limit"
    assert no_errors_or_tracebacks(logged)


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "body",
    [b"null", b'"a string"', b"42", b"\xff\xfe{\x00", DEEP, b"1" * 100_000, b'{"query": 7}'],
    ids=["null", "string", "number", "invalid-utf8", "deep-arrays", "huge-number", "query-int"],
)
async def test_a_graphql_body_that_is_not_a_request_is_a_typed_400_without_a_token(
    api, logged, body
):
    r = await api.http.post("/graphql", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert no_errors_or_tracebacks(logged)


async def test_deeply_nested_rest_json_is_a_validation_error(api, logged):
    _, token = await api.user("alice")
    r = await api.http.post(
        "/api/emails/send",
        content=DEEP,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert no_errors_or_tracebacks(logged)


async def test_a_subscription_over_http_post_is_a_bad_request(api, logged):
    _, token = await api.user("alice")
    r = await api.http.post(
        "/graphql",
        json={"query": "subscription { mailboxEvents { __typename } }"},
        headers=bearer(token),
    )
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "websocket" in error["message"].lower()
    assert no_errors_or_tracebacks(logged)


def multipart(boundary: str, filename: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\nhello\r\n"
        f"--{boundary}--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("boundary", "filename"),
    [
        ("b" * 300, "notes.txt"),
        ("xyz", "a\r\nX-Injected: 1.txt"),
        ("xyz", "a\rb.txt"),
        ("xyz", "n" * 100_000),
    ],
    ids=["boundary-over-256", "crlf-in-filename", "cr-in-filename", "filename-100k"],
)
async def test_malformed_multipart_uploads_are_validation_errors(api, logged, boundary, filename):
    _, token = await api.user("alice")
    r = await api.http.post(
        "/api/attachments",
        content=multipart(boundary, filename),
        headers={**bearer(token), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await api.system.mongo.db.attachments.count_documents({}) == 0
    assert no_errors_or_tracebacks(logged)


async def test_ordinary_client_errors_log_one_info_line_without_a_traceback(api, logged):
    _, token = await api.user("alice")
    for_anyone = await api.gql("{ me { id } }", token="mh_forged", expect_errors=True)
    assert for_anyone["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    cursor = await api.gql(INBOX, {"after": "nonsense"}, token, expect_errors=True)
    assert cursor["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"
    assert no_errors_or_tracebacks(logged)
    client_errors = [e for e in logged if "client error" in str(e.get("event"))]
    assert [e["code"] for e in client_errors] == ["UNAUTHENTICATED", "VALIDATION_ERROR"]
    assert {e["log_level"] for e in client_errors} == {"info"}
