"""Pure transformations (polars, no I/O): memberships, nested groups, role mapping, explanations."""
