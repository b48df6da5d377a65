"""The Directory API read endpoints, over a `Directory`, as plain payload dicts.

Callers hold the directory lock and apply the `fields` mask; these functions
validate parameters the way Google does, page, and render.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from .directory import CUSTOMER, GROUP, USER, Directory, Group, Member, User
from .faults import FaultPlan
from .paging import ListingCache, Page, PageTokens, listing_id
from .render import group_json, member_json, page_json, user_json
from .wire import ApiError, bad_request, invalid_input, invalid_parameter, not_found

T = TypeVar("T")
Query = dict[str, str]

USER_ORDERS: dict[str, Callable[[User], Any]] = {
    "email": lambda u: u.primary_email,
    "givenName": lambda u: (u.given_name.lower(), u.primary_email),
    "familyName": lambda u: (u.family_name.lower(), u.primary_email),
}
SORT_ORDERS = ("ASCENDING", "DESCENDING")
PROJECTIONS = ("basic", "custom", "full")
VIEW_TYPES = ("admin_view", "domain_public")
ROLES = ("OWNER", "MANAGER", "MEMBER")


class Endpoints:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._tokens = PageTokens()
        # One cache per endpoint: the member listings of thousands of groups, read alongside users.list,
        # must not evict the users listing between its pages (each rebuild re-sorts every user).
        self._caches = {endpoint: ListingCache() for endpoint in ("users.list", "groups.list", "members.list")}

    # ----- users ---------------------------------------------------------------------

    def users_list(self, query: Query, faults: FaultPlan) -> dict[str, Any]:
        self._check_scope(query, query.get("customer"))
        _refuse_search(query)
        order = _enum(query, "orderBy", tuple(USER_ORDERS))
        descending = _enum(query, "sortOrder", SORT_ORDERS) == "DESCENDING"
        public_view = _enum(query, "viewType", VIEW_TYPES) == "domain_public"
        _enum(query, "projection", PROJECTIONS)
        size = _page_size(query, default=100, maximum=500)
        deleted = query.get("showDeleted", "").lower() == "true"
        domain = query.get("domain", "").lower()
        defining = {"domain": domain, "orderBy": order or "", "descending": str(descending), "deleted": str(deleted)}

        def build() -> list[User]:
            users = [
                u for u in self.directory.users.values() if u.deleted == deleted and _in_domain(u.primary_email, domain)
            ]
            return _sorted(users, USER_ORDERS.get(order or ""), descending)

        page = self._page("users.list", defining, build, query, size)
        kept = [u for u in page.items if not faults.drops(u.id)]
        if len(kept) < len(page.items):
            faults.record("dropped_users", len(page.items) - len(kept))
        etags = _wants_etags(query)
        items = [user_json(u, self.directory.customer_id, public_view, etags) for u in kept]
        return page_json("admin#directory#users", "users", items, _next_token(page, "users.list", query, faults), etags)

    def users_get(self, key: str, query: Query) -> dict[str, Any]:
        public_view = _enum(query, "viewType", VIEW_TYPES) == "domain_public"
        _enum(query, "projection", PROJECTIONS)
        user = self.directory.find_user(key)
        if user is None:
            raise not_found("userKey")
        return user_json(user, self.directory.customer_id, public_view)

    # ----- groups --------------------------------------------------------------------

    def groups_list(self, query: Query, faults: FaultPlan) -> dict[str, Any]:
        user_key = query.get("userKey")
        if user_key is not None and "customer" in query:
            raise bad_request()
        self._check_scope(query, query.get("customer") or user_key)
        _refuse_search(query)
        order = _enum(query, "orderBy", ("email",))
        descending = _enum(query, "sortOrder", SORT_ORDERS) == "DESCENDING"
        size = _page_size(query, default=200, maximum=200)
        domain = query.get("domain", "").lower()
        member_id = self._member_id(user_key) if user_key else ""
        defining = {"domain": domain, "member": member_id, "orderBy": order or "", "descending": str(descending)}

        def build() -> list[Group]:
            groups = [
                g
                for g in self.directory.groups.values()
                if _in_domain(g.email, domain) and (not member_id or _has_direct_member(g, member_id))
            ]
            return _sorted(groups, (lambda g: g.email) if order else None, descending)

        page = self._page("groups.list", defining, build, query, size)
        etags = _wants_etags(query)
        items = [group_json(g, etags) for g in page.items]
        return page_json("admin#directory#groups", "groups", items, _next_token(page, "groups.list", query, faults), etags)

    def groups_get(self, key: str) -> dict[str, Any]:
        return group_json(self._group(key))

    # ----- members -------------------------------------------------------------------

    def members_list(self, key: str, query: Query, faults: FaultPlan) -> dict[str, Any]:
        group = self._group(key)
        roles = _roles(query.get("roles"))
        size = _page_size(query, default=200, maximum=200)
        derived = query.get("includeDerivedMembership", "").lower() == "true"
        defining = {"group": group.id, "roles": ",".join(sorted(roles)), "derived": str(derived)}

        def build() -> list[Member]:
            rows = self._expand(group, frozenset()) if derived else list(group.members)
            return [row for row in rows if not roles or (row.role or "MEMBER") in roles]

        page = self._page("members.list", defining, build, query, size)
        kept = [m for m in page.items if not faults.drops_member(group.id, m.id)]
        if len(kept) < len(page.items):
            faults.record("dropped_members", len(page.items) - len(kept))
        etags = _wants_etags(query)
        items = [member_json(m, etags) for m in kept]
        return page_json("admin#directory#members", "members", items, _next_token(page, "members.list", query, faults),
                         etags)

    def _expand(self, group: Group, path: frozenset[str]) -> list[Member]:
        """Derived membership: every row, followed by what a GROUP or CUSTOMER row stands for.

        A user reachable through several subgroups appears once per path, as GAM
        reports Google does; a group already on the current path is not re-entered.
        """
        rows: list[Member] = []
        path = path | {group.id}
        for row in group.members:
            rows.append(row)
            child = self.directory.groups.get(row.id) if row.type == GROUP else None
            if child is not None and child.id not in path:
                rows.extend(self._expand(child, path))
            elif row.type == CUSTOMER:
                rows.extend(
                    Member(u.id, u.primary_email, USER, "MEMBER", u.member_status())
                    for u in self.directory.active_users()
                )
        return rows

    # ----- helpers -------------------------------------------------------------------

    def _page(
        self, endpoint: str, defining: dict[str, str], build: Callable[[], Sequence[T]], query: Query, size: int
    ) -> Page[T]:
        key: Hashable = (self.directory.version, endpoint, tuple(sorted(defining.items())))
        rows = self._caches[endpoint].get(key, build)
        return self._tokens.page(rows, listing_id(endpoint, defining), query.get("pageToken"), size)

    def _check_scope(self, query: Query, owner: str | None) -> None:
        """users.list/groups.list need a customer (or a userKey) or the customer's domain."""
        customer, domain = query.get("customer"), query.get("domain")
        if owner is None and domain is None:
            raise bad_request()
        if customer is not None and customer not in ("my_customer", self.directory.customer_id):
            raise bad_request()
        if domain is not None and domain.lower() != self.directory.domain:
            raise bad_request()

    def _group(self, key: str) -> Group:
        group = self.directory.find_group(key)
        if group is None:
            raise not_found("groupKey")
        return group

    def _member_id(self, user_key: str) -> str:
        """groups.list?userKey= accepts a user id or any email (outsiders included)."""
        user = self.directory.find_user(user_key)
        return user.id if user else user_key.lower()


def _wants_etags(query: Query) -> bool:
    """Whether the answer can show an etag: not when a `fields` mask names none (etags cost a hash each)."""
    mask = query.get("fields", "")
    return not mask.strip() or "etag" in mask or "*" in mask


def _has_direct_member(group: Group, member_key: str) -> bool:
    return any(row.id == member_key or (row.email or "").lower() == member_key for row in group.members)


def _in_domain(email: str, domain: str) -> bool:
    return not domain or email.lower().endswith("@" + domain)


def _sorted(items: list[T], key: Callable[[T], Any] | None, descending: bool) -> list[T]:
    """Insertion order unless an orderBy is given; sortOrder only matters with orderBy, as documented."""
    return sorted(items, key=key, reverse=descending) if key else items


def _next_token(page: Page[Any], endpoint: str, query: Query, faults: FaultPlan) -> str | None:
    """The real token, or for the repeated-token quirk the last page's own token again."""
    if page.next_token is None and faults.repeat_page_token_on == endpoint and query.get("pageToken"):
        faults.record("repeated_page_token")
        return query["pageToken"]
    return page.next_token


def _refuse_search(query: Query) -> None:
    """Search syntax is not emulated; failing loudly beats silently listing everything."""
    if query.get("query"):
        raise ApiError(400, "invalid", "Invalid query: the emulator does not implement search queries")


def _page_size(query: Query, *, default: int, maximum: int) -> int:
    raw = query.get("maxResults")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise invalid_input() from None
    if not 1 <= size <= maximum:
        raise invalid_input()
    return size


def _enum(query: Query, name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is not None and value not in allowed:
        pattern = "|".join(allowed)
        raise invalid_parameter(
            name, f"Invalid value '{value}'. Values must match the following regular expression: '({pattern})'"
        )
    return value


def _roles(raw: str | None) -> frozenset[str]:
    roles = frozenset(r.strip().upper() for r in (raw or "").split(",") if r.strip())
    if not roles <= set(ROLES):
        raise invalid_input()
    return roles
