"""dirsync: a Dagster-native Google Workspace directory sync."""
