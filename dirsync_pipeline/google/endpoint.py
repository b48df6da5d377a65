"""A configured api_endpoint that is not Google's and where nothing listens is a typo, not an outage.

The retry policy waits out network failures, which is right for Google's endpoints (a blip passes) and
wrong for, say, an emulator's port misspelt in the config: a sync retried for 45 s and ``dirsync check``
said to try again later. One TCP connect before the first call tells them apart at once.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from dirsync_pipeline.google.errors import DirectoryError

CONNECT_TIMEOUT_SECONDS = 5


class EndpointUnreachableError(DirectoryError):
    """Nothing answers at a configured non-Google api_endpoint: the config or the server must change."""


def is_google(api_endpoint: str) -> bool:
    host = urlsplit(api_endpoint).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def ensure_reachable(api_endpoint: str | None) -> None:
    """Connect once to a configured non-Google endpoint; raise naming it and the network error if that fails.

    None (Google's default endpoint) and Google's own hosts are left to the retry policy.
    """
    if api_endpoint is None or is_google(api_endpoint):
        return
    url = urlsplit(api_endpoint)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise EndpointUnreachableError(f"api_endpoint {api_endpoint} has no valid port: fix it in the config") from None
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        reason = str(exc) or type(exc).__name__  # e.g. "[Errno 111] Connection refused", "timed out"
        raise EndpointUnreachableError(
            f"nothing answers at api_endpoint {api_endpoint} ({reason}): check the host and port of api_endpoint "
            "in the config, or start the server it names"
        ) from None
