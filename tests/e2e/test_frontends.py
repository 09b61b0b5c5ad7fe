"""The webmail at / and GraphiQL at GET /graphql are served by mailhub itself (issue 13).

A small stand-in build (index.html + one hashed asset per front-end) under a temporary
MAILHUB_STATIC_DIR; the real Vite builds are exercised in a browser by tests/browser/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

WEBMAIL_INDEX = '<!doctype html><title>mailhub webmail</title><script type="module" src="/assets/index-Ab12Cd34.js"></script>'
GRAPHIQL_INDEX = '<!doctype html><title>mailhub GraphiQL</title><script type="module" src="/graphiql/assets/index-Zz99Yy88.js"></script>'


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    for name, index, asset in (
        ("webmail", WEBMAIL_INDEX, "index-Ab12Cd34.js"),
        ("graphiql", GRAPHIQL_INDEX, "index-Zz99Yy88.js"),
    ):
        (root / name / "assets").mkdir(parents=True)
        (root / name / "index.html").write_text(index)
        (root / name / "assets" / asset).write_text(f"console.log({name!r});" * 200)
    return root


@pytest.fixture
def settings(settings, static_dir):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"static_dir": static_dir})


HTML = {"Accept": "text/html,application/xhtml+xml"}


def csp_of(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    policy = response.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in policy.split(";")) if d}


async def test_root_serves_the_webmail_with_a_same_origin_policy(api):
    r = await api.http.get("/", headers=HTML)
    assert r.status_code == 200 and r.text == WEBMAIL_INDEX
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    csp = csp_of(r)
    host = api.base.removeprefix("http://")
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]
    # remote images only (the reader's "Show images"; its iframe inherits this policy)
    assert csp["img-src"] == ["'self'", "data:", "blob:", "https:", "http:"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    for directive, sources in csp.items():
        if directive != "img-src":
            assert not [s for s in sources if s.startswith(("http", "*"))], directive


async def test_a_forged_host_header_cannot_add_sources_to_the_policy(api):
    r = await api.http.get("/", headers={**HTML, "Host": "x; script-src *"})
    csp = csp_of(r)
    assert csp["connect-src"] == ["'self'"] and csp["script-src"] == ["'self'"]


async def test_hashed_assets_are_cached_for_a_year(api):
    r = await api.http.get("/assets/index-Ab12Cd34.js")
    assert r.status_code == 200 and r.text == "console.log('webmail');" * 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in r.headers["content-type"]
    assert r.headers["content-encoding"] == "gzip"  # httpx asked for it and decoded it
    plain = await api.http.get("/assets/index-Ab12Cd34.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == r.text
    g = await api.http.get("/graphiql/assets/index-Zz99Yy88.js")
    assert g.status_code == 200 and g.headers["cache-control"].endswith("immutable")


async def test_a_missing_asset_is_a_404(api):
    assert (await api.http.get("/assets/index-00000000.js")).status_code == 404
    assert (await api.http.get("/assets/../../config.py")).status_code == 404


async def test_client_routes_reloaded_in_the_browser_get_the_spa(api):
    for path in ("/inbox", "/folder/SENT", "/message/65a0c0ffee/thread", "/settings/"):
        r = await api.http.get(path, headers=HTML)
        assert r.status_code == 200 and r.text == WEBMAIL_INDEX, path


async def test_api_paths_files_and_non_browsers_are_not_given_the_spa(api):
    _, token = await api.user("alice")
    assert (await api.http.get("/api/nope", headers=HTML)).status_code == 404
    assert (await api.http.get("/favicon.ico", headers=HTML)).status_code == 404
    assert (await api.http.get("/inbox", headers={"Accept": "application/json"})).status_code == 404
    assert (await api.http.post("/inbox", headers=HTML)).status_code == 404
    # the REST routes still answer as before
    r = await api.http.get("/api/mailbox/INBOX", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["items"] == []


async def test_get_graphql_in_a_browser_is_our_graphiql_page(api):
    r = await api.http.get("/graphql", headers=HTML)
    assert r.status_code == 200 and r.text == GRAPHIQL_INDEX
    csp = csp_of(r)
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:", "blob:"]
    assert "unpkg.com" not in r.text


async def test_graphql_post_get_queries_and_websocket_still_work(api):
    email, token = await api.user("alice")
    assert (await api.gql("{ me { email } }", token=token))["data"]["me"]["email"] == email
    r = await api.http.get(
        "/graphql",
        params={"query": "{ me { email } }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200 and r.json()["data"]["me"]["email"] == email


async def test_a_missing_build_answers_503_saying_how_to_build_it(api, static_dir):
    (static_dir / "webmail" / "index.html").unlink()
    (static_dir / "graphiql" / "index.html").unlink()
    r = await api.http.get("/", headers=HTML)
    assert r.status_code == 503 and "make run" in r.text and "webmail/" in r.text
    assert r.headers["retry-after"] == "60" and r.headers["cache-control"] == "no-store"
    g = await api.http.get("/graphql", headers=HTML)
    assert g.status_code == 503 and "make run" in g.text and "GraphiQL" in g.text
    shutil.rmtree(static_dir / "webmail")
    assert (await api.http.get("/assets/index-Ab12Cd34.js")).status_code == 404
    assert (await api.http.get("/inbox", headers=HTML)).status_code == 503
    # the API does not depend on the front-ends
    assert (await api.http.get("/healthz")).status_code == 200
