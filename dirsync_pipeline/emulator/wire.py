"""Transport-neutral request/response types and Google's JSON error envelope.

The HTTP server and the batch endpoint both turn wire bytes into a `Request`
and a `Response` back into bytes, so every endpoint is written once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

JSON_TYPE = "application/json; charset=UTF-8"

# Canonical gRPC status names Google puts in `error.status`, by HTTP code.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Reasons Google files under the `usageLimits` error domain instead of `global`.
_USAGE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded", "accessNotConfigured"}
)

_QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Queries' and limit '{limit}' of service "
    "'admin.googleapis.com' for consumer 'project_number:123'."
)

# Messages Google sends for a reason when a fault does not spell one out.
_DEFAULT_MESSAGES = {
    "backendError": "Service unavailable. Please try again",
    "internalError": "Internal error encountered.",
    "badGateway": "Bad Gateway",
    "gatewayTimeout": "Gateway Timeout",
    "rateLimitExceeded": _QUOTA_MESSAGE.format(limit="Queries per minute"),
    "userRateLimitExceeded": _QUOTA_MESSAGE.format(limit="Queries per minute per user"),
    "quotaExceeded": _QUOTA_MESSAGE.format(limit="Queries per minute"),
    "forbidden": "Not Authorized to access this resource/api",
    "notFound": "Resource Not Found",
    "invalid": "Invalid Input",
    "badRequest": "Bad Request",
    "accessNotConfigured": (
        "Admin SDK API has not been used in project 123 before or it is disabled. Enable it by visiting "
        "https://console.developers.google.com/apis/api/admin.googleapis.com/overview?project=123 then retry. "
        "If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    ),
}


@dataclass(frozen=True)
class Request:
    """One API call, whether it arrived alone or as a part of a batch."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Request:
        """Split a request target; the first value wins for a repeated query key."""
        parts = urlsplit(target)
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key, value)
        return cls(method.upper(), parts.path or "/", query, {k.lower(): v for k, v in headers.items()}, body)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), JSON_TYPE, dict(headers or {}))


@dataclass
class ApiError(Exception):
    """An error answered with Google's envelope (or a raw body, for proxy-page faults)."""

    status: int
    reason: str
    message: str = ""
    domain: str = ""
    detail_message: str | None = None  # errors[0].message when Google words it differently
    location: str | None = None
    location_type: str | None = None
    retry_after: float | None = None
    raw_body: str | None = None

    def __post_init__(self) -> None:
        self.message = self.message or _DEFAULT_MESSAGES.get(self.reason, self.reason)
        self.domain = self.domain or ("usageLimits" if self.reason in _USAGE_LIMIT_REASONS else "global")
        super().__init__(f"{self.status} {self.reason}: {self.message}")

    def envelope(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "message": self.detail_message or self.message,
            "domain": self.domain,
            "reason": self.reason,
        }
        if self.location:
            item.update(location=self.location, locationType=self.location_type or "parameter")
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [item],
                "status": _STATUS_NAMES.get(self.status, "UNKNOWN"),
            }
        }

    def to_response(self) -> Response:
        headers = {"Retry-After": _format_seconds(self.retry_after)} if self.retry_after is not None else {}
        if self.raw_body is None:
            return Response.json(self.status, self.envelope(), headers)
        looks_html = self.raw_body.lstrip().startswith("<")
        content_type = "text/html; charset=UTF-8" if looks_html else JSON_TYPE
        return Response(self.status, self.raw_body.encode("utf-8"), content_type, headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def bad_request(message: str = "Bad Request") -> ApiError:
    return ApiError(400, "badRequest", message)


def invalid_input(message: str = "Invalid Input") -> ApiError:
    return ApiError(400, "invalid", message)


def not_found(key_name: str) -> ApiError:
    return ApiError(404, "notFound", f"Resource Not Found: {key_name}")


def invalid_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, "invalidParameter", message, location=name, location_type="parameter")
