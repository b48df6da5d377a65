"""Property-based tests of the parsing layer: any API answer is either a typed row or a clear error."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dirsync_pipeline.google.errors import MalformedResponseError
from dirsync_pipeline.google.records import (
    GROUP_SCHEMA,
    MEMBER_SCHEMA,
    USER_SCHEMA,
    FrameBatches,
    group_row,
    member_row,
    pages_to_frame,
    user_row,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)

timestamps = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
emails = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.test", fullmatch=True)

valid_users = st.fixed_dictionaries(
    {"id": st.from_regex(r"[0-9]{21}", fullmatch=True), "primaryEmail": emails},
    optional={"name": st.fixed_dictionaries({}, optional={"givenName": st.text(max_size=10), "familyName": st.text(max_size=10),
                                                          "fullName": st.text(max_size=20)}),
              "isAdmin": st.booleans(), "suspended": st.booleans(), "archived": st.booleans(),
              "orgUnitPath": st.just("/Sales"), "creationTime": timestamps, "lastLoginTime": timestamps,
              "aliases": st.lists(emails, max_size=3), "unknownNewField": json_values},
)

# A real answer with one field broken at random: wrong type, or a missing required key.
corruptions = st.sampled_from(["id", "primaryEmail", "name", "isAdmin", "suspended", "creationTime", "aliases"])


@settings(max_examples=300, deadline=None)
@given(valid_users)
def test_every_documented_user_shape_parses_to_a_typed_row(user):
    frame = pages_to_frame([[user]], user_row, USER_SCHEMA)
    assert frame.height == 1 and frame["user_id"][0] == user["id"]
    assert frame["primary_email"][0] == user["primaryEmail"].lower()
    assert frame["suspended"][0] == user.get("suspended", False)


@settings(max_examples=300, deadline=None)
@given(valid_users, corruptions, json_values)
def test_a_corrupted_user_is_a_clear_error_never_a_crash_or_a_silent_row(user, field, junk):
    broken = {**user, field: junk}
    try:
        row = user_row(broken)
    except MalformedResponseError as exc:
        assert str(exc)  # names what is wrong
        return
    # accepted: then the junk must have the type Google documents for that field
    pages_to_frame([[row]], tuple, USER_SCHEMA)
    documented = {
        "id": lambda v: isinstance(v, str) and v, "primaryEmail": lambda v: isinstance(v, str) and v,
        "name": lambda v: v is None or isinstance(v, dict), "isAdmin": lambda v: isinstance(v, bool),
        "suspended": lambda v: isinstance(v, bool), "creationTime": lambda v: v is None or isinstance(v, str),
        "aliases": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
    }
    assert documented[field](junk), f"{field}={junk!r} was accepted silently"


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_escapes_as_another_exception(value):
    for parse in (user_row, group_row, lambda v: member_row("g1", v)):
        try:
            parse(value)
        except MalformedResponseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=5), "email": emails,
                              "directMembersCount": st.one_of(st.integers(0, 10**6).map(str), st.integers().map(str), json_values)}))
def test_direct_members_count_must_be_a_number(group):
    try:
        row = group_row(group)
    except MalformedResponseError:
        return
    assert row[4] == int(group["directMembersCount"])
    pages_to_frame([[row]], tuple, GROUP_SCHEMA)


@pytest.mark.parametrize("member_type", ["USER", "GROUP", "CUSTOMER", "EXTERNAL"])
def test_known_member_types_parse_and_customer_has_no_email(member_type):
    row = member_row("g1", {"id": "x1", "email": "A@B.test", "type": member_type})
    frame = pages_to_frame([[row]], tuple, MEMBER_SCHEMA)
    assert frame["member_email"][0] == (None if member_type == "CUSTOMER" else "a@b.test")
    assert frame["role"][0] == "MEMBER"  # a missing role defaults like GAM does
    assert frame["status"][0] is None


@given(st.text(max_size=10).filter(lambda t: t not in ("USER", "GROUP", "CUSTOMER", "EXTERNAL")))
def test_unknown_member_types_are_refused(member_type):
    with pytest.raises(MalformedResponseError, match="member type"):
        member_row("g1", {"id": "x1", "type": member_type})


@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 10**6)), max_size=40), st.integers(1, 7))
def test_rows_streamed_in_batches_make_the_same_frame_in_the_same_order(rows, batch_rows):
    schema = {"name": pl.Utf8, "count": pl.Int64}
    batches = FrameBatches(schema, batch_rows=batch_rows)
    for start in range(0, len(rows), 3):  # pages of 3 rows, batches of another size
        batches.extend(rows[start:start + 3])
    frame = batches.frame()
    assert frame.schema == schema and frame.rows() == rows
