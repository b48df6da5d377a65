"""A fake OAuth2 token endpoint for google-auth, and the bearer tokens it issued.

It understands the two grants dirsync uses (service-account JWT bearer with
domain-wide delegation, and an authorized user's refresh token). It records who
asked for which scopes, never the assertion or refresh token themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .faults import FaultPlan
from .wire import Request, Response

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_TOKEN = "refresh_token"
TOKEN_LIFETIME_S = 3600

# Token-endpoint errors as Google's OAuth server words them.
TOKEN_ERRORS = {
    "unauthorized_client": (
        401,
        "Client is unauthorized to retrieve access tokens using this method, "
        "or client not authorized for any of the scopes requested.",
    ),
    "invalid_grant": (400, "Invalid email or User ID"),
    "invalid_scope": (400, "Some requested scopes were invalid."),
    "invalid_client": (401, "The OAuth client was not found."),
    "access_denied": (403, "Requested client not authorized."),
}


@dataclass(frozen=True)
class Grant:
    """What one issued access token stands for."""

    grant_type: str
    scopes: tuple[str, ...]
    subject: str | None
    client: str | None  # the service account (iss) or the OAuth client_id

    def as_record(self) -> dict[str, Any]:
        return {
            "grant_type": self.grant_type,
            "scopes": list(self.scopes),
            "subject": self.subject,
            "client": self.client,
        }


class TokenIssuer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        self._requests: list[dict[str, Any]] = []

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def grant_for(self, authorization: str | None) -> Grant | None:
        """The grant behind an `Authorization: Bearer ...` header, if we issued it."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            return self._grants.get(token.strip())

    def handle(self, request: Request, faults: FaultPlan) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            grant = _parse_grant(form)
        except ValueError as exc:
            return _oauth_error(400, *exc.args)
        with self._lock:
            self._requests.append(grant.as_record())
        refusal = self._refusal(faults)
        if refusal is not None:
            return refusal
        token = "emu-" + secrets.token_urlsafe(24)
        with self._lock:
            self._grants[token] = grant
        return Response.json(200, {"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"})

    @staticmethod
    def _refusal(faults: FaultPlan) -> Response | None:
        scripted = faults.take_scripted("token")
        if scripted is not None:
            faults.record(str(scripted.status))
            if scripted.raw_body is not None:
                return scripted.to_response()
            return _oauth_error(scripted.status, scripted.reason, scripted.message)
        if faults.token_error:
            status, description = TOKEN_ERRORS.get(faults.token_error, (400, faults.token_error))
            faults.record(str(status))
            return _oauth_error(status, faults.token_error, description)
        return None


def _parse_grant(form: dict[str, str]) -> Grant:
    grant_type = form.get("grant_type", "")
    if grant_type == JWT_BEARER:
        claims = _jwt_claims(form.get("assertion", ""))
        return Grant(grant_type, tuple(str(claims.get("scope", "")).split()), claims.get("sub"), claims.get("iss"))
    if grant_type == REFRESH_TOKEN:
        if not form.get("refresh_token"):
            raise ValueError("invalid_request", "Missing required parameter: refresh_token")
        return Grant(grant_type, tuple(form.get("scope", "").split()), None, form.get("client_id"))
    raise ValueError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")


def _jwt_claims(assertion: str) -> dict[str, Any]:
    """The JWT payload, unverified: the emulator trusts any key, as a test double should."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise ValueError(
            "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        ) from None
    if not isinstance(claims, dict):
        raise ValueError("invalid_grant", "Invalid JWT payload")
    return claims


def _oauth_error(status: int, error: str, description: str = "") -> Response:
    return Response.json(
        status, {"error": error, "error_description": description or TOKEN_ERRORS.get(error, (0, error))[1]}
    )
