"""One pipeline run at a time per data root.

Two runs on the same tables would race on the bronze stream checkpoints and on every MERGE;
Delta would reject some commits, but a second run could still redo work the first one is
committing. A run therefore holds an exclusive OS file lock (``flock``) on
``<data_dir>/_locks/pipeline.lock``; a second run fails at once with one line naming the holder.
The OS drops the lock when the holder dies (even by SIGKILL), so a crash never leaves a stale
lock. Object-store data roots have no shared lock file: there, schedule one run at a time (the
job scheduler's concurrency limit) and rely on Delta's conflict detection as the backstop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from lakehouse.config import Config, local_path
from lakehouse.errors import LakehouseError


class PipelineBusyError(LakehouseError):
    """Another pipeline run holds the data root's lock."""


@contextlib.contextmanager
def pipeline_lock(config: Config, run_id: str) -> Iterator[None]:
    if not config.is_local_data_dir:
        yield
        return
    folder = local_path(config.data_dir) / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise PipelineBusyError(
                f"another pipeline run is working on {config.data_dir} ({holder}): wait for it "
                f"to finish and run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(),
                                 "started": datetime.now(UTC).isoformat(timespec="seconds")}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the flock
