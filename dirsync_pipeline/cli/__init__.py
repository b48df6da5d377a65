"""`dirsync`: the command line. Each command lives in its own module and registers itself here.

Only the module of the command being run is imported: the others pull in what it does not need (the
OAuth consent flow of ``authorize`` alone is ~200 modules, ~60 ms of every ``dirsync sync``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from dirsync_pipeline.config import ConfigError
from dirsync_pipeline.google.errors import DirectoryError
from dirsync_pipeline.registry import RegistryError

# Command -> the module (of this package) that registers and runs it, in the order `dirsync --help` lists them.
COMMAND_MODULES = {"sync": "sync", "demo": "sync", "connections": "connections", "query": "query",
                   "groups": "groups", "emulator": "emulator", "remap": "remap", "explain": "explain",
                   "prune": "prune", "authorize": "authorize", "check": "check"}


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parse_args(argv))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    return build_parser(argv[0] if argv else None).parse_args(argv)


def execute(args: argparse.Namespace) -> int:
    """Run the parsed command; a bad config, registry or Google error is exit code 2, with what to fix."""
    try:
        return args.command(args)
    except (ConfigError, DirectoryError, RegistryError) as exc:
        print(f"dirsync: {exc}", file=sys.stderr)
        return 2


def run() -> int:
    """The `dirsync` process (console script and ``python -m``): ``main``, its imports frozen, and a quick exit.

    Parsing imports the command's module, and with it nearly everything the process will hold until
    exit: frozen, those objects are skipped by the command's garbage collections (cli/heap.py). At exit
    the interpreter frees objects one by one and its final collections walk the heap: ~0.5 s after a
    bare import and ~1 s after a sync. Everything dirsync opened is closed by then (the run's DuckDB
    connection and Dagster instance, the emulators), and atexit handlers and the flush of stdout/stderr
    still run; so the whole heap is frozen, and the final collections skip it. Not in ``main``, which
    tests call in their own process. Collections are off while parsing imports: the ~1M objects it
    creates all live on, so collecting among them only costs time (~0.1 s).
    """
    gc.disable()
    try:
        args = parse_args()
    finally:
        gc.enable()
    gc.freeze()
    try:
        code = execute(args)
        sys.stdout.flush()  # inside the try: a reader that left shows here, not at the interpreter's exit
    except BrokenPipeError:
        code = stop_writing_to_closed_stdout()
    gc.freeze()
    return code


def stop_writing_to_closed_stdout() -> int:
    """The reader of stdout is gone (``dirsync groups | head -1`` got its line): end quietly, as a command the
    shell's SIGPIPE stops would, with 128 + SIGPIPE. stdout goes to /dev/null so the exit's flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone when it is one, else of every command (for help and usage errors)."""
    parser = argparse.ArgumentParser(prog="dirsync", description="Google Workspace directory sync on Dagster.")
    subcommands = parser.add_subparsers(required=True, metavar="COMMAND")
    modules = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else list(dict.fromkeys(COMMAND_MODULES.values()))
    for module in modules:
        importlib.import_module(f"{__name__}.{module}").register(subcommands)
    return parser
