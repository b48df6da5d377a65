"""The emulator's OAuth server behaves like Google's where dirsync's diagnosis depends on it."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.google.auth import READONLY_SCOPES
from tests.oauth import consent, exchange


@pytest.fixture
def emulator():
    with DirectoryEmulator(generate_directory(users=20, groups=4, seed=1, domain="acme.test"), require_auth=True) as running:
        yield running


def test_code_is_single_use_and_bound_to_the_pkce_verifier(emulator):
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    answer = consent(emulator, code_challenge=challenge, code_challenge_method="S256", access_type="offline")
    assert answer["state"] == ["xyz"] and answer["scope"] == [" ".join(READONLY_SCOPES)]
    code = answer["code"][0]
    assert exchange(emulator, code, code_verifier="w" * 50)[1]["error"] == "invalid_grant"
    code = consent(emulator, code_challenge=challenge, access_type="offline")["code"][0]
    status, token = exchange(emulator, code, code_verifier=verifier)
    assert status == 200 and token["refresh_token"].startswith("emu-refresh-") and token["scope"].split() == list(READONLY_SCOPES)
    assert exchange(emulator, code, code_verifier=verifier)[0] == 400  # already redeemed


def test_refresh_token_only_with_offline_access(emulator):
    status, token = exchange(emulator, consent(emulator)["code"][0])
    assert status == 200 and "refresh_token" not in token


def test_api_refuses_a_token_without_the_scope_it_needs(emulator):
    emulator.faults.consent_scopes = frozenset({READONLY_SCOPES[0]})
    _status, token = exchange(emulator, consent(emulator, access_type="offline")["code"][0])
    credentials = Credentials(None, refresh_token=token["refresh_token"], client_id="cid", client_secret="s",
                              token_uri=emulator.token_uri, scopes=list(READONLY_SCOPES))
    service = build("admin", "directory_v1", credentials=credentials, static_discovery=True, cache_discovery=False,
                    client_options={"api_endpoint": emulator.url})
    assert service.users().list(customer="my_customer", maxResults=1).execute()["users"]
    assert credentials.granted_scopes == [READONLY_SCOPES[0]]  # refresh never widens the consent
    with pytest.raises(HttpError) as refused:
        service.groups().list(customer="my_customer", maxResults=1).execute()
    error = json.loads(refused.value.content)["error"]
    assert (error["code"], error["errors"][0]["reason"]) == (403, "insufficientPermissions")
    assert error["message"] == "Request had insufficient authentication scopes."


def test_consent_screen_rejects_a_non_loopback_redirect(emulator):
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "cid", "redirect_uri": "https://evil.test/",
                                    "scope": READONLY_SCOPES[0]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{emulator.auth_uri}?{query}")
    assert refused.value.code == 400
