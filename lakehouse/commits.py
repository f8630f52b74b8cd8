"""Delta commits that meet a concurrent writer: retried, since Delta's optimistic concurrency
rejects a commit whose reads another commit invalidated, and a MERGE or DELETE re-run against
the new snapshot gives the right result (blind appends never conflict)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)

from lakehouse.errors import LakehouseError

log = logging.getLogger(__name__)
T = TypeVar("T")
CONFLICTS = (
    DeltaConcurrentModificationException, ConcurrentWriteException, MetadataChangedException,
    ProtocolChangedException, ConcurrentAppendException, ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException, ConcurrentTransactionException,
)


class CommitConflictError(LakehouseError):
    """A commit kept conflicting with concurrent writers."""


def retry_on_conflict(action: Callable[[], T], what: str, attempts: int = 6,
                      backoff_seconds: float = 0.5) -> T:
    """``action()``, re-run when Delta reports a concurrent-commit conflict (exponential back-off);
    after ``attempts`` conflicts, one clear error naming ``what``."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CONFLICTS as exc:
            if attempt == attempts:
                raise CommitConflictError(
                    f"{what}: gave up after {attempts} commit conflicts with concurrent writers "
                    f"({type(exc).__name__}); run again when the other job has finished"
                ) from None
            log.warning("%s: commit conflict (%s), retry %d of %d", what, type(exc).__name__,
                        attempt, attempts - 1)
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
