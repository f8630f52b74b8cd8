"""The `audit` pipeline stage: reconciliation checks, then table history.

Checks go first so that the history collected right after also records the version the checks
wrote. A failed check is recorded like any other, then the stage raises ReconciliationError
naming it (non-zero exit), after the history has been collected.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.audit import RECONCILIATION_TABLE
from lakehouse.audit.chain import append_chained
from lakehouse.audit.history import collect_history
from lakehouse.audit.reconcile import CHECK_SCHEMA, reconciliation_checks
from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.errors import ReconciliationError

if TYPE_CHECKING:
    from lakehouse.pipeline import RunContext


def audit_inputs(config: Config) -> list[str]:
    """Tables the reconciliation reads (the history reads every table's log, not its data)."""
    from lakehouse.sources import load_sources

    sources = load_sources(config).values()
    return sorted(
        {s.bronze_table for s in sources}
        | {"silver.customers", "silver.orders", "silver.quarantine", "audit.stage_progress"}
        | {"gold.customer_360", "gold.kpi_daily"}
    )


def _shown(check: dict, field: str) -> str:
    """A check's expected or actual value as a person reads it (gold_as_of holds dates as
    day numbers, so that it fits the table's double columns)."""
    value = check[field]
    if check["check"] == "gold_as_of":
        return date.fromordinal(int(value)).isoformat()
    return f"{value:,.6g}"


def run_audit(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    catalog = Catalog(config)
    lines: list[str] = []
    checks = reconciliation_checks(spark, config) if config.get("audit.reconcile") else []
    if checks:
        checks_df = spark.createDataFrame(
            [
                (ctx.run_id, c["check"], c["subject"], c["expected"], c["actual"], c["passed"],
                 c["detail"], None)
                for c in checks
            ],
            CHECK_SCHEMA,
        ).withColumn("checked_at", F.current_timestamp())
        append_chained(spark, catalog, RECONCILIATION_TABLE, checks_df, ["check", "subject"])
    failed = [c for c in checks if not c["passed"]]
    lines.append(
        f"  audit.reconciliation: {len(checks) - len(failed)}/{len(checks)} checks passed"
        + "".join(
            f"\n    FAILED {c['check']} {c['subject']}: expected {_shown(c, 'expected')}, "
            f"got {_shown(c, 'actual')} ({c['detail']})"
            for c in failed
        )
    )
    lines += collect_history(
        spark, catalog, ctx.run_id, tuple(config.get("audit.extra_tables"))
    )
    if failed:
        names = "; ".join(
            f"{c['check']} {c['subject']} expected {_shown(c, 'expected')} "
            f"got {_shown(c, 'actual')}"
            for c in failed
        )
        raise ReconciliationError(
            f"reconciliation failed: {names} (details in {RECONCILIATION_TABLE}, run {ctx.run_id})"
        )
    lines.append(f"audit: {len(checks)} checks passed, history up to date")
    return lines
