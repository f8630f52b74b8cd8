"""Silver: typed, normalised, deduplicated, pseudonymised tables MERGEd from bronze's changes.

    run_silver(spark, config, run_id) -> list[str]      summary line per table
    reconcile(spark, config) -> list[dict]               bronze = silver + quarantined + dups

See lakehouse/silver/job.py for the run's two phases, docs/tables.md for the table contracts.
"""

from __future__ import annotations

from lakehouse.silver.job import run_silver
from lakehouse.silver.reconcile import reconcile

__all__ = ["reconcile", "run_silver"]
