"""Turn Google's failures into errors that say what is wrong and how to fix it.

Google reports authorization problems in two places: the token endpoint (``RefreshError``, before any
API call) and the API itself (``HttpError`` 401/403). Each has a few well-known causes; naming the cause
is what saves an admin an afternoon. Messages never include tokens, keys or response bodies verbatim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError

SCOPES_HELP = (
    "https://www.googleapis.com/auth/admin.directory.user.readonly,"
    "https://www.googleapis.com/auth/admin.directory.group.readonly"
)


class DirectoryError(Exception):
    """Base of every error dirsync raises while reading the directory."""


class AuthorizationError(DirectoryError):
    """Credentials, delegation or admin rights are wrong: retrying cannot help, a person must act."""


class DirectoryApiError(DirectoryError):
    """The API refused a request for a reason that is not transient (bad request, unknown customer...)."""


class GroupNotFoundError(DirectoryApiError):
    """A group vanished between ``groups.list`` and ``members.list`` (deleted mid-sync)."""


class MalformedResponseError(DirectoryError):
    """An answer that is not what the Directory API documents (HTML, truncated JSON, wrong types)."""


class IncompleteResponseError(DirectoryError):
    """Google said success but returned less than it counts itself: never publish such a sync."""


class FetchStoppedError(DirectoryError):
    """The client was stopped (the run interrupted, or another part of the fetch failed) before this request."""


class RetriesExhaustedError(DirectoryError):
    """A transient failure that outlasted the retry policy's attempts or time budget."""


@dataclass(frozen=True)
class ApiErrorInfo:
    status: int
    reason: str
    message: str


def api_error_info(error: HttpError) -> ApiErrorInfo:
    """Read status, ``errors[0].reason`` and message from Google's JSON error body.

    ``HttpError.reason`` is the *message*, not the machine reason, so parse the body ourselves. A body
    that is not Google JSON (an HTML page from a proxy) keeps its status with reason ``nonJsonError``.
    """
    status = int(error.resp.status)
    try:
        body = json.loads(error.content.decode("utf-8", errors="replace"))
        detail = body["error"]
        errors = detail.get("errors") or [{}]
        reason = errors[0].get("reason") or detail.get("status") or "unknown"
        return ApiErrorInfo(status, reason, str(detail.get("message", ""))[:300])
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiErrorInfo(status, "nonJsonError", "the answer was not Google's JSON error body")


def explain_http_error(error: HttpError, *, request: str, subject: str | None) -> DirectoryError:
    info = api_error_info(error)
    who = f"the admin {subject}" if subject else "the authenticated principal"
    if info.status == 401:
        return AuthorizationError(
            f"{request}: Google answered 401 ({info.reason}): the request carried no valid access token. "
            "Check the connection's credentials (type and file); an authorized_user token may be revoked: "
            "run the consent flow again."
        )
    if info.status == 403 and info.reason == "accessNotConfigured":
        return AuthorizationError(
            f"{request}: the Admin SDK API is not enabled in the credentials' Google Cloud project. "
            "Enable admin.googleapis.com in that project (APIs & Services > Library > Admin SDK API), wait a "
            "few minutes, and sync again."
        )
    if info.status == 403 and info.reason == "insufficientPermissions":
        return AuthorizationError(
            f"{request}: the access token lacks a scope this call needs (403 insufficientPermissions). Grant "
            f"both {SCOPES_HELP}: in the domain-wide delegation entry, or by running `dirsync authorize` again "
            "and leaving every permission ticked. `dirsync check` names the missing scope."
        )
    if info.status == 403 and info.reason in ("forbidden", "domainCannotUseApis"):
        return AuthorizationError(
            f"{request}: Google answered 403 'Not Authorized to access this resource/api': {who} is not a "
            "Google Workspace admin with directory read rights (or no `subject` is set for a service "
            "account). Set credentials.subject to a super admin, or give that admin a role with Users > "
            "Read and Groups > Read privileges."
        )
    if info.status == 404:
        return GroupNotFoundError(f"{request}: not found (404 {info.reason}): {info.message}")
    return DirectoryApiError(f"{request}: Google answered {info.status} {info.reason}: {info.message}")


def explain_refresh_error(error: RefreshError, *, subject: str | None) -> AuthorizationError:
    """Classify a token-endpoint failure by its OAuth error code (first word of the message)."""
    text = str(error.args[0]) if error.args else ""
    code = text.split(":", 1)[0].strip()
    if code == "unauthorized_client":
        return AuthorizationError(
            "Google refused to issue a token (unauthorized_client): domain-wide delegation is not set up for "
            "this service account's client id with these scopes. In the Admin console go to Security > Access "
            "and data control > API controls > Manage Domain Wide Delegation, add the service account's "
            f"numeric client id with the scopes {SCOPES_HELP} (a new entry can take up to 24 h to propagate)."
        )
    if code == "invalid_grant":
        return AuthorizationError(
            f"Google refused to issue a token (invalid_grant): the subject {subject or '(none)'} is not a valid, "
            "active user of the Workspace, or the refresh token was revoked or expired. Fix credentials.subject "
            "or authorize again."
        )
    if code in ("invalid_scope", "access_denied"):
        return AuthorizationError(
            f"Google refused the requested scopes ({code}): grant exactly {SCOPES_HELP} (read-only) to this client."
        )
    return AuthorizationError(
        f"Google refused to issue a token ({code or 'unknown error'}): check the connection's credentials file "
        "and subject."
    )
