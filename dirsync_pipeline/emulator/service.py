"""The emulator's request pipeline, independent of sockets.

Every API call, alone or inside a batch, goes through the same steps: route,
count, authenticate, inject faults, answer under the directory lock, apply the
`fields` mask, and render errors in Google's envelope.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import fields
from .auth import CONSENT_PATH, Grant, TokenIssuer
from .batch import handle_batch
from .directory import Directory
from .endpoints import Endpoints
from .faults import FaultPlan
from .render import GROUP_SCHEMA, GROUPS_SCHEMA, MEMBERS_SCHEMA, USER_SCHEMA, USERS_SCHEMA
from .wire import ApiError, Request, Response

_SCHEMAS = {
    "users.list": USERS_SCHEMA,
    "users.get": USER_SCHEMA,
    "groups.list": GROUPS_SCHEMA,
    "groups.get": GROUP_SCHEMA,
    "members.list": MEMBERS_SCHEMA,
}
API_ENDPOINTS = tuple(_SCHEMAS)
COUNTED_ENDPOINTS = (*API_ENDPOINTS, "token", "batch")
_API_ROOT = ["admin", "directory", "v1"]
STATS_PATH = "/_emulator/stats"  # not Google's: lets a benchmark in another process read the counters
_LOG_SIZE = 10_000

RequestLogEntry = tuple[str, str, dict[str, str]]


@dataclass(frozen=True)
class Route:
    endpoint: str  # an API endpoint name, "token", "consent", "batch", "stats" or "unknown"
    key: str = ""  # the userKey or groupKey path parameter


def route(request: Request) -> Route:
    """Map method and path to an endpoint; path segments are URL-decoded one by one."""
    segments = [unquote(s) for s in request.path.split("/") if s]
    if request.method == "POST":
        if segments == ["token"]:
            return Route("token")
        return Route("batch") if segments[:1] == ["batch"] else Route("unknown")
    if request.method == "GET" and request.path == STATS_PATH:
        return Route("stats")
    if request.method == "GET" and request.path == CONSENT_PATH:
        return Route("consent")
    if request.method != "GET" or segments[:3] != _API_ROOT:
        return Route("unknown")
    match segments[3:]:
        case ["users"]:
            return Route("users.list")
        case ["users", key]:
            return Route("users.get", key)
        case ["groups"]:
            return Route("groups.list")
        case ["groups", key]:
            return Route("groups.get", key)
        case ["groups", key, "members"]:
            return Route("members.list", key)
    return Route("unknown")


def login_required() -> ApiError:
    return ApiError(
        401,
        "required",
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        detail_message="Login Required.",
        location="Authorization",
        location_type="header",
    )


def invalid_credentials() -> ApiError:
    return ApiError(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        detail_message="Invalid Credentials",
        location="Authorization",
        location_type="header",
    )


class DirectoryService:
    def __init__(self, directory: Directory, faults: FaultPlan, require_auth: bool) -> None:
        self.directory = directory
        self.faults = faults
        self.require_auth = require_auth
        self.tokens = TokenIssuer()
        self._endpoints = Endpoints(directory)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: deque[RequestLogEntry] = deque(maxlen=_LOG_SIZE)

    # ----- statistics ----------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return {**dict.fromkeys(COUNTED_ENDPOINTS, 0), **self._counts}

    def request_log(self) -> list[RequestLogEntry]:
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests received per endpoint and faults injected per kind (429s included)."""
        return {"requests": self.request_counts(), "faults": self.faults.injected}

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()

    # ----- pipeline ------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """One HTTP request: the token endpoint, a batch, or a single API call.

        An API request (a batch counts once) is answered ``latency_ms`` (or a latency drawn up to
        ``latency_max_ms``) after it arrived, or as soon as its
        answer is ready if that takes longer. Google's latency includes Google's own work; adding the
        emulator's on top would slow every answer by this one Python process's load, which grows with the
        very concurrency a client is measured on.
        """
        arrived = time.monotonic()
        target = route(request)
        if target.endpoint == "stats":
            return Response.json(200, self.stats())
        if target.endpoint == "batch":
            self._count(request, "batch")
            response = handle_batch(request, self._handle_part)
        else:
            response = self._dispatch(request, target)
        if target.endpoint in COUNTED_ENDPOINTS and target.endpoint != "token" and (latency := self.faults.latency_seconds()):
            time.sleep(max(0.0, latency - (time.monotonic() - arrived)))
        return response

    def _handle_part(self, request: Request) -> Response:
        target = route(request)
        return self._dispatch(request, Route("unknown") if target.endpoint == "batch" else target)

    def _dispatch(self, request: Request, target: Route) -> Response:
        self._count(request, target.endpoint)
        if target.endpoint == "token":
            return self.tokens.handle(request, self.faults)
        if target.endpoint == "consent":
            return self.tokens.consent(request, self.faults)
        try:
            if target.endpoint == "unknown":
                raise ApiError(404, "notFound", "Not Found")
            faults = self.faults
            self._admit(request, target, faults)
            with self.directory.lock:
                payload = self._call(target, request.query, faults)
            # the payload is built of fresh dicts and lists: masked and encoded without holding up other requests
            return Response.json(200, fields.select(payload, request.query.get("fields"), _SCHEMAS[target.endpoint]))
        except ApiError as error:
            return error.to_response()

    def _count(self, request: Request, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1
            self._log.append((request.method, request.path, dict(request.query)))

    def _admit(self, request: Request, target: Route, faults: FaultPlan) -> None:
        """Authentication, configured refusals, then injected faults, in Google's order."""
        authorization = request.headers.get("authorization")
        grant = self.tokens.grant_for(authorization)
        if self.require_auth and grant is None:
            raise invalid_credentials() if authorization else login_required()
        refusal = _refusal(grant, faults) or _scope_refusal(grant, target)
        if refusal is not None:
            faults.record(str(refusal.status))
            raise refusal
        error = faults.next_error(target.endpoint, self._target_keys(target))
        if error is not None:
            raise error

    def _target_keys(self, target: Route) -> frozenset[str]:
        """Every name of the addressed group, so a group-scoped fault matches any of them."""
        group = self.directory.find_group(target.key) if target.endpoint == "members.list" else None
        names = [target.key, *([group.id, group.email, *group.aliases] if group else [])]
        return frozenset(name.lower() for name in names if name)

    def _call(self, target: Route, query: dict[str, str], faults: FaultPlan) -> dict[str, Any]:
        endpoints = self._endpoints
        match target.endpoint:
            case "users.list":
                return endpoints.users_list(query, faults)
            case "users.get":
                return endpoints.users_get(target.key, query)
            case "groups.list":
                return endpoints.groups_list(query, faults)
            case "groups.get":
                return endpoints.groups_get(target.key)
            case _:
                return endpoints.members_list(target.key, query, faults)


def _scope_refusal(grant: Grant | None, target: Route) -> ApiError | None:
    """A token whose scopes do not cover the method: consent or delegation granted too little."""
    if grant is None or grant.allows(target.endpoint):
        return None
    return ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.",
                    detail_message="Insufficient Permission")


def _refusal(grant: Grant | None, faults: FaultPlan) -> ApiError | None:
    if faults.api_disabled:
        return ApiError(403, "accessNotConfigured")
    subject = (grant.subject or "").lower() if grant else ""
    if subject and subject in {s.lower() for s in faults.non_admin_subjects}:
        return ApiError(403, "forbidden")
    return None
