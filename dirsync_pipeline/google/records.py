"""Parse Directory API JSON into typed rows, rejecting answers that break Google's documented shapes.

Pages are turned into tuples as they arrive, so a large tenant is held as compact rows rather than as
raw JSON dicts. Anything surprising raises MalformedResponseError naming the field: it is never
silently published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import polars as pl

from dirsync_pipeline.google.errors import MalformedResponseError

NEVER = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP = pl.Datetime("us", "UTC")
BATCH_ROWS = 50_000
MEMBER_TYPES = frozenset({"USER", "GROUP", "CUSTOMER", "EXTERNAL"})

USER_SCHEMA = {
    "user_id": pl.Utf8, "primary_email": pl.Utf8, "given_name": pl.Utf8, "family_name": pl.Utf8,
    "full_name": pl.Utf8, "is_admin": pl.Boolean, "suspended": pl.Boolean, "archived": pl.Boolean,
    "org_unit_path": pl.Utf8, "creation_time": TIMESTAMP, "last_login_time": TIMESTAMP,
    "aliases": pl.List(pl.Utf8),
}
GROUP_SCHEMA = {
    "group_id": pl.Utf8, "email": pl.Utf8, "name": pl.Utf8, "description": pl.Utf8,
    "direct_members_count": pl.Int64, "admin_created": pl.Boolean,
}
MEMBER_SCHEMA = {
    "group_id": pl.Utf8, "member_id": pl.Utf8, "member_email": pl.Utf8, "member_type": pl.Utf8,
    "role": pl.Utf8, "status": pl.Utf8,
}

UserRow = tuple
GroupRow = tuple
MemberRow = tuple


def user_row(user: object) -> UserRow:
    obj = _object(user, "users.list user")
    name = obj.get("name", {})
    if name is None:
        name = {}
    if not isinstance(name, dict):
        raise MalformedResponseError(f"users.list user {obj.get('id')!r}: `name` is {type(name).__name__}, not an object")
    given, family = _opt_str(name, "givenName", "user"), _opt_str(name, "familyName", "user")
    full = _opt_str(name, "fullName", "user") or " ".join(p for p in (given, family) if p) or None
    last_login = _timestamp(obj, "lastLoginTime")
    return (
        _required_str(obj, "id", "users.list user"),
        _required_str(obj, "primaryEmail", "users.list user").lower(),
        given, family, full,
        _bool(obj, "isAdmin"), _bool(obj, "suspended"), _bool(obj, "archived"),
        _opt_str(obj, "orgUnitPath", "user") or "/",
        _timestamp(obj, "creationTime"),
        None if last_login == NEVER else last_login,
        _str_list(obj, "aliases"),
    )


def group_row(group: object) -> GroupRow:
    obj = _object(group, "groups.list group")
    count = obj.get("directMembersCount", "0")
    try:
        direct_members = int(count)  # Google sends int64 as a JSON string
    except (TypeError, ValueError):
        direct_members = -1
    if isinstance(count, bool) or not 0 <= direct_members < 2**63:
        raise MalformedResponseError(f"groups.list group {obj.get('id')!r}: directMembersCount {count!r} is not a count")
    return (
        _required_str(obj, "id", "groups.list group"),
        _required_str(obj, "email", "groups.list group").lower(),
        _opt_str(obj, "name", "group"), _opt_str(obj, "description", "group"),
        direct_members, _bool(obj, "adminCreated"),
    )


def member_row(group_id: str, member: object) -> MemberRow:
    obj = _object(member, f"members.list of group {group_id}")
    member_type = obj.get("type")
    if member_type not in MEMBER_TYPES:
        raise MalformedResponseError(
            f"members.list of group {group_id}: member type {member_type!r} is not one of {sorted(MEMBER_TYPES)}"
        )
    email = _opt_str(obj, "email", "member")
    return (
        group_id,
        _required_str(obj, "id", f"members.list of group {group_id}"),
        None if member_type == "CUSTOMER" else (email.lower() if email else None),
        member_type,
        _opt_str(obj, "role", "member") or "MEMBER",  # GAM's default too: role may be missing
        _opt_str(obj, "status", "member"),
    )


class FrameBatches:
    """Parsed rows turned into a columnar polars frame every ``batch_rows`` rows.

    A tenant's users or member edges never exist as Python tuples all at once: only the current batch
    does, and the columnar frames cost a fraction of the memory.
    """

    def __init__(self, schema: dict[str, pl.DataType], batch_rows: int = BATCH_ROWS):
        self._schema = schema
        self._batch_rows = batch_rows
        self._rows: list[tuple] = []
        self._frames: list[pl.DataFrame] = []

    def extend(self, rows: Iterable[tuple]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self._batch_rows:
            self._flush()

    def frame(self) -> pl.DataFrame:
        self._flush()
        return pl.concat(self._frames, rechunk=True) if self._frames else pl.DataFrame(schema=self._schema)

    def _flush(self) -> None:
        if self._rows:
            self._frames.append(pl.DataFrame(self._rows, schema=self._schema, orient="row"))
            self._rows = []


def pages_to_frame(pages: Iterable[list], parse: Callable[[object], tuple], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Parse each item of each page into a row, streamed into one frame."""
    batches = FrameBatches(schema)
    for page in pages:
        batches.extend(parse(item) for item in page)
    return batches.frame()


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedResponseError(f"{what} is {type(value).__name__}, not a JSON object")
    return value


def _required_str(obj: dict, key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedResponseError(f"{what} without a valid `{key}` (got {type(value).__name__})")
    return value


def _opt_str(obj: dict, key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedResponseError(f"{what} {obj.get('id')!r}: `{key}` is {type(value).__name__}, not a string")
    return value


def _bool(obj: dict, key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise MalformedResponseError(f"user/group {obj.get('id')!r}: `{key}` is {value!r}, not a boolean")
    return value


def _str_list(obj: dict, key: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedResponseError(f"user {obj.get('id')!r}: `{key}` is not a list of strings")
    return [v.lower() for v in value]


def _timestamp(obj: dict, key: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise MalformedResponseError(f"user {obj.get('id')!r}: `{key}` {value!r} is not an RFC 3339 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
