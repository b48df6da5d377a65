"""Credentials for the four ways a connection authenticates, always with read-only scopes."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import google.auth
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from dirsync_pipeline.config import CredentialsConfig
from dirsync_pipeline.google.errors import AuthorizationError

READONLY_SCOPES = (
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
)

log = logging.getLogger(__name__)


def build_credentials(config: CredentialsConfig) -> Credentials:
    """Credentials for ``config``; raises AuthorizationError naming the file and the fix, never its content."""
    if config.type == "none":
        return AnonymousCredentials()
    if config.type == "adc":
        return _application_default(config.subject)
    if config.env is not None:
        return _from_environment(config)
    assert config.file is not None  # guaranteed by CredentialsConfig
    if config.type == "authorized_user" and not config.file.exists():
        raise AuthorizationError(
            f"no authorized-user token at {config.file} yet: an admin of the Workspace must run "
            "`dirsync authorize --connection <id> --client-secrets <client.json>` once"
        )
    warn_if_readable_by_others(config.file)
    try:
        if config.type == "service_account":
            return service_account.Credentials.from_service_account_file(
                str(config.file), scopes=list(READONLY_SCOPES), subject=config.subject
            )
        return _authorized_user(config.file)
    except (ValueError, KeyError, OSError) as exc:
        kind = "service account key" if config.type == "service_account" else "authorized-user token"
        raise AuthorizationError(
            f"{config.file} is not a usable {kind} JSON file ({type(exc).__name__}); download a fresh one "
            f"and point credentials.file at it"
        ) from None


def _from_environment(config: CredentialsConfig) -> Credentials:
    """The JSON key held by the environment variable ``config.env`` (named in errors, never its value)."""
    kind = "service account key" if config.type == "service_account" else "authorized-user token"
    text = os.environ.get(config.env or "")
    if not text:
        raise AuthorizationError(f"credentials.env names {config.env}, which is not set in this process's "
                                 f"environment; set it to the {kind} JSON (e.g. from a Kubernetes secret)")
    try:
        info = json.loads(text)
        if config.type == "service_account":
            return service_account.Credentials.from_service_account_info(
                info, scopes=list(READONLY_SCOPES), subject=config.subject)
        return _authorized_user_info(info)
    except (ValueError, KeyError) as exc:
        raise AuthorizationError(
            f"environment variable {config.env} does not hold a usable {kind} JSON ({type(exc).__name__}); "
            "set it to the whole JSON key"
        ) from None


def _authorized_user(path: Path) -> Credentials:
    return _authorized_user_info(json.loads(path.read_text()))


def _authorized_user_info(info: dict) -> Credentials:
    """Refresh-token credentials; a ``token_uri`` in the key is honoured (google-auth ignores it)."""
    credentials = user_credentials.Credentials.from_authorized_user_info(info, scopes=list(READONLY_SCOPES))
    return credentials.with_token_uri(info["token_uri"]) if info.get("token_uri") else credentials


def _application_default(subject: str | None) -> Credentials:
    try:
        credentials, _project = google.auth.default(scopes=list(READONLY_SCOPES))
    except DefaultCredentialsError:
        raise AuthorizationError(
            "credentials.type adc, but no Application Default Credentials were found; set "
            "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
        ) from None
    if subject:
        if not hasattr(credentials, "with_subject"):
            raise AuthorizationError(
                f"credentials.type adc with a subject needs service-account ADC; {type(credentials).__name__} "
                "cannot impersonate an admin"
            )
        credentials = credentials.with_subject(subject)
    return credentials


def loose_permissions(path: Path) -> int | None:
    """The file's mode when group or others may access it (a key file must be 0600), else None."""
    mode = path.stat().st_mode & 0o777
    return mode if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def warn_if_readable_by_others(path: Path) -> bool:
    """Key files hold secrets: warn (do not fail) when group or others may read them."""
    mode = loose_permissions(path)
    if mode is not None:
        log.warning("credentials file %s is readable by other users (mode %o); run: chmod 600 %s", path, mode, path)
    return mode is not None
