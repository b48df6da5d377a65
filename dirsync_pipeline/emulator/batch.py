"""Google's multipart/mixed batch endpoint: split the parts, answer each, reassemble.

Each part is an `application/http` request; each answer part echoes its
`Content-ID` as `<response-ID>`, which googleapiclient requires.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from http import HTTPStatus

from .wire import ApiError, Request, Response

MAX_PARTS = 1000  # Google's documented limit per batch
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")

Dispatch = Callable[[Request], Response]


def handle_batch(request: Request, dispatch: Dispatch) -> Response:
    content_type = request.headers.get("content-type", "")
    boundary = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or boundary is None:
        return ApiError(400, "badRequest", "Batch requests must be multipart/mixed").to_response()
    parts = _split_parts(request.body, boundary.group(1).encode())
    if not parts or len(parts) > MAX_PARTS:
        return ApiError(400, "badRequest", f"A batch must hold 1 to {MAX_PARTS} requests").to_response()
    answer_boundary = "batch_" + secrets.token_hex(12)
    answers = [_answer_part(part, request, dispatch) for part in parts]
    body = b"".join(f"--{answer_boundary}\r\n".encode() + answer for answer in answers)
    return Response(200, body + f"--{answer_boundary}--\r\n".encode(), f"multipart/mixed; boundary={answer_boundary}")


def _split_parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Each part's (MIME headers, payload): the text between ``--boundary`` lines, up to ``--boundary--``."""
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        head, payload = _split_head(chunk.lstrip(b"\r\n"))
        parts.append((_parse_headers(head), payload.removesuffix(b"\n").removesuffix(b"\r")))
    return parts


def _answer_part(part: tuple[dict[str, str], bytes], outer: Request, dispatch: Dispatch) -> bytes:
    mime_headers, payload = part
    inner = _inner_request(payload, outer)
    response = (
        dispatch(inner) if inner is not None else ApiError(400, "badRequest", "Malformed batch part").to_response()
    )
    head = ["Content-Type: application/http"]
    if mime_headers.get("content-id"):
        head.append(f"Content-ID: <response-{mime_headers['content-id'].strip('<>')}>")
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


def _inner_request(payload: bytes, outer: Request) -> Request | None:
    """Parse `GET /path?query HTTP/1.1` plus headers; the outer Authorization is the fallback."""
    request_line, _, rest = payload.lstrip(b"\r\n").partition(b"\n")
    words = request_line.decode("utf-8", errors="replace").split()
    if len(words) < 2:
        return None
    head, body = _split_head(rest) if rest.strip() else (b"", b"")
    headers = _parse_headers(head)
    if "authorization" in outer.headers:
        headers.setdefault("authorization", outer.headers["authorization"])
    return Request.parse(words[0], words[1], headers, body)


def _split_head(text: bytes) -> tuple[bytes, bytes]:
    """Headers and body, split at the first blank line (CRLF or LF line ends)."""
    blank = _BLANK_LINE.search(text)
    return (text[:blank.start()], text[blank.end():]) if blank else (text, b"")


def _parse_headers(head: bytes) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in head.decode("utf-8", errors="replace").splitlines() if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}
