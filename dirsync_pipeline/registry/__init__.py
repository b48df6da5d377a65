"""The connections registry: which organisations dirsync syncs, their settings and their state, changed at run
time (``dirsync connections ...``) without restarting or reloading anything."""

from dirsync_pipeline.registry.store import (
    REGISTRY_FILE,
    RegisteredConnection,
    Registry,
    RegistryError,
    Status,
    open_registry,
)

__all__ = ["REGISTRY_FILE", "RegisteredConnection", "Registry", "RegistryError", "Status", "open_registry"]
