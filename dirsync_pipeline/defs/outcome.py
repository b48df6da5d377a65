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
    except AuthorizationError as exc:
        registry.record_failure(connection_id, Status.INVALID_CREDENTIALS, str(exc))
        raise
    except QuarantinedFailure as exc:
        registry.record_failure(connection_id, Status.QUARANTINED, exc.description or "mass-removal breaker")
        raise
    except dg.Failure as exc:
        registry.record_failure(connection_id, Status.FAILING, exc.description or type(exc).__name__)
        raise
    except Exception as exc:
        registry.record_failure(connection_id, Status.FAILING, str(exc).strip().splitlines()[0] if str(exc).strip()
                                else type(exc).__name__)
        raise
