"""dirsync: a Dagster-native Google Workspace directory sync."""

import os

# polars allocates with jemalloc and, by default, leaves freed pages "muzzy" (MADV_FREE): the kernel still
# counts them in the process's RSS until it runs short of memory. A sync's frames are large and short-lived,
# so return freed pages at once and keep RSS near the working set. Set before polars is first imported;
# an operator's own _RJEM_MALLOC_CONF wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:0")
