"""An admin's consent, the installed-app way: browser -> Google -> loopback -> a refresh token on disk.

This is the "authorize with an admin account, grant read-only permissions" step of connecting a
Workspace, for organisations that would rather not create a service account with domain-wide
delegation. Only the two read-only directory scopes are requested. The refresh token is written
with mode 0600 and is never printed, logged or put in an exception.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from google_auth_oauthlib.flow import InstalledAppFlow, WSGITimeoutError
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from dirsync_pipeline.google.auth import READONLY_SCOPES
from dirsync_pipeline.google.errors import AuthorizationError

PROMPT = (
    "Open this URL in a browser signed in as a Google Workspace admin, review the two read-only permissions "
    "and allow them:\n\n    {url}\n"
)
SUCCESS_PAGE = "dirsync is authorized (read-only). You can close this tab and return to the terminal."
CLIENT_HELP = (
    "create one in Google Cloud console > APIs & Services > Credentials > Create credentials > OAuth client ID "
    "> Application type: Desktop app, then download its JSON"
)


@dataclass(frozen=True)
class Authorization:
    """What was saved: where, for which scopes and (if known) which admin; deliberately no token."""

    token_file: Path
    scopes: tuple[str, ...]
    account: str | None


def authorize(
    client_secrets: Path, token_file: Path, *, port: int = 0, open_browser: bool = True,
    admin: str | None = None, timeout_seconds: int = 300,
) -> Authorization:
    """Run the consent flow and save the resulting authorized-user credentials to ``token_file``.

    ``port`` is the loopback port Google redirects to (0: any free one; fix it to forward it over SSH
    when the browser runs elsewhere). ``admin`` pre-selects the account on Google's screen (login_hint)
    and is recorded so ``dirsync check`` can name who authorized.
    """
    flow = _flow(client_secrets)
    try:
        credentials = flow.run_local_server(
            host="localhost", port=port, open_browser=open_browser, authorization_prompt_message=PROMPT,
            success_message=SUCCESS_PAGE, timeout_seconds=timeout_seconds,
            access_type="offline",  # without it Google returns no refresh token
            prompt="consent",  # a re-authorization must yield a new refresh token, not only an access token
            **({"login_hint": admin} if admin else {}),
        )
    except WSGITimeoutError:
        raise AuthorizationError(
            f"no answer from the browser within {timeout_seconds} s; run the command again and finish the consent "
            "(if the browser runs on another machine, forward the port: ssh -L PORT:localhost:PORT, with --port PORT)"
        ) from None
    except OAuth2Error as exc:
        raise AuthorizationError(
            f"Google did not grant access ({exc.error}); sign in as a Workspace admin and choose Allow"
        ) from None
    except Warning as exc:  # oauthlib raises (not warns) when fewer scopes were granted than asked
        missing = sorted(set(READONLY_SCOPES) - set(getattr(exc, "new_scope", None) or ()))
        raise AuthorizationError(
            f"the consent granted only part of the access: missing {', '.join(missing)}; run again and leave every "
            "permission ticked on Google's screen"
        ) from None
    if not credentials.refresh_token:
        raise AuthorizationError("Google returned no refresh token; revoke dirsync's access in the account's "
                                 "security settings (Third-party apps) and authorize again")
    info = {
        "type": "authorized_user",
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "refresh_token": credentials.refresh_token,
        "token_uri": credentials.token_uri,
        "account": admin or "",
    }
    write_private_json(token_file, info)
    return Authorization(token_file, tuple(READONLY_SCOPES), admin)


def _flow(client_secrets: Path) -> InstalledAppFlow:
    if not client_secrets.is_file():
        raise AuthorizationError(f"OAuth client file {client_secrets} not found; {CLIENT_HELP}")
    try:
        config = json.loads(client_secrets.read_text())
    except (ValueError, OSError):
        raise AuthorizationError(f"{client_secrets} is not an OAuth client JSON file; {CLIENT_HELP}") from None
    if not isinstance(config, dict) or "installed" not in config:
        kind = "a Web application client" if isinstance(config, dict) and "web" in config else "not an OAuth client"
        raise AuthorizationError(f"{client_secrets} is {kind}; the consent flow needs a Desktop app client: {CLIENT_HELP}")
    return InstalledAppFlow.from_client_config(config, scopes=list(READONLY_SCOPES))


def write_private_json(path: Path, payload: dict) -> None:
    """Write ``payload`` so that no other user can ever read it, and no reader sees half a file.

    The temporary file is created 0600 (not chmod-ed after the fact) and renamed over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
