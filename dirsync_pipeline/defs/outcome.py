"""What a sync's steps record in the registry: the connection's status, last sync and last error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dirsync_pipeline.google.errors import AuthorizationError
from dirsync_pipeline.registry import Registry, Status


class QuarantinedFailure(dg.Failure):
    """The mass-removal breaker refused the sync: the connection is ``quarantined`` until a sync passes."""


@contextmanager
def recorded_outcome(registry: Registry, connection_id: str) -> Iterator[None]:
    """Record a failure of the block as the connection's status and last error, then let it fail the step.

    Google refusing the credentials is ``invalid_credentials``, the breaker ``quarantined``, anything else
    ``failing``. A run stopped on purpose (terminated, SIGTERM) records nothing: nothing failed.
    """
    try:
        yield
    except Exception as exc:
        registry.record_failure(connection_id, _status_of(exc), _message_of(exc))
        raise


def _status_of(error: Exception) -> Status:
    if isinstance(error, AuthorizationError):
        return Status.INVALID_CREDENTIALS
    return Status.QUARANTINED if isinstance(error, QuarantinedFailure) else Status.FAILING


def _message_of(error: Exception) -> str:
    """A Failure's description (what Dagster shows), else the error's first line, else its class name."""
    text = (error.description if isinstance(error, dg.Failure) else str(error)) or ""
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
