"""`dirsync authorize`: an admin consents in the browser; the refresh token lands in the connection's file."""

from __future__ import annotations

import argparse
from pathlib import Path

from dirsync_pipeline.cli.check import check_and_print
from dirsync_pipeline.cli.options import open_config_registry
from dirsync_pipeline.config import ConfigError
from dirsync_pipeline.google.consent import authorize


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "authorize", help="an admin grants read-only access in the browser (OAuth consent); saves a refresh token",
        description="Needs a connection with credentials {type: authorized_user, file: PATH}; writes PATH (mode "
                    "0600), then runs `dirsync check` on the connection.",
    )
    parser.add_argument("--config", help="config file (default: $DIRSYNC_CONFIG, else the embedded demo)")
    parser.add_argument("--connection", required=True, help="the connection to authorize")
    parser.add_argument("--client-secrets", required=True, type=Path,
                        help="the OAuth client JSON (Google Cloud console, client type Desktop app)")
    parser.add_argument("--admin", help="the admin account to sign in with (pre-selected, and recorded for `check`)")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL (e.g. on a server over SSH)")
    parser.add_argument("--port", type=int, default=0, help="loopback port Google redirects to (default: any free)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds to wait for the consent (default 300)")
    parser.set_defaults(command=cmd_authorize)


def cmd_authorize(args: argparse.Namespace) -> int:
    _config, registry = open_config_registry(args)
    connection = registry.connection(args.connection)
    credentials = connection.credentials
    if credentials.type != "authorized_user" or credentials.file is None:
        raise ConfigError(
            f"connection {connection.id} has credentials.type {credentials.type}; `authorize` stores an admin's "
            "consent, so set `credentials: {type: authorized_user, file: secrets/" + connection.id + "-token.json}` "
            "(or keep the service account and skip this step)"
        )
    saved = authorize(
        args.client_secrets, credentials.file, port=args.port, open_browser=not args.no_browser,
        admin=args.admin, timeout_seconds=args.timeout,
    )
    print(f"saved the refresh token to {saved.token_file} (mode 600); checking the connection:", flush=True)
    return 0 if check_and_print(connection) else 1
