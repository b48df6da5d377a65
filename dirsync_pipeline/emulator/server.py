"""The emulator's HTTP front: a threaded stdlib server speaking HTTP/1.1 keep-alive.

httplib2 (under googleapiclient) reuses connections, so every answer carries a
Content-Length; handler threads are daemons so a stuck client never blocks exit.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from .directory import Directory, generate_directory
from .faults import FaultPlan
from .service import DirectoryService, RequestLogEntry
from .wire import ApiError, Request

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for delayed ACKs
    server: _Server

    def do_GET(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        self._respond()

    def _respond(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request.parse(self.command, self.path, dict(self.headers.items()), body)
        try:
            response = self.server.service.handle(request)
        except Exception:  # the server boundary: answer like Google's 500 instead of dropping the socket
            log.exception("emulator failed on %s %s", self.command, self.path)
            response = ApiError(500, "internalError").to_response()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr lines; request_log() records requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's backlog of 5 makes the kernel drop the handshakes of a 32-thread client's first burst,
    # which then wait about a second for a retransmission; Google accepts them at once.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], service: DirectoryService) -> None:
        self.service = service
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid keep-alive is normal; only real failures get a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Cut kept-alive connections, so a stopped emulator really stops answering."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class DirectoryEmulator:
    """A local Admin SDK Directory API that the real google-api-python-client talks to."""

    def __init__(
        self,
        directory: Directory,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        require_auth: bool = False,
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._service = DirectoryService(directory, faults or FaultPlan(), require_auth)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----------------------------------------------------------------

    def start(self) -> DirectoryEmulator:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = _Server((self.host, self.port), self._service)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"directory-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> DirectoryEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The api_endpoint to hand to googleapiclient, e.g. http://127.0.0.1:PORT/."""
        if self._server is None:
            raise RuntimeError("start() the emulator before asking for its url")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    @property
    def token_uri(self) -> str:
        return self.url + "token"

    @property
    def auth_uri(self) -> str:
        """The consent screen (Google's accounts.google.com/o/oauth2/auth), approved at once."""
        return self.url + "o/oauth2/auth"

    # ----- knobs and observations ----------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        return self._service.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._service.faults = plan

    @property
    def require_auth(self) -> bool:
        return self._service.require_auth

    @require_auth.setter
    def require_auth(self, required: bool) -> None:
        self._service.require_auth = required

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        """One record per token request: grant_type, scopes, subject, client (no secrets)."""
        return self._service.tokens.requests

    @property
    def request_log(self) -> list[RequestLogEntry]:
        """The last 10,000 (method, path, query) triples, batch parts included."""
        return self._service.request_log()

    def request_counts(self) -> dict[str, int]:
        return self._service.request_counts()

    def reset_counts(self) -> None:
        self._service.reset_counts()


def serve_forever(
    users: int,
    groups: int,
    port: int,
    seed: int = 42,
    host: str = "127.0.0.1",
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    rate_limit_qps: float | None = None,
    latency_max_ms: float | None = None,
    directory_file: str | None = None,
    require_auth: bool = False,
) -> None:
    """Run an emulator in the foreground (for `dirsync emulator`) until Ctrl-C or SIGTERM."""
    directory = (
        Directory.from_json(Path(directory_file).read_text(encoding="utf-8"))
        if directory_file
        else generate_directory(users, groups, seed=seed)
    )
    faults = FaultPlan(latency_ms=latency_ms, latency_max_ms=latency_max_ms, error_rate=error_rate,
                       rate_limit_qps=rate_limit_qps, seed=seed)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DirectoryEmulator(directory, host=host, port=port, faults=faults, require_auth=require_auth) as emulator:
        print(
            f"Directory API emulator on {emulator.url} ({len(directory.active_users())} users, "
            f"{len(directory.groups)} groups, customer {directory.customer_id})",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
