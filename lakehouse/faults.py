"""Crash points for the fault-injection suite (tests/faults, `make faults`).

``crash_point("silver.merge")`` does nothing unless the environment variable
``LAKEHOUSE_CRASH_AT`` names that point, as ``NAME`` or ``NAME:N`` (the N-th time the point is
reached in this process, default 1): then the process kills itself with SIGKILL on the spot, as
a power cut or an OOM killer would, with no chance to clean up. Jobs place these points between
the steps whose interruption matters (before and after each commit).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "LAKEHOUSE_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
