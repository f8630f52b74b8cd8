"""Independent steps of a stage run side by side (tables of different sources, say).

On a small delivery most of a step's time is waiting (a stream starting, a Delta log read, a
commit), which overlaps; Spark accepts jobs from several threads of one session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from lakehouse.errors import error_line

T = TypeVar("T")
R = TypeVar("R")


def side_by_side(step: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> list[R]:
    """step(item) for every item, ``workers`` at a time; the results in the order of items.

    Every step runs to its end before a failure is raised, so no step is cut off half-way by
    another's error; the failure raised is the first failing item's in the order of items
    (whichever failed first in time), so the same input reports the same error on every run.
    """
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1)),
                            thread_name_prefix=name) as pool:
        running = [pool.submit(step, item) for item in items]
    failures = [e for e in (future.exception() for future in running) if e is not None]
    if failures:
        # The others are said too, as notes of the one raised (the CLI prints them): in a
        # local session Spark does not log a failed task, so they would be said nowhere.
        for other in failures[1:]:
            failures[0].add_note(f"also failed: {error_line(other)}")
        raise failures[0]
    return [future.result() for future in running]
