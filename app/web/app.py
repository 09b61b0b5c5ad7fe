"""The ASGI application: GraphQL (+ GraphiQL) at /graphql, the REST facade, health, metrics,
and the webmail SPA at / (app/web/frontends.py)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from cross_web import HTTPException
from graphql import OperationType, get_operation_ast, parse
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL

from app.bootstrap import System, build_system
from app.config import Settings
from app.services import monitoring
from app.web import frontends
from app.web.rest import Rest
from schema import build_schema
from schema.context import Context

HTTP_REQUESTS = Counter("mailhub_http_requests_total", "HTTP requests", ["kind"])
log = structlog.get_logger(__name__)
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}  # Strawberry's refusals; else 400


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def client_of(request: Any) -> str:
    return request.client.host if request.client else "unknown"


class MailhubGraphQL(GraphQL[Context, None]):
    def __init__(self, system: System, graphiql: frontends.BuiltApp, **kwargs: Any) -> None:
        super().__init__(build_schema(system.settings), **kwargs)
        self.system = system
        self.graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's HTTP handling, with every refusal a GraphQL-shaped JSON body
        (``extensions.code = "BAD_REQUEST"``) instead of plain text, and a bug a masked 500."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as e:
            code = _HTTP_CODES.get(e.status_code, "BAD_REQUEST")
            log.info("client error", code=code, message=e.reason[:200])
            response = graphql_error_response(e.reason, code, e.status_code)
        except Exception as e:  # a bug: masked, logged once with a request id
            request_id = uuid.uuid4().hex[:12]
            log.error(
                "unexpected error in GraphQL HTTP handling",
                request_id=request_id,
                exc_info=(type(e), e, e.__traceback__),
            )
            response = graphql_error_response(
                f"Internal error (request id {request_id})", "INTERNAL_SERVER_ERROR", 500
            )
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """The request body: a JSON object (or a list, refused as a batch), else a 400. A body
        nested too deeply for the parser or a number too long to convert is a 400 too."""
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as e:  # ValueError covers JSON and UTF-8 errors
            raise HTTPException(400, "The request body is not valid JSON") from e
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return value

    async def execute_operation(
        self,
        request: Any,
        request_adapter: Any,
        request_data: Any,
        context: Any,
        root_value: Any,
        sub_response: Any,
    ) -> Any:
        if (
            not isinstance(request_data, list)
            and self._get_stream_transport(request_data.protocol) is None
            and is_subscription(request_data.query, request_data.operation_name)
        ):
            raise HTTPException(
                400, "Subscriptions run over the websocket at /graphql (graphql-transport-ws)"
            )
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def get_context(self, request: Any, response: Any) -> Context:
        return Context(
            system=self.system,
            token=bearer_token(request.headers),
            client=client_of(request),
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """A bad or expired token closes the socket with 4403 before any data flows."""
        from strawberry.exceptions import ConnectionRejectionError

        from app.domain.errors import DomainError

        try:
            viewer = await context.authenticate_websocket()
        except DomainError as e:
            raise ConnectionRejectionError({"message": e.message}) from e
        return {"userId": str(viewer.user_id)}

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL build instead of Strawberry's CDN page: it works offline and under a
        same-origin CSP (GET /graphql with Accept: text/html and no ?query=)."""
        return self.graphiql.page(request)


def graphql_error_response(message: str, code: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
    )


def is_subscription(query: str | None, operation_name: str | None) -> bool:
    if not query or "subscription" not in query:  # the keyword must be there: skip the parse
        return False
    try:
        operation = get_operation_ast(parse(query), operation_name)
    except Exception:  # a syntax error: the normal path reports it
        return False
    return operation is not None and operation.operation == OperationType.SUBSCRIPTION


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for k, v in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ):
                    if k not in names:
                        headers.append((k, v))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, system: System | None = None) -> Starlette:
    """Build the app; with ``system`` given (tests, `mailhub dev`) it is used and not closed."""
    state: dict[str, Any] = {"system": system}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = state["system"] is None
        if owned:
            state["system"] = await build_system(settings)
        wire(app, state["system"])
        try:
            yield
        finally:
            if owned:
                await state["system"].close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        system = state["system"]
        checks = await system.readiness()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
            headers={} if ok else {"Retry-After": "5"},
        )

    async def metrics(request: Request) -> Response:
        body, content_type = monitoring.exposition()
        return Response(body, media_type=content_type)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            ),
        ],
        lifespan=lifespan,
    )
    if system is not None:
        wire(app, system)
    return app


def wire(app: Starlette, system: System) -> None:
    if getattr(app.state, "wired", False):
        return
    app.state.wired = True
    app.state.system = system
    pages = frontends.Frontends(system.settings.static_dir)
    graphql = MailhubGraphQL(
        system,
        pages.graphiql,
        graphql_ide="graphiql",
        allowed_origins=system.settings.cors_origins,
        keep_alive=True,
        keep_alive_interval=15,
    )

    async def context_for(request: Request) -> Context:
        return Context(
            system=system,
            token=bearer_token(request.headers),
            client=client_of(request),
            request=request,
            # the API-key scope of the REST route (app/web/rest.py routes)
            required_scopes={getattr(request.state, "api_key_scope", None)},
        )

    rest = Rest(system, graphql.schema, context_for)
    for route in rest.routes():
        app.router.routes.append(route)
    from app.web.webhooks import webhook_routes

    app.router.routes.extend(webhook_routes(system))  # POST /webhooks/events (issue 4)
    from app.web.campaigns import campaign_routes

    app.router.routes.extend(campaign_routes(system, context_for))  # /u/, /t/ (issue 15)
    app.router.routes.append(Route("/graphql", graphql, methods=["GET", "POST"]))
    from starlette.routing import WebSocketRoute

    app.router.routes.append(WebSocketRoute("/graphql", graphql))
    app.router.routes.extend(pages.routes())  # last: its SPA fallback takes client routes
