"""A faithful local emulator of the Google Admin SDK Directory API (users, groups, members)."""

from .directory import Directory, Group, Member, User, generate_directory
from .faults import FaultPlan, ScriptedFault
from .server import DirectoryEmulator

__all__ = [
    "Directory",
    "DirectoryEmulator",
    "FaultPlan",
    "Group",
    "Member",
    "ScriptedFault",
    "User",
    "generate_directory",
]
