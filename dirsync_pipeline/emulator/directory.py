"""In-memory Google Workspace directory: model, mutations and a seeded generator.

The emulator's HTTP threads read this model while tests mutate it, so every
public method takes the directory's `lock`, and every mutation bumps `version`
so the server can cache sorted listings between changes.
"""

from __future__ import annotations

import json
import random
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

NEVER = "1970-01-01T00:00:00.000Z"  # Google's lastLoginTime for "never logged in"

USER = "USER"
GROUP = "GROUP"
CUSTOMER = "CUSTOMER"
EXTERNAL = "EXTERNAL"

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_T = TypeVar("_T")


def rfc3339(epoch_seconds: float) -> str:
    """Google's timestamp shape: UTC with milliseconds, e.g. 2021-03-04T05:06:07.000Z."""
    millis = round(epoch_seconds * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(epoch_seconds))) + f".{millis:03d}Z"


def _now() -> str:
    return rfc3339(time.time())


@dataclass(slots=True)
class User:
    id: str
    primary_email: str
    given_name: str
    family_name: str
    is_admin: bool = False
    suspended: bool = False
    archived: bool = False
    org_unit_path: str = "/"
    creation_time: str = field(default_factory=_now)
    last_login_time: str = NEVER
    aliases: list[str] = field(default_factory=list)
    deleted: bool = False
    deletion_time: str | None = None  # set by delete_user; Google returns it with showDeleted=true

    def member_status(self) -> str:
        """The status Google shows on this user's membership rows."""
        if self.archived:
            return "ARCHIVED"
        return "SUSPENDED" if self.suspended else "ACTIVE"


@dataclass(slots=True)
class Member:
    id: str
    email: str | None
    type: str  # USER | GROUP | CUSTOMER | EXTERNAL
    role: str | None = "MEMBER"  # None: the key is omitted on the wire
    status: str | None = "ACTIVE"  # None: the key is omitted on the wire


@dataclass(slots=True)
class Group:
    id: str
    email: str
    name: str
    description: str = ""
    admin_created: bool = True
    aliases: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)


class Directory:
    """A customer's users and groups, indexed by id, email and alias.

    Change it through the methods below: they keep the indexes and `version`
    right, and the server's listing cache trusts `version`.
    """

    def __init__(self, customer_id: str, domain: str, users: Iterable[User] = (), groups: Iterable[Group] = ()) -> None:
        self.customer_id = customer_id
        self.domain = domain.lower()
        self.lock = threading.RLock()
        self.version = 0
        self.users: dict[str, User] = {u.id: u for u in users}
        self.groups: dict[str, Group] = {g.id: g for g in groups}
        self._user_keys: dict[str, str] = {}
        self._group_keys: dict[str, str] = {}
        for user in self.users.values():
            self._index_user(user)
        for group in self.groups.values():
            self._index(self._group_keys, group.id, [group.email, *group.aliases])
        # Fresh ids for mutations are deterministic per customer, like the generated ones.
        self._rng = random.Random(f"{customer_id}:mutations")

    # ----- lookups -------------------------------------------------------------------

    def find_user(self, key: str) -> User | None:
        """By id, primary email or alias (emails case-insensitive); deleted users are gone."""
        with self.lock:
            user = self.users.get(key) or self.users.get(self._user_keys.get(key.lower(), ""))
            return None if user is None or user.deleted else user

    def find_group(self, key: str) -> Group | None:
        with self.lock:
            return self.groups.get(key) or self.groups.get(self._group_keys.get(key.lower(), ""))

    def active_users(self) -> list[User]:
        with self.lock:
            return [u for u in self.users.values() if not u.deleted]

    # ----- user mutations ------------------------------------------------------------

    def add_user(
        self,
        primary_email: str,
        given_name: str,
        family_name: str,
        *,
        id: str | None = None,
        **attributes: Any,
    ) -> User:
        with self.lock:
            self._require_free_emails([primary_email, *attributes.get("aliases", [])])
            user = User(id or self._fresh_user_id(), primary_email.lower(), given_name, family_name, **attributes)
            self.users[user.id] = user
            self._index_user(user)
            return self._changed(user)

    def suspend_user(self, key: str) -> User:
        return self.update_user(key, suspended=True)

    def reactivate_user(self, key: str) -> User:
        return self.update_user(key, suspended=False, archived=False)

    def archive_user(self, key: str) -> User:
        return self.update_user(key, archived=True)

    def rename_user(self, key: str, new_email: str) -> User:
        """Change the primary email; like Google, the old address stays as an alias."""
        with self.lock:
            user = self._user(key)
            return self.update_user(user.id, primary_email=new_email, aliases=[*user.aliases, user.primary_email])

    def update_user(self, key: str, **changes: Any) -> User:
        """Set User fields (not id/deleted) and keep indexes and membership rows in sync."""
        forbidden = set(changes) - (_USER_FIELDS - {"id", "deleted", "deletion_time"})
        if forbidden:
            raise TypeError(f"cannot update user field(s): {sorted(forbidden)}")
        with self.lock:
            user = self._user(key)
            new_emails = {changes.get("primary_email", user.primary_email), *changes.get("aliases", user.aliases)}
            self._require_free_emails([e for e in new_emails if self._user_keys.get(e.lower()) != user.id])
            self._unindex(self._user_keys, [user.primary_email, *user.aliases])
            for name, value in changes.items():
                setattr(user, name, value.lower() if name == "primary_email" else value)
            self._index_user(user)
            for row in self._rows_of(user.id):
                row.email = user.primary_email
                if row.status is not None:
                    row.status = user.member_status()
            return self._changed(user)

    def delete_user(self, key: str) -> User:
        """Mark deleted (still listed with showDeleted=true) and drop every membership."""
        with self.lock:
            user = self._user(key)
            user.deleted = True
            user.deletion_time = _now()
            self._unindex(self._user_keys, [user.primary_email, *user.aliases])
            self._drop_rows_of(user.id)
            return self._changed(user)

    # ----- group mutations -----------------------------------------------------------

    def add_group(
        self, email: str, name: str, description: str = "", *, id: str | None = None, **attributes: Any
    ) -> Group:
        with self.lock:
            self._require_free_emails([email, *attributes.get("aliases", [])])
            group = Group(id or self._fresh_group_id(), email.lower(), name, description, **attributes)
            self.groups[group.id] = group
            self._index(self._group_keys, group.id, [group.email, *group.aliases])
            return self._changed(group)

    def delete_group(self, key: str) -> Group:
        """Remove the group and the rows that nest it inside other groups."""
        with self.lock:
            group = self._group(key)
            del self.groups[group.id]
            self._unindex(self._group_keys, [group.email, *group.aliases])
            self._drop_rows_of(group.id)
            return self._changed(group)

    def add_member(self, group_key: str, member: str | Member, role: str = "MEMBER") -> Member:
        """Add a row; cycles are allowed here on purpose (Google refuses them) for negative tests."""
        with self.lock:
            group = self._group(group_key)
            row = member if isinstance(member, Member) else self._member_for(member, role)
            if any(existing.id == row.id for existing in group.members):
                raise ValueError(f"{row.id} is already a member of {group.email}")
            group.members.append(row)
            self._changed(group)
            return row

    def remove_member(self, group_key: str, member_key: str) -> Member:
        with self.lock:
            group = self._group(group_key)
            wanted = member_key.lower()
            for index, row in enumerate(group.members):
                if row.id == member_key or (row.email or "").lower() == wanted:
                    del group.members[index]
                    self._changed(group)
                    return row
            raise KeyError(f"{member_key} is not a member of {group.email}")

    # ----- persistence ---------------------------------------------------------------

    def to_json(self) -> str:
        with self.lock:
            return json.dumps(
                {
                    "customer_id": self.customer_id,
                    "domain": self.domain,
                    "users": [asdict(u) for u in self.users.values()],
                    "groups": [asdict(g) for g in self.groups.values()],
                },
                ensure_ascii=False,
            )

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> Directory:
        raw = json.loads(data) if isinstance(data, (str, bytes)) else data
        groups = (Group(**{**g, "members": [Member(**m) for m in g["members"]]}) for g in raw["groups"])
        return cls(raw["customer_id"], raw["domain"], (User(**u) for u in raw["users"]), groups)

    # ----- internals -----------------------------------------------------------------

    def _changed(self, item: _T) -> _T:
        self.version += 1
        return item

    def _user(self, key: str) -> User:
        user = self.find_user(key)
        if user is None:
            raise KeyError(f"no user {key!r}")
        return user

    def _group(self, key: str) -> Group:
        group = self.find_group(key)
        if group is None:
            raise KeyError(f"no group {key!r}")
        return group

    def _member_for(self, key: str, role: str) -> Member:
        """Resolve a key the way Google's members.insert does."""
        if (user := self.find_user(key)) is not None:
            return Member(user.id, user.primary_email, USER, role, user.member_status())
        if (group := self.find_group(key)) is not None:
            return Member(group.id, group.email, GROUP, role)
        if key == self.customer_id:
            return Member(key, None, CUSTOMER, role)
        if "@" in key and key.lower().rsplit("@", 1)[1] != self.domain:
            return Member(self._fresh_user_id(), key.lower(), USER, role)
        raise KeyError(f"no user or group {key!r} in {self.domain}")

    def _rows_of(self, member_id: str) -> Iterator[Member]:
        for group in self.groups.values():
            yield from (row for row in group.members if row.id == member_id)

    def _drop_rows_of(self, member_id: str) -> None:
        for group in self.groups.values():
            group.members[:] = [row for row in group.members if row.id != member_id]

    def _index_user(self, user: User) -> None:
        if not user.deleted:
            self._index(self._user_keys, user.id, [user.primary_email, *user.aliases])

    @staticmethod
    def _index(index: dict[str, str], item_id: str, emails: Iterable[str]) -> None:
        for email in emails:
            index[email.lower()] = item_id

    @staticmethod
    def _unindex(index: dict[str, str], emails: Iterable[str]) -> None:
        for email in emails:
            index.pop(email.lower(), None)

    def _require_free_emails(self, emails: Iterable[str]) -> None:
        taken = [e for e in emails if e.lower() in self._user_keys or e.lower() in self._group_keys]
        if taken:
            raise ValueError(f"email address already in use: {', '.join(taken)}")

    def _fresh_user_id(self) -> str:
        return _unique(lambda: _user_id(self._rng), self.users.keys() | self._member_ids())

    def _fresh_group_id(self) -> str:
        return _unique(lambda: _group_id(self._rng), set(self.groups))

    def _member_ids(self) -> set[str]:
        return {row.id for group in self.groups.values() for row in group.members}


_USER_FIELDS = frozenset(f.name for f in fields(User))


def _unique(make: Callable[[], str], taken: set[str]) -> str:
    """Draw until unused, and reserve the result in `taken`."""
    while (candidate := make()) in taken:
        pass
    taken.add(candidate)
    return candidate


def _user_id(rng: random.Random) -> str:
    """21 digits starting with 1, like Google's immutable user ids."""
    return f"1{rng.randrange(10**20):020d}"


def _group_id(rng: random.Random) -> str:
    """15 lowercase alnum characters starting with 0, like "00gjdgxs2los8l8"."""
    return "0" + rng.choice("0123") + "".join(rng.choices(_ID_ALPHABET, k=13))


# =====================================================================================
# Seeded generator
# =====================================================================================

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Bianca", "Carlos", "Chen", "Chloé", "Dario", "Deepa", "Elena", "Emeka",
    "Farah", "Felix", "Grace", "Hiro", "Ines", "Ivan", "Jamal", "José", "Kara", "Kenji", "Lars", "Leila",
    "Maya", "Mateo", "Nadia", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Sofia", "Tariq", "Uma",
    "Viktor", "Wen", "Yara", "Zoë",
)  # fmt: skip
LAST_NAMES = (
    "Abebe", "Becker", "Castro", "Dubois", "Eriksen", "Fischer", "García", "Haddad", "Ito", "Jansen", "Kowalski",
    "Larsen", "Müller", "Nakamura", "O'Brien", "Okafor", "Patel", "Quispe", "Rossi", "Schmidt", "Silva", "Tanaka",
    "Umarov", "Novak", "Wang", "Xu", "Yilmaz", "Zhang", "Moreau", "Lindqvist",
)  # fmt: skip
ORG_UNITS = (
    ("/", 6), ("/Engineering", 14), ("/Engineering/Platform", 10), ("/Engineering/Data", 8), ("/Sales", 8),
    ("/Sales/EMEA", 8), ("/Sales/Americas", 8), ("/Support", 12), ("/Finance", 5), ("/People", 4),
    ("/Marketing", 7), ("/Contractors", 5),
)  # fmt: skip
DEPARTMENTS = (("engineering", "/Engineering"), ("sales", "/Sales"), ("support", "/Support"))
PARTNER_DOMAIN = "partner.example.org"

_EPOCH_2012 = 1325376000
_EPOCH_2025_06 = 1748736000
_GENERATION_NOW = 1768435200  # 2026-01-15: the generator's fixed "now"


def generate_directory(
    users: int = 2000, groups: int = 150, *, seed: int = 42, domain: str = "demo.example.com"
) -> Directory:
    """A realistic directory that exercises every quirk, fully determined by `seed`."""
    rng = random.Random(seed)
    customer_id = "C0" + "".join(rng.choices(_ID_ALPHABET, k=7))
    user_list = _UserFactory(rng, domain.lower()).make(users)
    group_list = _GroupFactory(rng, domain.lower(), customer_id, user_list).make(groups)
    return Directory(customer_id, domain, user_list, group_list)


class _UserFactory:
    def __init__(self, rng: random.Random, domain: str) -> None:
        self.rng = rng
        self.domain = domain
        self.taken: set[str] = set()
        self.ids: set[str] = set()
        self.org_units = [name for name, _ in ORG_UNITS]
        self.org_weights = [weight for _, weight in ORG_UNITS]

    def make(self, count: int) -> list[User]:
        return [self._user(index) for index in range(count)]

    def _user(self, index: int) -> User:
        rng = self.rng
        given, family = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = "admin" if index == 0 else f"{_slug(given)}.{_slug(family)}"
        created = rng.uniform(_EPOCH_2012, _EPOCH_2025_06)
        roll = rng.random()  # one draw partitions the exclusive account states
        return User(
            id=_unique(lambda: _user_id(rng), self.ids),
            primary_email=self._claim(local),
            given_name=given,
            family_name=family,
            is_admin=index == 0 or rng.random() < 0.02,
            suspended=index > 0 and roll < 0.03,
            archived=index > 0 and 0.03 <= roll < 0.045,
            org_unit_path="/" if index == 0 else rng.choices(self.org_units, self.org_weights)[0],
            creation_time=rfc3339(created),
            last_login_time=NEVER if rng.random() < 0.08 else rfc3339(rng.uniform(created, _GENERATION_NOW)),
            aliases=self._aliases(given, family),
        )

    def _aliases(self, given: str, family: str) -> list[str]:
        if self.rng.random() >= 0.10:
            return []
        stems = [f"{_slug(given)[0]}{_slug(family)}", f"{_slug(given)}{_slug(family)[0]}"]
        return [self._claim(stem) for stem in stems[: self.rng.randint(1, 2)]]

    def _claim(self, local: str) -> str:
        """First free address among local@, local2@, local3@ ..."""
        email, suffix = f"{local}@{self.domain}", 1
        while email in self.taken:
            suffix += 1
            email = f"{local}{suffix}@{self.domain}"
        self.taken.add(email)
        return email


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


class _GroupFactory:
    """Builds well-known groups, then a DAG of team groups (levels strictly increase)."""

    def __init__(self, rng: random.Random, domain: str, customer_id: str, users: list[User]) -> None:
        self.rng = rng
        self.domain = domain
        self.customer_id = customer_id
        self.users = users
        self.ids: set[str] = set()
        self.user_ids = {u.id for u in users}
        self.hubs = rng.sample(users, k=min(len(users), max(3, min(50, len(users) // 50))))

    def make(self, count: int) -> list[Group]:
        known = self._well_known() if count >= 8 else {}
        departments = [known[d] for d, _ in DEPARTMENTS] if known else []
        big_teams = count >= 20 and len(self.users) >= 500
        return [*known.values(), *self._teams(count - len(known), departments, big_teams)]

    # ----- well-known groups ---------------------------------------------------------

    def _well_known(self) -> dict[str, Group]:
        g = {
            "all-staff": self._group("all-staff", "All staff", "Every user of the organisation", aliases=["staff"]),
            "admins": self._group("admins", "Administrators", "Super administrators"),
            **{d: self._group(d, d.title(), f"The {d.title()} department") for d, _ in DEPARTMENTS},
            "finance": self._group("finance", "Finance", "Finance team"),
            "contractors": self._group("contractors", "Contractors", "External contractors and partners"),
            "everyone-nested": self._group("everyone-nested", "Everyone (nested)", "Engineering and Sales"),
        }
        g["all-staff"].members.append(Member(self.customer_id, None, CUSTOMER, "MEMBER", "ACTIVE"))
        g["admins"].members.extend(self._rows([u for u in self.users if u.is_admin][:10], owner=True))
        for department, org_unit in DEPARTMENTS:
            g[department].members.extend(self._rows(self._from_org(org_unit, self.rng.randint(5, 15)), owner=True))
        g["finance"].members.extend(self._rows(self._from_org("/Finance", 25)))
        g["contractors"].members.extend(self._external_rows())
        g["everyone-nested"].members.extend(_group_row(g[d]) for d in ("engineering", "sales"))
        return g

    def _from_org(self, org_unit: str, limit: int) -> list[User]:
        return [u for u in self.users if u.org_unit_path.startswith(org_unit)][:limit]

    def _external_rows(self) -> list[Member]:
        count = self.rng.randint(3, 6)
        rows = [
            Member(self._outsider_id(), f"{_slug(self.rng.choice(FIRST_NAMES))}{i}@{PARTNER_DOMAIN}", USER)
            for i in range(count)
        ]
        rows.append(Member(self._outsider_id(), "vendor-desk@supplier.example.net", EXTERNAL, "MEMBER", None))
        return rows

    def _outsider_id(self) -> str:
        """A user id that is not a directory user, as Google gives people outside the domain."""
        return _unique(lambda: _user_id(self.rng), self.user_ids)

    # ----- teams ---------------------------------------------------------------------

    def _teams(self, count: int, departments: list[Group], big_teams: bool) -> list[Group]:
        teams: list[Group] = []
        by_level: dict[int, list[Group]] = {}
        big = set(self.rng.sample(range(count), k=min(count, max(2, count // 100)))) if big_teams else set()
        for index in range(count):
            number = f"{index + 1:04d}"
            team = self._group(f"team-{number}", f"Team {number}", f"Working group {number}")
            team.admin_created = self.rng.random() >= 0.1
            if self.rng.random() < 0.05:
                team.aliases.append(self._alias(f"t{number}"))
            empty = count >= 12 and index == count - 1  # exercises the "no members key" quirk
            if not empty:
                team.members.extend(self._team_rows(self._team_size(index in big)))
            level = self._level(by_level)
            parents = departments if level == 2 else by_level.get(level - 1, [])
            for parent in self._parents(parents):
                parent.members.append(_group_row(team))
            by_level.setdefault(level, []).append(team)
            teams.append(team)
        return teams

    def _level(self, by_level: dict[int, list[Group]]) -> int:
        """Levels 2..4; a level is only used once its parent level has a team."""
        wanted = self.rng.choices((2, 3, 4), (60, 25, 15))[0]
        return min(wanted, max(by_level, default=1) + 1)

    def _parents(self, candidates: list[Group]) -> list[Group]:
        if not candidates:
            return []
        extra = 1 if self.rng.random() < 0.05 and len(candidates) > 1 else 0
        return self.rng.sample(candidates, k=1 + extra)

    def _team_size(self, big: bool) -> int:
        if big:
            return self.rng.randint(201, max(201, min(len(self.users) // 2, 600)))
        return 3 + int(37 * self.rng.random() ** 2.5)

    def _team_rows(self, size: int) -> list[Member]:
        """A uniform sample plus a few "hub" people, so some users sit in many groups."""
        size = min(size, len(self.users))
        picked = [self.users[i] for i in self.rng.sample(range(len(self.users)), k=size)]
        picked += self.rng.sample(self.hubs, k=min(len(self.hubs), self.rng.randint(0, 2)))
        return self._rows(list({u.id: u for u in picked}.values()), owner=self.rng.random() < 0.6)

    def _rows(self, users: list[User], owner: bool = False) -> list[Member]:
        rows = []
        for position, user in enumerate(users):
            roll = self.rng.random()
            role = "OWNER" if owner and position == 0 else "MANAGER" if roll < 0.03 else "MEMBER"
            rows.append(
                Member(
                    user.id,
                    user.primary_email,
                    USER,
                    None if 0.03 <= roll < 0.035 else role,
                    None if 0.035 <= roll < 0.04 else user.member_status(),
                )
            )
        return rows

    def _group(self, local: str, name: str, description: str, aliases: Iterable[str] = ()) -> Group:
        group_id = _unique(lambda: _group_id(self.rng), self.ids)
        return Group(group_id, f"{local}@{self.domain}", name, description, aliases=[self._alias(a) for a in aliases])

    def _alias(self, local: str) -> str:
        return f"{local}@{self.domain}"


def _group_row(group: Group) -> Member:
    return Member(group.id, group.email, GROUP, "MEMBER", "ACTIVE")
