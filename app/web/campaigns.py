"""Campaign HTTP entry points (issue 15): unsubscribe, tracking and the CSV recipient upload.

- ``GET /u/{token}``: a page with a confirm button (a GET alone never unsubscribes: link
  scanners follow GETs); ``POST /u/{token}``: RFC 8058 one-click (body
  ``List-Unsubscribe=One-Click``, no login, no cookie) or the page's button → 200.
- ``GET|HEAD /t/o/{token}``: the 1×1 GIF, recording an open.
- ``GET|HEAD /t/c/{token}``: 302 to that link of that message, recording a click.
- ``POST /api/campaigns/{id}/recipients``: a CSV (``email`` column + variable columns), as the
  request body (``text/csv``) or a multipart field ``file``.

A forged, altered or unknown token is a bare 404 (nothing says why).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from app.domain.campaigns import parse_recipient_csv
from app.domain.errors import NotFound, PayloadTooLarge, ValidationError
from app.domain.tracking import PIXEL_GIF
from app.web.errors import error_response

MAX_CSV_BYTES = 128 * 1024 * 1024
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>Unsubscribe</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">
{body}</body></html>"""


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404, headers=NO_STORE)


def campaign_routes(system: Any, context_for: Callable[[Request], Awaitable[Any]]) -> list[Route]:
    tracking = system.tracking

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            recipient = await tracking.check_unsubscribe(token)
        except NotFound:
            return _not_found()
        body = (
            f"<h1>Unsubscribe</h1><p>Stop sending these emails to "
            f"<b>{html.escape(recipient.email)}</b>?</p>"
            f'<form method="post" action="/u/{html.escape(token)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return HTMLResponse(_PAGE.format(body=body), headers=NO_STORE)

    async def unsubscribe(request: Request) -> Response:
        try:
            recipient = await tracking.unsubscribe(request.path_params["token"])
        except NotFound:
            return _not_found()
        body = (
            f"<h1>Unsubscribed</h1><p>{html.escape(recipient.email)} will get no more of "
            "these emails.</p>"
        )
        return HTMLResponse(_PAGE.format(body=body), headers=NO_STORE)

    async def pixel(request: Request) -> Response:
        try:
            await tracking.open(
                request.path_params["token"],
                method=request.method,
                user_agent=request.headers.get("user-agent", ""),
            )
        except NotFound:
            return _not_found()
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)

    async def click(request: Request) -> Response:
        try:
            url = await tracking.click(
                request.path_params["token"],
                method=request.method,
                user_agent=request.headers.get("user-agent", ""),
            )
        except NotFound:
            return _not_found()
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    async def upload(request: Request) -> Response:
        request.state.api_key_scope = "campaigns"
        try:
            context = await context_for(request)
            viewer = await context.viewer()
            if int(request.headers.get("content-length") or 0) > MAX_CSV_BYTES:
                raise PayloadTooLarge("CSV larger than 128 MB")
            text = await _csv_text(request)
            campaign, checked = await system.campaigns.add_recipients(
                viewer, request.path_params["id"], parse_recipient_csv(text), csv=True
            )
        except Exception as e:
            return error_response(e)
        return JSONResponse(
            {
                "id": str(campaign["_id"]),
                "added": len(checked.accepted),
                "recipients": campaign["recipients"],
                "duplicates": checked.duplicates[:1000],
                "duplicateCount": len(checked.duplicates),
                "invalid": [{"email": e, "reason": r} for e, r in checked.invalid[:1000]],
                "invalidCount": len(checked.invalid),
            }
        )

    return [
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
        Route("/t/o/{token}", pixel, methods=["GET", "HEAD"]),
        Route("/t/c/{token}", click, methods=["GET", "HEAD"]),
        Route("/api/campaigns/{id}/recipients", upload, methods=["POST"]),
    ]


async def _csv_text(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=MAX_CSV_BYTES)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise ValidationError.on("file", "send the CSV in a multipart field named `file`")
        data = await file.read()
    else:
        data = await request.body()
    if len(data) > MAX_CSV_BYTES:
        raise PayloadTooLarge("CSV larger than 128 MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError.on("file", "the CSV must be UTF-8") from None
