"""`dirsync emulator`: serve a synthetic directory through the Directory API emulator."""

from __future__ import annotations

import argparse

from dirsync_pipeline.emulator.server import serve_forever


def register(subcommands: argparse._SubParsersAction) -> None:
    emulator = subcommands.add_parser("emulator", help="serve a synthetic directory through the Directory API emulator")
    emulator.add_argument("--users", type=int, default=2000)
    emulator.add_argument("--groups", type=int, default=150)
    emulator.add_argument("--port", type=int, default=8085)
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--seed", type=int, default=42)
    emulator.add_argument("--latency-ms", type=float, default=0.0,
                          help="each API request is answered this long after it arrives (or when ready, if later)")
    emulator.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    emulator.add_argument("--rate-limit-qps", type=float, default=None, help="answer 429 above this rate")
    emulator.add_argument("--directory-file", help="serve this saved directory (JSON) instead of generating one")
    emulator.set_defaults(command=cmd_emulator)


def cmd_emulator(args: argparse.Namespace) -> int:
    serve_forever(
        users=args.users, groups=args.groups, port=args.port, seed=args.seed, host=args.host,
        latency_ms=args.latency_ms, error_rate=args.error_rate, rate_limit_qps=args.rate_limit_qps,
        directory_file=args.directory_file,
    )
    return 0
