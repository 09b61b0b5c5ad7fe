"""Streaming multipart upload: the file part goes straight into the blob store, chunk by chunk,
and the size limit is enforced while streaming (nothing is buffered whole, nothing left behind).
"""

from __future__ import annotations

from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.domain.errors import ValidationError
from app.domain.viewer import Viewer
from app.services.sending.attachments import AttachmentService, Upload


def _header_params(value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    return parse_options_header(value)


def _filename(disposition: dict[bytes, bytes]) -> str:
    name = disposition.get(b"filename", b"").decode("utf-8", "replace")
    if name.startswith('"'):  # an unterminated quoted string: the filename held a line break
        raise ValidationError.on("file", "malformed filename in Content-Disposition")
    return name


async def stream_upload(
    request: Request, viewer: Viewer, attachments: AttachmentService
) -> dict[str, Any]:
    content_type, params = _header_params(request.headers.get("content-type", "").encode("latin-1"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ValidationError.on("file", "send multipart/form-data with a field named `file`")

    state: dict[str, Any] = {"headers": {}, "name": b"", "value": b"", "part": None}
    pending: list[tuple[str, Any]] = []  # parser callbacks are sync; the blob writes are async

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["name"].decode("latin-1").lower()] = state["value"]
        state["name"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        pending.append(("part", dict(state["headers"])))
        state["headers"] = {}

    def on_part_data(data: bytes, start: int, end: int) -> None:
        pending.append(("data", bytes(data[start:end])))

    def on_part_end() -> None:
        pending.append(("end", None))

    try:
        parser = MultipartParser(
            params[b"boundary"],
            {
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
    except FormParserError as e:  # e.g. a boundary over 256 characters (RFC 2046 §5.1.1: 70)
        raise ValidationError.on("file", f"malformed multipart body: {e}") from None
    upload: Upload | None = None
    result: dict[str, Any] | None = None
    in_file = False
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for kind, value in pending:
                if kind == "part":
                    _, disposition = _header_params(value.get("content-disposition", b""))
                    in_file = (
                        disposition.get(b"name") == b"file" and upload is None and result is None
                    )
                    if in_file:
                        filename = _filename(disposition)
                        declared = value.get("content-type", b"").decode("latin-1") or None
                        upload = attachments.begin_upload(viewer, filename, declared)
                elif kind == "data" and in_file and upload is not None:
                    await upload.write(value)
                elif kind == "end" and in_file and upload is not None:
                    result = await upload.finish()
                    upload, in_file = None, False
            pending.clear()
        parser.finalize()
    except BaseException as e:
        if upload is not None:
            await upload.abort()
        if isinstance(e, FormParserError):  # a bare CR in a header, a header over the limit...
            raise ValidationError.on("file", f"malformed multipart body: {e}") from None
        raise
    if upload is not None:
        await upload.abort()
        raise ValidationError.on("file", "the upload ended before the file part was complete")
    if result is None:
        raise ValidationError.on("file", "no form field named `file`")
    return result
