"""Google access: credentials, the Directory API client (paging, concurrency), retries and errors."""
