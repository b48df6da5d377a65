"""An independent, naive statement of the sync semantics, computed straight from the emulator's model.

Written as plain loops over the Directory objects (no polars, no Dagster) so that the pipeline's
tables can be compared with what the semantics say, for directories the code was never tuned on.
"""

from __future__ import annotations

from dirsync_pipeline.emulator import Directory


def expected_memberships(directory: Directory, selected: list[str]) -> set[tuple[str, str, bool, bool]]:
    """(user_id, group_id, is_direct, user_active) for every directory user in every selected group."""
    users = {u.id: u for u in directory.users.values() if not u.deleted}
    rows = set()
    for key in selected:
        root = directory.find_group(key)
        if root is None:
            continue
        found: dict[str, bool] = {}
        stack, visited = [root.id], set()
        while stack:
            group_id = stack.pop()
            if group_id in visited or group_id not in directory.groups:
                continue
            visited.add(group_id)
            for member in directory.groups[group_id].members:
                if member.type == "GROUP":
                    stack.append(member.id)
                elif member.type == "CUSTOMER":
                    for uid in users:
                        found.setdefault(uid, False)
                elif member.id in users:
                    found[member.id] = found.get(member.id, False) or group_id == root.id
        for uid, direct in found.items():
            user = users[uid]
            rows.add((uid, root.id, direct, not (user.suspended or user.archived)))
    return rows


def expected_entitlements(
    directory: Directory, selected: list[str], role_mapping: dict[str, list[str]],
    default_role: str | None = None, priority: list[str] | None = None,
) -> set[tuple[str, str, tuple[str, ...]]]:
    """(user_id, role, granted_via) for active users, following the documented role rules."""
    memberships = expected_memberships(directory, selected)
    selected_ids = {directory.find_group(k).id for k in selected if directory.find_group(k)}
    roles_of_group: dict[str, list[str]] = {}
    for key, roles in role_mapping.items():
        group = directory.find_group(key)
        if group is not None and group.id in selected_ids:
            roles_of_group.setdefault(group.id, []).extend(roles)
    granted: dict[str, dict[str, set[str]]] = {}
    for uid, group_id, _direct, active in memberships:
        if not active:
            continue
        user_roles = granted.setdefault(uid, {})
        for role in roles_of_group.get(group_id, []):
            user_roles.setdefault(role, set()).add(directory.groups[group_id].email.lower())
    rows = set()
    for uid, roles in granted.items():
        if not roles and default_role:
            roles = {default_role: set()}
        if priority and roles:
            best = min(roles, key=priority.index)
            roles = {best: roles[best]}
        rows |= {(uid, role, tuple(sorted(via))) for role, via in roles.items()}
    return rows
