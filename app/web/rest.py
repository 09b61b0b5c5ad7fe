"""REST facade of the seed's endpoints (CONTRACT.md), over the same services and schema.

Writes call the services directly; items are shaped by running the GraphQL item selection, so
REST and GraphQL return the same fields (camelCase), with the same sanitizing and scoping.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.domain.errors import DomainError, NotFound, ValidationError
from app.domain.folders import parse_folder
from app.services.mailbox.changes import StateChange
from app.services.mailbox.queries import MAX_PAGE
from app.services.send_intake.accept import MAX_SENDS_PER_CALL, SendRequest
from app.services.sending.compose import Composition
from app.services.templates.sending import TemplateRef
from app.web.errors import error_response
from app.web.uploads import stream_upload

ITEM_FIELDS = """
fragment ItemFields on MailboxItem {
  id messageId threadId folder labels read starred receivedAt
  from { name email } to { name email } cc { name email } bcc { name email } replyTo { name email }
  subject snippet textBody htmlBody rfc822MessageId inReplyTo references
  attachments { id filename contentType size sha256 downloadUrl } hasAttachments size
  recipients { address type status attempts lastReply bounceClass nextAttemptAt updatedAt }
  spam { isSpam probable score modelVersion reasons } authResults rawUrl
}
"""
ITEM_QUERY = ITEM_FIELDS + "query Item($id: ID!) { message(id: $id) { ...ItemFields } }"
FOLDER_QUERY = (
    ITEM_FIELDS
    + """
query Folder($folder: Folder, $first: Int!, $after: String) {
  messages(folder: $folder, first: $first, after: $after) {
    edges { node { ...ItemFields } } pageInfo { hasNextPage endCursor } totalCount
  }
}"""
)
SEARCH_QUERY = (
    ITEM_FIELDS
    + """
query Search($query: String!, $first: Int!, $after: String) {
  search(query: $query, first: $first, after: $after) {
    edges { node { highlights item { ...ItemFields } } }
    pageInfo { hasNextPage endCursor } totalCount
  }
}"""
)
MAX_JSON_BODY = 40 * 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def endpoint(handler: Handler, scope: str | None = None) -> Handler:
    """Errors to JSON; ``scope``: what an API key needs here (None: login tokens only)."""

    async def wrapped(request: Request) -> Response:
        request.state.api_key_scope = scope
        try:
            return await handler(request)
        except Exception as e:
            return error_response(e)

    return wrapped


async def _json_body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_JSON_BODY:
        from app.domain.errors import PayloadTooLarge

        raise PayloadTooLarge("request body too large")
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, RecursionError):  # bad JSON or UTF-8, a too-long number, deep nesting
        raise ValidationError.on("body", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError.on("body", "request body must be a JSON object")
    return body


def _page_size(request: Request, default: int) -> int:
    """``?limit=``: a whole number of items from 1 to MAX_PAGE (anything else is the client's)."""
    raw = request.query_params.get("limit")
    try:
        limit = int(raw) if raw is not None else default
    except ValueError:  # not a number, or more digits than int() converts
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError.on("limit", f"limit must be a number from 1 to {MAX_PAGE}")
    return limit


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError.on(name, f"{name} must be a list of strings")
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationError.on(name, f"{name} must be a string")
    return value


def _optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValidationError.on(name, f"{name} must be true or false")
    return value


def composition_from_json(body: dict[str, Any]) -> Composition:
    send_at = _optional_str(body, "sendAt")
    try:
        when = datetime.fromisoformat(send_at) if send_at else None
    except ValueError:
        raise ValidationError.on("sendAt", "sendAt must be an ISO 8601 date-time") from None
    return Composition(
        from_=_optional_str(body, "from"),
        to=_strings(body, "to"),
        cc=_strings(body, "cc"),
        bcc=_strings(body, "bcc"),
        subject=_optional_str(body, "subject") or "",
        text=_optional_str(body, "body") if "body" in body else _optional_str(body, "text"),
        html=_optional_str(body, "html"),
        attachment_ids=_strings(body, "attachments"),
        in_reply_to=_optional_str(body, "inReplyTo"),
        idempotency_key=_optional_str(body, "idempotencyKey"),
        send_at=when,
        transactional=_optional_bool(body, "transactional"),
    )


def _error_of(e: DomainError) -> dict[str, Any]:
    """One refused send of a batch: the error body a single send would answer."""
    return {"error": json.loads(bytes(error_response(e).body))["error"]}


def template_ref_from_json(body: dict[str, Any]) -> TemplateRef:
    key = body.get("templateId")
    if not isinstance(key, str) or not key:
        raise ValidationError.on("templateId", "templateId must be a template key")
    version = body.get("templateVersion")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValidationError.on("templateVersion", "templateVersion must be a number")
    return TemplateRef(key=key, version=version, variables=body.get("variables") or {})


# The seed's JSON keys of a draft → Composition fields (for partial updates).
DRAFT_JSON_FIELDS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "subject": "subject",
    "body": "text",
    "text": "text",
    "html": "html",
    "attachments": "attachment_ids",
    "inReplyTo": "in_reply_to",
}


class Rest:
    def __init__(
        self, system: Any, schema: Any, context_for: Callable[[Request], Awaitable[Any]]
    ) -> None:
        self.system = system
        self.schema = schema
        self.context_for = context_for

    async def _graphql(
        self, request: Request, query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        context = await self.context_for(request)
        await context.viewer()
        result = await self.schema.execute(query, variable_values=variables, context_value=context)
        if result.errors:
            error = result.errors[0]
            if isinstance(error.original_error, DomainError):
                raise error.original_error
            raise RuntimeError(error.message)  # masked as a 500 with a request id
        return result.data  # type: ignore[no-any-return]

    async def _item(self, request: Request, item_id: str) -> dict[str, Any]:
        data = await self._graphql(request, ITEM_QUERY, {"id": item_id})
        if data["message"] is None:
            raise NotFound(f"no message with id {item_id}")
        return data["message"]  # type: ignore[no-any-return]

    async def send(self, request: Request) -> Response:
        context = await self.context_for(request)
        body = await _json_body(request)
        viewer = await context.viewer()
        if "templateId" in body:  # the seed's template send: {"templateId", "variables", "to"}
            item = await self.system.template_sender.send_email(
                viewer, composition_from_json(body), template_ref_from_json(body)
            )
        else:
            item = await self.system.sending.send_email(viewer, composition_from_json(body))
        status = await self.system.mailbox.message_status(viewer, item["message_id"])
        return JSONResponse(
            {
                "id": str(item["_id"]),
                "messageId": str(item["message_id"]),
                "status": status or "queued",
            },
            status_code=202,
        )

    async def send_batch(self, request: Request) -> Response:
        """Many sends in one call (docs/api.md "Batch sends"): each is checked and stored
        durably, then becomes a message moments later; one result per send, in order."""
        context = await self.context_for(request)
        body = await _json_body(request)
        sends = body.get("sends")
        if not isinstance(sends, list) or not 1 <= len(sends) <= MAX_SENDS_PER_CALL:
            raise ValidationError.on("sends", f"give a list of 1 to {MAX_SENDS_PER_CALL} sends")
        results: list[dict[str, Any] | None] = [None] * len(sends)
        requests: list[tuple[int, SendRequest]] = []
        for n, send in enumerate(sends):
            try:
                if not isinstance(send, dict):
                    raise ValidationError.on(f"sends[{n}]", "each send is a JSON object")
                template = template_ref_from_json(send) if "templateId" in send else None
                requests.append((n, SendRequest(composition_from_json(send), template)))
            except DomainError as e:
                results[n] = _error_of(e)
        if requests:
            answers = await self.system.send_intake.accept_many(
                await context.viewer(), [r for _, r in requests]
            )
            for (n, _), answer in zip(requests, answers, strict=True):
                results[n] = (
                    _error_of(answer)
                    if isinstance(answer, DomainError)
                    else {
                        "id": str(answer.item_id),
                        "messageId": str(answer.message_id),
                        "status": "accepted",
                    }
                )
        return JSONResponse({"results": results}, status_code=202)

    async def draft(self, request: Request) -> Response:
        """With ``id``, only the keys in the body change; ``null`` clears (CONTRACT.md)."""
        context = await self.context_for(request)
        body = await _json_body(request)
        present = frozenset(field for key, field in DRAFT_JSON_FIELDS.items() if key in body)
        item = await self.system.drafts.save_draft(
            await context.viewer(),
            _optional_str(body, "id"),
            composition_from_json(body),
            present,
        )
        return JSONResponse({"id": str(item["_id"])}, status_code=201)

    async def folder(self, request: Request) -> Response:
        folder = parse_folder(request.path_params["folder"])
        limit = _page_size(request, 50)
        data = await self._graphql(
            request,
            FOLDER_QUERY,
            {
                "folder": folder.value,
                "first": limit,
                "after": request.query_params.get("cursor") or None,
            },
        )
        page = data["messages"]
        return JSONResponse(
            {
                "items": [e["node"] for e in page["edges"]],
                "nextCursor": page["pageInfo"]["endCursor"]
                if page["pageInfo"]["hasNextPage"]
                else None,
                "total": page["totalCount"],
            }
        )

    async def get_email(self, request: Request) -> Response:
        return JSONResponse(await self._item(request, request.path_params["id"]))

    async def labels(self, request: Request) -> Response:
        context = await self.context_for(request)
        body = await _json_body(request)
        read, starred, folder = body.get("read"), body.get("starred"), _optional_str(body, "folder")
        for name, value in (("read", read), ("starred", starred)):
            if value is not None and not isinstance(value, bool):
                raise ValidationError.on(name, f"{name} must be true or false")
        change = StateChange(
            read=read,
            starred=starred,
            folder=parse_folder(folder).value if folder else None,
            add_labels=tuple(_strings(body, "add")),
            remove_labels=tuple(_strings(body, "remove")),
        )
        item_id = request.path_params["id"]
        await self.system.mailbox_changes.update_items(await context.viewer(), [item_id], change)
        return JSONResponse(await self._item(request, item_id))

    async def upload(self, request: Request) -> Response:
        context = await self.context_for(request)
        viewer = await context.viewer()
        limit = self.system.settings.max_attachment_bytes
        if int(request.headers.get("content-length") or 0) > limit + 64 * 1024:
            from app.domain.errors import PayloadTooLarge

            raise PayloadTooLarge(f"attachment larger than {limit // (1024 * 1024)} MB")
        doc = await stream_upload(request, viewer, self.system.attachments)
        return JSONResponse(
            {
                "id": str(doc["_id"]),
                "filename": doc["filename"],
                "contentType": doc["content_type"],
                "size": doc["size"],
                "sha256": doc["sha256"],
            },
            status_code=201,
        )

    async def download(self, request: Request) -> Response:
        context = await self.context_for(request)
        doc = await self.system.attachments.for_download(
            await context.viewer(), request.path_params["id"]
        )
        return StreamingResponse(
            await self.system.attachments.content(doc),
            media_type=doc["content_type"],
            headers={
                "Content-Disposition": self.system.attachments.content_disposition(doc["filename"]),
                "Content-Length": str(doc["size"]),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, no-store",
            },
        )

    async def raw(self, request: Request) -> Response:
        """ "Show original": the stored RFC 822 bytes of one of the viewer's messages."""
        context = await self.context_for(request)
        item_id = request.path_params["id"]
        blob_id = await self.system.mailbox.original_blob(await context.viewer(), item_id)
        length, chunks = await self.system.blobs.open_stream(blob_id)
        return StreamingResponse(
            chunks,
            media_type="message/rfc822",
            headers={
                "Content-Disposition": f'inline; filename="{item_id}.eml"',
                "Content-Length": str(length),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, no-store",
            },
        )

    async def search(self, request: Request) -> Response:
        """Gmail-style search (docs/search.md); each item also carries its ``highlights``."""
        query = request.query_params.get("q")
        if query is None:
            raise ValidationError.on("q", "give a query: ?q=...")
        limit = _page_size(request, 20)
        data = await self._graphql(
            request,
            SEARCH_QUERY,
            {"query": query, "first": limit, "after": request.query_params.get("cursor") or None},
        )
        page = data["search"]
        return JSONResponse(
            {
                "items": [
                    {**e["node"]["item"], "highlights": e["node"]["highlights"]}
                    for e in page["edges"]
                ],
                "nextCursor": page["pageInfo"]["endCursor"]
                if page["pageInfo"]["hasNextPage"]
                else None,
                "total": page["totalCount"],
            }
        )

    def routes(self) -> list[Route]:
        e = endpoint
        return [
            # the second argument: the API-key scope each route needs (docs/api.md)
            Route("/api/emails/send", e(self.send, "send"), methods=["POST"]),
            Route("/api/emails/batch", e(self.send_batch, "send"), methods=["POST"]),
            Route("/api/emails/drafts", e(self.draft, "send"), methods=["POST"]),
            Route("/api/emails/search", e(self.search, "read"), methods=["GET"]),
            Route("/api/mailbox/{folder}", e(self.folder, "read"), methods=["GET"]),
            Route("/api/emails/{id}", e(self.get_email, "read"), methods=["GET"]),
            Route("/api/emails/{id}/labels", e(self.labels), methods=["POST"]),
            Route("/api/emails/{id}/raw", e(self.raw, "read"), methods=["GET"]),
            Route("/api/attachments", e(self.upload, "send"), methods=["POST"]),
            Route("/api/attachments/{id}", e(self.download, "read"), methods=["GET"]),
        ]
