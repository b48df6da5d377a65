"""`dirsync`: the command line. Each command lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

from dirsync_pipeline.cli import authorize, check, emulator, explain, groups, remap, sync
from dirsync_pipeline.config import ConfigError
from dirsync_pipeline.google.errors import DirectoryError

COMMAND_MODULES = (sync, groups, emulator, remap, explain, authorize, check)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.command(args)
    except (ConfigError, DirectoryError) as exc:
        print(f"dirsync: {exc}", file=sys.stderr)
        return 2


def run() -> int:
    """The `dirsync` process (console script and ``python -m``): ``main``, its imports frozen, and a quick exit.

    The imports live until exit, so their objects are frozen before ``main`` (cli/heap.py). At exit the
    interpreter frees objects one by one and its final collections walk the heap: ~0.5 s after a bare
    import and ~1 s after a sync. Everything dirsync opened is closed by then (the run's DuckDB
    connection and Dagster instance, the emulators), and atexit handlers and the flush of stdout/stderr
    still run; so the whole heap is frozen, and the final collections skip it. Not in ``main``, which
    tests call in their own process.
    """
    gc.freeze()
    code = main()
    gc.freeze()
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dirsync", description="Google Workspace directory sync on Dagster.")
    subcommands = parser.add_subparsers(required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subcommands)
    return parser
