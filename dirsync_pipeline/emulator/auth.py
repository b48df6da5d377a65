"""A fake OAuth2 server for google-auth: consent screen, token endpoint, and the tokens it issued.

It understands the grants dirsync uses: service-account JWT bearer with domain-wide
delegation, an admin's consent (installed-app authorization code with PKCE) and the
refresh token that consent yields. It records who asked for which scopes, never the
assertion, code or tokens themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .faults import FaultPlan
from .wire import Request, Response

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_TOKEN = "refresh_token"
AUTHORIZATION_CODE = "authorization_code"
TOKEN_LIFETIME_S = 3600
CONSENT_PATH = "/o/oauth2/auth"  # Google's authorization endpoint path (accounts.google.com)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# The scopes each method accepts, from the Directory discovery document (revision 20261104).
_USER = "https://www.googleapis.com/auth/admin.directory.user"
_GROUP = "https://www.googleapis.com/auth/admin.directory.group"
ENDPOINT_SCOPES = {
    "users.list": frozenset({_USER, f"{_USER}.readonly", "https://www.googleapis.com/auth/cloud-platform"}),
    "users.get": frozenset({_USER, f"{_USER}.readonly"}),
    "groups.list": frozenset({_GROUP, f"{_GROUP}.readonly"}),
    "groups.get": frozenset({_GROUP, f"{_GROUP}.readonly"}),
    "members.list": frozenset({_GROUP, f"{_GROUP}.readonly", f"{_GROUP}.member", f"{_GROUP}.member.readonly"}),
}

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

    def allows(self, endpoint: str) -> bool:
        """Whether the token's scopes cover the API method (Google answers 403 otherwise)."""
        return not ENDPOINT_SCOPES.get(endpoint, frozenset()).isdisjoint(self.scopes)


@dataclass(frozen=True)
class Consent:
    """What an admin approved on the consent screen; an authorization code and its refresh token carry it."""

    client_id: str
    scopes: tuple[str, ...]
    account: str | None
    redirect_uri: str
    code_challenge: str
    offline: bool  # access_type=offline: only then does Google hand out a refresh token


class TokenIssuer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}
        self._requests: list[dict[str, Any]] = []
        self._codes: dict[str, Consent] = {}
        self._refresh_tokens: dict[str, Consent] = {}

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

    def consent(self, request: Request, faults: FaultPlan) -> Response:
        """Google's consent screen, answered at once as the admin would: redirect back with a code.

        The admin keeps ``faults.consent_scopes`` ticked (all by default) and is ``login_hint`` or
        ``faults.consent_account``. Unticking every scope is a refusal (``error=access_denied``).
        """
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if query.get("response_type") != "code" or not query.get("client_id") or not _is_loopback(redirect_uri):
            return Response(400, b"Error 400: invalid_request", "text/html; charset=UTF-8")
        wanted = faults.consent_scopes
        granted = tuple(s for s in query.get("scope", "").split() if wanted is None or s in wanted)
        params = {"state": query.get("state", "")}
        if granted:
            code = "emu-code-" + secrets.token_urlsafe(16)
            consent = Consent(
                query["client_id"], granted, query.get("login_hint") or faults.consent_account, redirect_uri,
                query.get("code_challenge", ""), query.get("access_type") == "offline",
            )
            with self._lock:
                self._codes[code] = consent
            params.update(code=code, scope=" ".join(granted))
        else:
            params["error"] = "access_denied"
        return Response(302, b"", "text/html; charset=UTF-8", {"Location": f"{redirect_uri}?{urlencode(params)}"})

    def handle(self, request: Request, faults: FaultPlan) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        form.setdefault("client_id", _basic_auth_user(request.headers.get("authorization")))
        try:
            grant, consent = self._parse(form)
        except ValueError as exc:
            return _oauth_error(400, *exc.args)
        with self._lock:
            self._requests.append(grant.as_record())
        refusal = self._refusal(faults) or _delegation_refusal(grant, faults)
        if refusal is not None:
            return refusal
        token = "emu-" + secrets.token_urlsafe(24)
        answer = {"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer",
                  "scope": " ".join(grant.scopes)}
        with self._lock:
            self._grants[token] = grant
            if consent is not None and consent.offline:
                answer["refresh_token"] = "emu-refresh-" + secrets.token_urlsafe(24)
                self._refresh_tokens[answer["refresh_token"]] = consent
        return Response.json(200, answer)

    def _parse(self, form: dict[str, str]) -> tuple[Grant, Consent | None]:
        """The grant asked for, and the consent behind it when the grant redeems an authorization code."""
        grant_type = form.get("grant_type", "")
        if grant_type == AUTHORIZATION_CODE:
            with self._lock:
                consent = self._codes.pop(form.get("code", ""), None)  # a code is good for one exchange
            if consent is None or (consent.client_id, consent.redirect_uri) != (form.get("client_id"), form.get("redirect_uri")):
                raise ValueError("invalid_grant", "Malformed auth code.")
            if consent.code_challenge and _s256(form.get("code_verifier", "")) != consent.code_challenge:
                raise ValueError("invalid_grant", "Invalid code verifier.")
            return Grant(grant_type, consent.scopes, consent.account, consent.client_id), consent
        if grant_type == REFRESH_TOKEN:
            with self._lock:
                consent = self._refresh_tokens.get(form.get("refresh_token", ""))
            if consent is not None:  # issued here: never more than the admin consented to
                asked = form.get("scope", "").split()
                scopes = tuple(s for s in consent.scopes if not asked or s in asked)
                if not scopes:
                    raise ValueError("invalid_scope")
                return Grant(grant_type, scopes, consent.account, consent.client_id), None
        return _parse_grant(form), None

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


def _delegation_refusal(grant: Grant, faults: FaultPlan) -> Response | None:
    """Domain-wide delegation: every scope a service account asks for must be in its Admin console entry."""
    allowed = faults.delegated_scopes
    if grant.grant_type != JWT_BEARER or not grant.subject or allowed is None or set(grant.scopes) <= allowed:
        return None
    faults.record("401")
    return _oauth_error(401, "unauthorized_client")


def _basic_auth_user(authorization: str | None) -> str:
    """The client id of HTTP Basic client authentication, which OAuth clients may use instead of the form."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(credentials).decode("utf-8").split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _is_loopback(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.netloc.rsplit(":", 1)[0] in _LOOPBACK_HOSTS


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


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
