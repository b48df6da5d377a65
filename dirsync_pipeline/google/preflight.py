"""`dirsync check`: prove with a token and three tiny calls that a sync would work, or name the fix.

A first sync usually fails for a reason an admin fixes in minutes once it is named: no domain-wide
delegation entry (or one still propagating), a scope missing from that entry or from the consent, a
subject that is not an admin or whose role cannot read groups, the Admin SDK API disabled in the key's
Cloud project. Google's answers are terse (``unauthorized_client``, ``403 forbidden``), so every step
below turns them into the one thing to do. Nothing secret is ever printed: no token, key or body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum

import google_auth_httplib2
import httplib2
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest
import polars as pl

from dirsync_pipeline.config import ConnectionConfig
from dirsync_pipeline.google.auth import READONLY_SCOPES, build_credentials, loose_permissions
from dirsync_pipeline.google.endpoint import EndpointUnreachableError, ensure_reachable
from dirsync_pipeline.google.errors import AuthorizationError, RetriesExhaustedError, api_error_info, explain_refresh_error
from dirsync_pipeline.google.retry import ApiStats, RateLimiter, RetryPolicy, call_with_retry
from dirsync_pipeline.transforms.directory import resolve_group_keys

USER_SCOPE, GROUP_SCOPE = READONLY_SCOPES
# A check must answer in seconds: retry a blip, never wait out an outage.
PROBE_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=2.0, total_budget=10.0)
PROBE_TIMEOUT_SECONDS = 20
DWD_HELP = "Admin console > Security > Access and data control > API controls > Manage Domain Wide Delegation"


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    step: str
    detail: str


@dataclass
class Report:
    """Findings in the order they were made; a sync would work unless one of them failed."""

    connection_id: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: Status, step: str, detail: str) -> None:
        self.findings.append(Finding(status, step, detail))

    @property
    def sync_would_work(self) -> bool:
        return all(f.status is not Status.FAIL for f in self.findings)

    def render(self) -> str:
        lines = [f"connection {self.connection_id}:"]
        lines += [f"  [{f.status.value:>4}] {f.step}: {f.detail}" for f in self.findings]
        lines.append(
            "  => a sync would work" if self.sync_would_work
            else "  => a sync would FAIL: fix the FAIL lines above, then run `dirsync check` again"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class Principal:
    """Who the calls run as, in the words an admin uses, and the key's client id for delegation."""

    admin: str
    client_id: str | None = None


def check_connection(connection: ConnectionConfig, api_endpoint: str | None) -> Report:
    """Credentials, then a token, then one small call per endpoint; stops at the first blocking step."""
    report = Report(connection.id)
    credentials = _load_credentials(connection, report)
    if credentials is None:
        return report
    principal = _principal(connection)
    if _obtain_token(credentials, principal, connection, report) and _endpoint_answers(api_endpoint, report):
        _probe_endpoints(connection, credentials, api_endpoint, principal, report)
    return report


def _endpoint_answers(api_endpoint: str | None, report: Report) -> bool:
    try:
        ensure_reachable(api_endpoint)
    except EndpointUnreachableError as exc:
        report.add(Status.FAIL, "api_endpoint", str(exc))
        return False
    return True


# -- credentials and token --------------------------------------------------------------------------


def _load_credentials(connection: ConnectionConfig, report: Report) -> Credentials | None:
    config = connection.credentials
    if config.file is not None and config.file.is_file():
        mode = loose_permissions(config.file)
        if mode is not None:
            report.add(Status.WARN, "key file", f"{config.file} has mode {mode:o}, so other local users can read a "
                                                f"secret; run: chmod 600 {config.file}")
    try:
        credentials = build_credentials(config)
    except AuthorizationError as exc:
        report.add(Status.FAIL, "credentials", str(exc))
        return None
    if config.type == "service_account" and not config.subject and connection.customer == "my_customer":
        report.add(Status.WARN, "credentials", "no `subject`: the service account calls as itself, which works only "
                                              "if it holds an admin role itself, and then `customer` must be the "
                                              "customer id (C0...), not my_customer; usually set subject to an admin")
    loaded = "none: an emulator needs no credentials" if config.type == "none" else f"{config.type} credentials loaded"
    report.add(Status.OK, "credentials", loaded)
    return credentials


def _principal(connection: ConnectionConfig) -> Principal:
    config = connection.credentials
    if config.type == "service_account" and config.file is not None:
        client_id = json.loads(config.file.read_text()).get("client_id")
        return Principal(config.subject or "the service account itself", client_id)
    if config.type == "authorized_user" and config.file is not None:
        account = json.loads(config.file.read_text()).get("account")
        return Principal(account or "the admin who ran `dirsync authorize`")
    if config.type == "adc":
        return Principal(config.subject or "the Application Default Credentials' account")
    return Principal("the anonymous caller")


def _obtain_token(credentials: Credentials, principal: Principal, connection: ConnectionConfig, report: Report) -> bool:
    if isinstance(credentials, AnonymousCredentials):
        report.add(Status.OK, "token", "credentials.type none: no token (an emulator needs none)")
        return True
    try:
        credentials.refresh(_transport())
    except RefreshError as exc:
        report.add(Status.FAIL, "token", _token_refusal(exc, credentials, principal, connection))
        return False
    except TransportError as exc:
        report.add(Status.FAIL, "token", f"could not reach Google's token endpoint ({type(exc).__name__}); check the "
                                         "network, proxy and firewall between this machine and oauth2.googleapis.com")
        return False
    granted = getattr(credentials, "granted_scopes", None)
    missing = [s for s in READONLY_SCOPES if granted is not None and s not in granted]
    if missing:
        report.add(Status.FAIL, "token", f"the consent did not grant {', '.join(missing)}; run `dirsync authorize "
                                         f"--connection {connection.id}` again and leave every permission ticked")
        return False
    report.add(Status.OK, "token", "Google issued an access token for the two read-only directory scopes")
    return True


def _token_refusal(exc: RefreshError, credentials: Credentials, principal: Principal, connection: ConnectionConfig) -> str:
    code = (str(exc.args[0]) if exc.args else "").split(":", 1)[0].strip()
    is_service_account = isinstance(credentials, service_account.Credentials)
    if code == "unauthorized_client" and is_service_account:
        return _missing_delegation(credentials, principal)
    if code == "invalid_grant" and is_service_account:
        return (f"invalid_grant: the subject {principal.admin} is not an active user of this Workspace (misspelt, "
                "deleted or suspended); set credentials.subject to an existing admin")
    if code == "invalid_grant":
        return (f"invalid_grant: the refresh token was revoked or expired (the authorizing admin {principal.admin} may "
                "have been deleted, suspended, signed out of all sessions, or removed the app's access); run "
                f"`dirsync authorize --connection {connection.id}` again with an active admin")
    if code == "invalid_client":
        return ("invalid_client: the OAuth client was deleted or its secret was reset; download the client JSON again "
                f"and run `dirsync authorize --connection {connection.id}`")
    return str(explain_refresh_error(exc, subject=principal.admin))


def _missing_delegation(credentials: service_account.Credentials, principal: Principal) -> str:
    """Ask for one scope at a time: the scopes refused are the ones missing from the delegation entry."""
    refused = [scope for scope in READONLY_SCOPES if not _token_for(credentials.with_scopes([scope]))]
    client = f"client id {principal.client_id}" if principal.client_id else "the service account's client id"
    if len(refused) < len(READONLY_SCOPES):
        return (f"unauthorized_client: the domain-wide delegation entry for {client} lacks {', '.join(refused)}. "
                f"In {DWD_HELP}, edit that entry so its scopes are exactly {','.join(READONLY_SCOPES)}")
    return (f"unauthorized_client: no domain-wide delegation for {client} (or it was added less than 24 h ago and "
            f"is still propagating: wait and check again). In {DWD_HELP}, add {client} with the scopes "
            f"{','.join(READONLY_SCOPES)}")


def _token_for(credentials: Credentials) -> bool:
    try:
        credentials.refresh(_transport())
    except RefreshError:
        return False
    return True


def _transport() -> google_auth_httplib2.Request:
    return google_auth_httplib2.Request(httplib2.Http(timeout=PROBE_TIMEOUT_SECONDS))


# -- the three probes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    endpoint: str
    scope: str
    can: str  # what success proves, e.g. "read users"
    request: HttpRequest


def _probe_endpoints(
    connection: ConnectionConfig, credentials: Credentials, api_endpoint: str | None, principal: Principal, report: Report
) -> None:
    service = build(
        "admin", "directory_v1", credentials=credentials, static_discovery=True, cache_discovery=False,
        client_options={"api_endpoint": api_endpoint} if api_endpoint else None,
    )
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=PROBE_TIMEOUT_SECONDS))
    customer = connection.customer
    probes = [
        Probe("users.list", USER_SCOPE, "read users",
              service.users().list(customer=customer, maxResults=1, fields="nextPageToken,users(id)")),
        Probe("groups.list", GROUP_SCOPE, "read groups",
              service.groups().list(customer=customer, maxResults=1, fields="nextPageToken,groups(id,email)")),
    ]
    answers: dict[str, dict | None] = {}
    for probe in probes:
        answers[probe.endpoint] = _run(probe, http, connection, principal, report)
        if any(f.step == "API" for f in report.findings):
            return  # the whole API is refused: more calls would only repeat it
    groups = (answers["groups.list"] or {}).get("groups", [])
    if answers["groups.list"] is None:
        report.add(Status.WARN, "members.list", "not tried: groups.list failed")
        return
    _find_named_groups(service, http, connection, report)
    if not groups:
        report.add(Status.WARN, "members.list", "not tried: the directory has no groups yet")
    else:
        group = groups[0]
        request = service.members().list(groupKey=group["id"], maxResults=1, fields="nextPageToken,members(id)")
        _run(Probe("members.list", GROUP_SCOPE, f"read the members of {group.get('email', group['id'])}", request),
             http, connection, principal, report)


def _find_named_groups(service, http: httplib2.Http, connection: ConnectionConfig, report: Report) -> None:
    """Every group that selected_groups or role_mapping names must exist: list the groups (ids and emails) once.

    A misspelt or deleted group does not fail a sync (it is skipped with a warning), but its members then get
    none of the roles it was meant to give: the "missing users/groups" an admin would otherwise debug.
    """
    named = {"selected_groups": [] if connection.selected_groups == "all" else list(connection.selected_groups),
             "role_mapping": list(connection.role_mapping)}
    if not any(named.values()):
        return
    rows: list[dict] = []
    request = service.groups().list(customer=connection.customer, maxResults=200,
                                    fields="nextPageToken,groups(id,email)")
    while request is not None:
        page = call_with_retry(lambda: request.execute(http=http), endpoint="groups.list", policy=PROBE_RETRY,
                               limiter=RateLimiter(qps=None), stats=ApiStats())
        rows += page.get("groups", [])
        request = service.groups().list_next(request, page)
    directory = pl.DataFrame({"group_id": [g["id"] for g in rows], "email": [g.get("email", "") for g in rows]},
                             schema={"group_id": pl.Utf8, "email": pl.Utf8})
    for key, group_keys in named.items():
        for unknown in resolve_group_keys(directory, group_keys).unknown_keys:
            report.add(Status.FAIL, key, f"no group {unknown!r} in the directory ({directory.height} groups): it was "
                                         "deleted or is misspelt; fix or remove it in the config (`dirsync groups "
                                         "--search` lists the groups by email)")
    if report.sync_would_work:
        report.add(Status.OK, "groups", f"every group selected_groups and role_mapping name exists "
                                        f"({directory.height} groups in the directory)")


def _run(probe: Probe, http: httplib2.Http, connection: ConnectionConfig, principal: Principal, report: Report) -> dict | None:
    try:
        answer = call_with_retry(
            lambda: probe.request.execute(http=http), endpoint=probe.endpoint, policy=PROBE_RETRY,
            limiter=RateLimiter(qps=None), stats=ApiStats(),
        )
    except HttpError as exc:
        step, detail = _api_refusal(exc, probe, connection, principal)
        report.add(Status.FAIL, step, detail)
        return None
    except RetriesExhaustedError as exc:
        report.add(Status.FAIL, probe.endpoint, f"Google kept failing ({exc}); try again in a few minutes")
        return None
    except (OSError, httplib2.HttpLib2Error) as exc:
        report.add(Status.FAIL, probe.endpoint, f"could not reach the Directory API ({type(exc).__name__}); check "
                                                "api_endpoint, the network and proxies")
        return None
    report.add(Status.OK, probe.endpoint, f"{principal.admin} can {probe.can}")
    return answer if isinstance(answer, dict) else {}


def _api_refusal(exc: HttpError, probe: Probe, connection: ConnectionConfig, principal: Principal) -> tuple[str, str]:
    """(step, what to do) for an API refusal; step "API" marks causes that refuse every call alike."""
    info = api_error_info(exc)
    if info.status == 403 and info.reason == "accessNotConfigured":
        project = re.search(r"project (\d+)", info.message)
        where = f"Cloud project {project.group(1)}" if project else "the credentials' Cloud project"
        return "API", (f"the Admin SDK API is disabled in {where}: enable admin.googleapis.com there (APIs & Services "
                       "> Library > Admin SDK API), wait a few minutes, and check again")
    if info.status == 401:
        return "API", (f"401 {info.reason}: Google did not accept the access token; check credentials.type and the "
                       "file, or run `dirsync authorize` again for an authorized_user connection")
    if info.status == 403 and info.reason == "insufficientPermissions":
        fix = (f"add it to the domain-wide delegation entry ({DWD_HELP})" if connection.credentials.type == "service_account"
               else f"run `dirsync authorize --connection {connection.id}` again and leave every permission ticked")
        return probe.endpoint, f"the access token lacks the scope {probe.scope} that {probe.endpoint} needs: {fix}"
    if info.status == 403:
        return probe.endpoint, (
            f"403 {info.reason} 'Not Authorized to access this resource/api': {principal.admin} cannot {probe.can}. "
            f"Make it a super admin, or give its admin role the privilege Admin API > "
            f"{'Users' if probe.scope == USER_SCOPE else 'Groups'} > Read (Admin console > Account > Admin roles); "
            "role changes can take a few minutes to apply")
    if info.status == 400 and probe.endpoint != "members.list":
        return probe.endpoint, (f"400 {info.reason}: Google rejected customer {connection.customer!r}; use my_customer "
                                "or the customer id shown in Admin console > Account > Account settings (C0...)")
    return probe.endpoint, f"Google answered {info.status} {info.reason}: {info.message}"
