"""Google's multipart/mixed batch endpoint: split the parts, answer each, reassemble.

Each part is an `application/http` request; each answer part echoes its
`Content-ID` as `<response-ID>`, which googleapiclient requires.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from email.message import Message
from email.parser import BytesParser, Parser
from http import HTTPStatus
from typing import cast

from .wire import ApiError, Request, Response

MAX_PARTS = 1000  # Google's documented limit per batch

Dispatch = Callable[[Request], Response]


def handle_batch(request: Request, dispatch: Dispatch) -> Response:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/mixed"):
        return ApiError(400, "badRequest", "Batch requests must be multipart/mixed").to_response()
    envelope = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
    parts = cast(list[Message], envelope.get_payload()) if envelope.is_multipart() else []
    if not parts or len(parts) > MAX_PARTS:
        return ApiError(400, "badRequest", f"A batch must hold 1 to {MAX_PARTS} requests").to_response()
    boundary = "batch_" + secrets.token_hex(12)
    answers = [_answer_part(part, request, dispatch) for part in parts]
    body = b"".join(f"--{boundary}\r\n".encode() + answer for answer in answers) + f"--{boundary}--\r\n".encode()
    return Response(200, body, f"multipart/mixed; boundary={boundary}")


def _answer_part(part: Message, outer: Request, dispatch: Dispatch) -> bytes:
    inner = _inner_request(part.get_payload(), outer)
    response = (
        dispatch(inner) if inner is not None else ApiError(400, "badRequest", "Malformed batch part").to_response()
    )
    head = ["Content-Type: application/http"]
    if part["Content-ID"]:
        head.append(f"Content-ID: <response-{part['Content-ID'].strip().strip('<>')}>")
    lines = [
        f"HTTP/1.1 {response.status} {_phrase(response.status)}",
        f"Content-Type: {response.content_type}",
        *(f"{name}: {value}" for name, value in response.headers.items()),
        f"Content-Length: {len(response.body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + response.body + b"\r\n"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _inner_request(payload: object, outer: Request) -> Request | None:
    """Parse `GET /path?query HTTP/1.1` plus headers; the outer Authorization is the fallback."""
    if not isinstance(payload, str):
        return None
    request_line, _, rest = payload.lstrip("\r\n").partition("\n")
    words = request_line.split()
    if len(words) < 2:
        return None
    headers_part, _, body = rest.replace("\r\n", "\n").partition("\n\n")
    headers = {name.lower(): value for name, value in Parser().parsestr(headers_part + "\n\n").items()}
    if "authorization" in outer.headers:
        headers.setdefault("authorization", outer.headers["authorization"])
    return Request.parse(words[0], words[1], headers, body.encode("utf-8"))
