"""A proxy between dirsync and the emulator that corrupts Google's answers, as a broken network or an attacker would.

dirsync's real client talks to the proxy over HTTP exactly as it talks to Google; the proxy forwards every
request to the emulator and lets a test rewrite the JSON answer of the list calls it names. Batch requests
pass through untouched (a test that corrupts members.list sets ``batch_size: 1``).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

DIRECTORY_PREFIX = "/admin/directory/v1/"


@dataclass
class Exchange:
    """One list call going through the proxy: what was asked, and the answer the test may rewrite."""

    endpoint: str  # users.list, groups.list or members.list
    query: dict[str, str]  # as dirsync sent it (a token the proxy invented included)
    page: int  # how many pages of this endpoint (and group) the proxy has answered before this one
    answer: dict


Rewrite = Callable[[Exchange], dict | None]  # the answer to send instead, or None to send it unchanged


@dataclass
class CorruptingProxy:
    upstream: str
    rewrite: Rewrite = lambda exchange: None
    # A token the proxy invents -> the query to send upstream instead (a chain the emulator never handed out).
    invented_tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    pages: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def invent_token(self, token: str, upstream_query: dict[str, str]) -> str:
        """Hand out ``token``; when dirsync asks for it, the proxy asks the emulator for ``upstream_query``."""
        self.invented_tokens[token] = upstream_query
        return token

    @contextmanager
    def running(self) -> Iterator[CorruptingProxy]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                proxy._forward(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                proxy._forward(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query))
        endpoint = _list_endpoint(url.path)
        upstream_query = query
        if endpoint and query.get("pageToken") in self.invented_tokens:
            upstream_query = {**query, **self.invented_tokens[query["pageToken"]]}
            upstream_query = {k: v for k, v in upstream_query.items() if v is not None}
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) if method == "POST" else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length", "accept-encoding")}
        request = urllib.request.Request(self.upstream.rstrip("/") + url.path + ("?" + urlencode(upstream_query) if upstream_query else ""),
                                         data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, reply_headers, content = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, reply_headers, content = error.code, dict(error.headers), error.read()
        if endpoint and status == 200:
            content = self._rewritten(endpoint, url.path, query, content)
        handler.send_response(status)
        for name, value in reply_headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def _rewritten(self, endpoint: str, path: str, query: dict[str, str], content: bytes) -> bytes:
        with self._lock:
            page = self.pages.get((endpoint, path), 0)
            self.pages[(endpoint, path)] = page + 1
        replaced = self.rewrite(Exchange(endpoint, query, page, json.loads(content)))
        return content if replaced is None else json.dumps(replaced).encode()


def _list_endpoint(path: str) -> str | None:
    if not path.startswith(DIRECTORY_PREFIX):
        return None
    parts = path[len(DIRECTORY_PREFIX):].split("/")
    if parts == ["users"]:
        return "users.list"
    if parts == ["groups"]:
        return "groups.list"
    if len(parts) == 3 and parts[0] == "groups" and parts[2] == "members":
        return "members.list"
    return None
