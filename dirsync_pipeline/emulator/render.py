"""Model objects as Google's JSON resources, plus the schemas `fields` masks are checked against."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .directory import Group, Member, User
from .fields import Schema


def etag(payload: Any) -> str:
    """A quoted, content-derived etag, so it changes exactly when the resource does.

    The digest is of ``repr``: the render functions build each resource's keys in a fixed order, and repr
    costs a third of a sorted JSON dump, once per resource of every page served."""
    digest = hashlib.sha1(repr(payload).encode()).digest()
    return '"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'


def _with_etag(kind: str, body: dict[str, Any], with_etag: bool) -> dict[str, Any]:
    """The resource with its kind and, unless the answer's `fields` mask drops it anyway, its etag."""
    return {"kind": kind, "etag": etag(body), **body} if with_etag else {"kind": kind, **body}


def user_json(user: User, customer_id: str, public_view: bool = False, with_etag: bool = True) -> dict[str, Any]:
    emails = [{"address": user.primary_email, "primary": True}] + [{"address": a} for a in user.aliases]
    name = {
        "givenName": user.given_name,
        "familyName": user.family_name,
        "fullName": f"{user.given_name} {user.family_name}",
    }
    if public_view:  # viewType=domain_public: what any user of the domain may see
        return _with_etag(
            "admin#directory#user", {"id": user.id, "primaryEmail": user.primary_email, "name": name, "emails": emails},
            with_etag,
        )
    body: dict[str, Any] = {
        "id": user.id,
        "primaryEmail": user.primary_email,
        "name": name,
        "isAdmin": user.is_admin,
        "isDelegatedAdmin": False,
        "lastLoginTime": user.last_login_time,
        "creationTime": user.creation_time,
        "agreedToTerms": True,
        "suspended": user.suspended,
        "archived": user.archived,
        "changePasswordAtNextLogin": False,
        "ipWhitelisted": False,
        "emails": emails,
        "customerId": customer_id,
        "orgUnitPath": user.org_unit_path,
        "isMailboxSetup": True,
        "isEnrolledIn2Sv": False,
        "isEnforcedIn2Sv": False,
        "includeInGlobalAddressList": True,
    }
    if user.suspended:
        body["suspensionReason"] = "ADMIN"
    if user.aliases:
        body["aliases"] = list(user.aliases)
    if user.deletion_time:
        body["deletionTime"] = user.deletion_time
    return _with_etag("admin#directory#user", body, with_etag)


def group_json(group: Group, with_etag: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": group.id,
        "email": group.email,
        "name": group.name,
        "directMembersCount": str(len(group.members)),  # int64 travels as a string
        "description": group.description,
        "adminCreated": group.admin_created,
    }
    if group.aliases:
        body["aliases"] = list(group.aliases)
    return _with_etag("admin#directory#group", body, with_etag)


def member_json(member: Member, with_etag: bool = True) -> dict[str, Any]:
    optional = {"email": member.email, "role": member.role, "type": member.type, "status": member.status}
    return _with_etag(
        "admin#directory#member", {"id": member.id, **{k: v for k, v in optional.items() if v is not None}}, with_etag
    )


def page_json(
    kind: str, items_key: str, items: list[dict[str, Any]], next_token: str | None, with_etag: bool = True
) -> dict[str, Any]:
    """A list page; like Google, an empty page has no items key and the last page no token."""
    body: dict[str, Any] = {items_key: items} if items else {}
    page = {"kind": kind, "etag": etag([item["etag"] for item in items]), **body} if with_etag else {"kind": kind, **body}
    if next_token:
        page["nextPageToken"] = next_token
    return page


# Field names from the Directory API discovery document (revision 20261104).
_USER_FIELDS = (
    "addresses agreedToTerms aliases archivalTime archived changePasswordAtNextLogin creationTime customSchemas "
    "customerId deletionTime emails etag externalIds gender guestAccountInfo hashFunction id ims "
    "includeInGlobalAddressList ipWhitelisted isAdmin isDelegatedAdmin isEnforcedIn2Sv isEnrolledIn2Sv isGuestUser "
    "isMailboxSetup keywords kind languages lastLoginTime locations name nonEditableAliases notes orgUnitPath "
    "organizations password phones posixAccounts primaryEmail recoveryEmail recoveryPhone relations sshPublicKeys "
    "suspended suspensionReason suspensionTime thumbnailPhotoEtag thumbnailPhotoUrl websites"
).split()
_GROUP_FIELDS = (
    "adminCreated aliases description directMembersCount email etag externalIds id kind name nonEditableAliases".split()
)
_MEMBER_FIELDS = "delivery_settings email etag id kind role status type".split()

USER_SCHEMA: Schema = {
    **dict.fromkeys(_USER_FIELDS),
    "name": dict.fromkeys(("displayName", "familyName", "fullName", "givenName")),
    "guestAccountInfo": {"primaryGuestEmail": None},
}
GROUP_SCHEMA: Schema = dict.fromkeys(_GROUP_FIELDS)
MEMBER_SCHEMA: Schema = dict.fromkeys(_MEMBER_FIELDS)
USERS_SCHEMA: Schema = {"kind": None, "etag": None, "nextPageToken": None, "trigger_event": None, "users": USER_SCHEMA}
GROUPS_SCHEMA: Schema = {"kind": None, "etag": None, "nextPageToken": None, "groups": GROUP_SCHEMA}
MEMBERS_SCHEMA: Schema = {"kind": None, "etag": None, "nextPageToken": None, "members": MEMBER_SCHEMA}
