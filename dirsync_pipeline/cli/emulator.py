"""`dirsync emulator`: serve a synthetic directory through the Directory API emulator."""

from __future__ import annotations

import argparse
import errno
import sys

from dirsync_pipeline.emulator.server import serve_forever


def register(subcommands: argparse._SubParsersAction) -> None:
    emulator = subcommands.add_parser(
        "emulator", help="serve a synthetic directory through the Directory API emulator",
        description="Serve a generated (or saved) directory over HTTP as Google's Directory API answers it, until "
                    "Ctrl-C. Point a connection's api_endpoint at the URL it prints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    emulator.add_argument("--users", type=int, default=2000, help="users of the generated directory")
    emulator.add_argument("--groups", type=int, default=150, help="groups of the generated directory")
    emulator.add_argument("--port", type=int, default=8085, help="port to listen on (0: any free port, printed)")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    emulator.add_argument("--seed", type=int, default=42,
                          help="seed of the generated directory and of the injected errors: same seed, same directory")
    emulator.add_argument("--latency-ms", type=float, default=0.0,
                          help="each API request is answered this long after it arrives (or when ready, if later)")
    emulator.add_argument("--latency-max-ms", type=float, default=None,
                          help="draw each request's latency uniformly from --latency-ms to this (None: no spread)")
    emulator.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    emulator.add_argument("--rate-limit-qps", type=float, default=None, help="answer 429 above this rate (None: no limit)")
    emulator.add_argument("--directory-file", help="serve this saved directory (JSON) instead of generating one")
    emulator.add_argument("--require-auth", action="store_true",
                          help="answer 401 to a request without an access token this emulator issued, as Google does "
                               "(a connection with credentials type none is refused)")
    emulator.set_defaults(command=cmd_emulator)


def cmd_emulator(args: argparse.Namespace) -> int:
    try:
        serve_forever(
            users=args.users, groups=args.groups, port=args.port, seed=args.seed, host=args.host,
            latency_ms=args.latency_ms, error_rate=args.error_rate, rate_limit_qps=args.rate_limit_qps,
            latency_max_ms=args.latency_max_ms, directory_file=args.directory_file, require_auth=args.require_auth,
        )
    except OSError as exc:
        print(f"dirsync: {cannot_serve(args, exc)}", file=sys.stderr)
        return 2
    return 0


def cannot_serve(args: argparse.Namespace, exc: OSError) -> str:
    """Why the emulator could not start, and what to change."""
    if exc.filename is not None:
        return f"--directory-file {exc.filename}: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        return (f"port {args.port} on {args.host} is already in use (another emulator?): pick another with --port, "
                "or --port 0 for any free one")
    return f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; check --host and --port"
