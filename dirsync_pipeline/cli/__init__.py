"""`dirsync`: the command line. Each command lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dirsync", description="Google Workspace directory sync on Dagster.")
    subcommands = parser.add_subparsers(required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subcommands)
    return parser
