"""An admin's consent against the emulator's OAuth server, done by hand as a browser and an app would."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from dirsync_pipeline.emulator import DirectoryEmulator
from dirsync_pipeline.google.auth import READONLY_SCOPES

REDIRECT = "http://127.0.0.1:9/"  # never contacted: the redirect is read, not followed


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib's signature
        return None


def consent(emulator: DirectoryEmulator, **params: str) -> dict[str, list[str]]:
    """Open the consent URL; returns the query Google appends to the app's redirect URI."""
    query = {"response_type": "code", "client_id": "cid", "redirect_uri": REDIRECT, "scope": " ".join(READONLY_SCOPES),
             "state": "xyz", **params}
    try:
        urllib.request.build_opener(_NoRedirect).open(f"{emulator.auth_uri}?{urllib.parse.urlencode(query)}")
    except urllib.error.HTTPError as answer:
        assert answer.code == 302, answer.code
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT)
        return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    raise AssertionError("the consent screen did not redirect")


def exchange(emulator: DirectoryEmulator, code: str, **form: str) -> tuple[int, dict]:
    """Redeem an authorization code at the token endpoint: (HTTP status, JSON answer)."""
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "client_id": "cid",
                                   "client_secret": "s", "redirect_uri": REDIRECT, **form}).encode()
    try:
        with urllib.request.urlopen(emulator.token_uri, data=body) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
