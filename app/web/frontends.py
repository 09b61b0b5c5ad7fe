"""The two browser front-ends, served from the Python package with nothing from another host.

- the webmail SPA at ``/`` (its ``index.html``; hashed files under ``/assets/``; any other
  GET that asks for HTML and is not an API path gets ``index.html`` too, so client routes
  survive a reload);
- GraphiQL at ``GET /graphql`` (our page, its files under ``/graphiql/assets/``); POST and the
  websocket on ``/graphql`` stay Strawberry's.

Both are Vite builds written into ``app/web/static/{webmail,graphiql}`` by ``make run`` /
``make test`` (node is needed to build them, never to run them). When a build is missing the
page answers 503 with the command that builds it, instead of a blank page.

Every page carries a Content-Security-Policy that allows scripts, styles, fonts and connections
from this origin only (the webmail also shows remote images, once the reader asks): a script
injected into a message can neither run nor send anything anywhere.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import URLPath
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

PACKAGE_STATIC = Path(__file__).parent / "static"

# Vite names every file under assets/ by its content hash: a changed file is a new URL, so
# browsers may keep these forever; index.html itself is revalidated on every load.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# The host the browser used, as it may appear in a CSP source: anything else (a header that
# tries to smuggle "; script-src *") is left out and 'self' alone applies.
_CSP_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

# Paths that belong to the API: an unknown one is a 404, never the SPA's index.html.
API_PREFIXES = ("/api/", "/graphql", "/graphiql/", "/assets/", "/webhooks/", "/u/", "/t/")


def content_security_policy(request: Request, *, reader: bool) -> str:
    """Same-origin only. ``connect-src`` names ws(s) of this host explicitly because CSP2
    browsers do not let 'self' cover websockets. ``reader``: the webmail renders sanitized
    message HTML in a sandboxed srcdoc iframe, which inherits this policy, so it allows what
    mail needs to look like mail (inline styles, and remote images after the person asked);
    styles and images cannot run code, scripts stay 'self' only."""
    connect = ["'self'"]
    host = request.headers.get("host", "")
    if _CSP_HOST.match(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    style = "'self' 'unsafe-inline'" if reader else "'self'"
    # The reader shows a message's remote images once the person asks (Show images). Its
    # iframe is a srcdoc document, which inherits this policy: without http(s) here that button
    # could never work. Until then the iframe's own stricter policy blocks them; scripts and
    # connections stay same-origin either way.
    images = "'self' data: blob: https: http:" if reader else "'self' data: blob:"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            f"style-src {style}",
            f"img-src {images}",
            "font-src 'self' data:",
            f"connect-src {' '.join(connect)}",
            # the reader's iframe is srcdoc (about:srcdoc, inherits this policy); attachments
            # may be previewed from blob: URLs
            "frame-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@dataclass(frozen=True)
class BuiltApp:
    """One Vite build: ``index.html`` and its content-hashed ``assets/``."""

    name: str
    source: str  # the npm project that builds it
    directory: Path
    reader: bool  # shows mail in a srcdoc iframe (see content_security_policy)

    @property
    def index(self) -> Path:
        return self.directory / "index.html"

    def page(self, request: Request) -> Response:
        csp = content_security_policy(request, reader=self.reader)
        if not self.index.is_file():
            return self.not_built_page(csp)
        return HTMLResponse(
            self.index.read_bytes(),
            headers={"Content-Security-Policy": csp, "Cache-Control": REVALIDATE},
        )

    def not_built_page(self, csp: str) -> Response:
        name, where = html.escape(self.name), html.escape(str(self.index))
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} is not built</title></head>
<body>
<h1>{name} is not built yet</h1>
<p>This server has no <code>{where}</code>. From the repository, run <code>make run</code>
(or <code>make assets</code>): it builds <code>{self.source}/</code> with <code>npm ci</code> and
<code>npm run build</code>, using the node that <code>make install</code> puts in
<code>.venv/bin</code>. Then reload this page.</p>
<p>The API is up meanwhile: <code>POST /graphql</code> and <code>/api/...</code>.</p>
</body></html>"""
        return HTMLResponse(
            body,
            status_code=503,
            headers={
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "Retry-After": "60",
            },
        )


class HashedAssets(StaticFiles):
    """Vite's ``assets/`` directory: content-hashed names, so cached for a year."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        if response.status_code == 200:
            response.headers["Cache-Control"] = IMMUTABLE
        return response

    async def check_config(self) -> None:
        """No build yet is not a configuration error: each lookup answers 404 until one
        appears (StaticFiles would raise on the missing directory at the first request)."""


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class SpaFallback(BaseRoute):
    """A client route (``/inbox/…``, ``/settings``) reloaded in the browser gets the SPA.

    It matches only a browser's GET for a page: API paths, files (a dot in the last segment),
    other methods and non-HTML clients do not match at all, so they keep the router's own
    404/405 answers."""

    def __init__(self, webmail: BuiltApp) -> None:
        self.webmail = webmail

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return Match.NONE, {}
        path: str = scope["path"]
        if path.startswith(API_PREFIXES) or "." in path.rstrip("/").rsplit("/", 1)[-1]:
            return Match.NONE, {}
        if not wants_html(Request(scope)):
            return Match.NONE, {}
        return Match.FULL, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.webmail.page(Request(scope, receive))(scope, receive, send)


class Frontends:
    """Both builds under one static directory (the package's, or ``MAILHUB_STATIC_DIR``)."""

    def __init__(self, static_dir: Path | None = None) -> None:
        root = static_dir or PACKAGE_STATIC
        self.webmail = BuiltApp("The webmail", "webmail", root / "webmail", reader=True)
        self.graphiql = BuiltApp("GraphiQL", "graphiql", root / "graphiql", reader=False)

    def routes(self) -> list[BaseRoute]:
        """The app's last routes: hashed files, ``/``, then the SPA fallback."""

        async def webmail_page(request: Request) -> Response:
            return self.webmail.page(request)

        return [
            Mount("/assets", app=self.assets_of(self.webmail)),
            Mount("/graphiql/assets", app=self.assets_of(self.graphiql)),
            Route("/", webmail_page, methods=["GET", "HEAD"]),
            SpaFallback(self.webmail),
        ]

    @staticmethod
    def assets_of(app: BuiltApp) -> ASGIApp:
        # gzip for the bundles only (JS/CSS shrink ~3x); API responses are left as they were
        return GZipMiddleware(
            HashedAssets(directory=app.directory / "assets", check_dir=False), minimum_size=1024
        )
