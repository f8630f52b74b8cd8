"""Shared body of the thin spark-submit entry points in jobs/."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lakehouse.cli import main


def run_stage_job(stage: str, argv: Sequence[str] | None = None) -> None:
    """`spark-submit jobs/<stage>.py [--env cluster] [--as-of DATE]`: run one stage, exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.exit(main(["run", stage, *args]))
