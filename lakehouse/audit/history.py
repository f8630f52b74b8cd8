"""audit.table_history: `DESCRIBE HISTORY` of every table, recorded incrementally.

One row per (table, version), appended only for versions not recorded yet, so re-running the
audit adds nothing twice. `run_id` is the pipeline run that made the version, read from the
commit's userMetadata (`run_id=...`, set by the pipeline for every stage's commits).
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.audit import HISTORY_TABLE
from lakehouse.audit.chain import append_chained
from lakehouse.audit.timetravel import list_tables, table_versions
from lakehouse.catalog import Catalog

HISTORY_COLUMNS = (
    "table", "version", "commit_ts", "operation", "operation_metrics", "rows_written",
    "rows_inserted", "rows_updated", "rows_deleted", "user_metadata", "run_id",
    "audit_run_id", "recorded_at",
)


def _metric(name: str) -> Column:
    return F.col("operationMetrics").getItem(name).cast("long")


def with_history_columns(history_df: DataFrame, table: str, audit_run_id: str) -> DataFrame:
    """DeltaTable.history() rows -> audit.table_history rows (chain columns excluded).

    Row counts come from the operation's own metrics: WRITE/append report numOutputRows,
    MERGE numTarget*, UPDATE/DELETE numUpdated/numDeletedRows, RESTORE none of these.
    """
    inserted = F.coalesce(_metric("numTargetRowsInserted"), _metric("numOutputRows"))
    return history_df.select(
        F.lit(table).alias("table"),
        F.col("version").cast("long").alias("version"),
        F.col("timestamp").alias("commit_ts"),
        F.col("operation"),
        F.col("operationMetrics").alias("operation_metrics"),
        _metric("numOutputRows").alias("rows_written"),
        inserted.alias("rows_inserted"),
        F.coalesce(_metric("numTargetRowsUpdated"), _metric("numUpdatedRows")).alias(
            "rows_updated"
        ),
        F.coalesce(_metric("numTargetRowsDeleted"), _metric("numDeletedRows")).alias(
            "rows_deleted"
        ),
        F.col("userMetadata").alias("user_metadata"),
        F.nullif(F.regexp_extract(F.col("userMetadata"), r"run_id=(\S+)", 1), F.lit("")).alias(
            "run_id"
        ),
        F.lit(audit_run_id).alias("audit_run_id"),
        F.current_timestamp().alias("recorded_at"),
    )


def recorded_versions(spark: SparkSession, catalog: Catalog) -> dict[str, int]:
    """Newest version already recorded per table (one row per table reaches the driver)."""
    if not catalog.exists(spark, HISTORY_TABLE):
        return {}
    rows = catalog.read(spark, HISTORY_TABLE).groupBy("table").agg(F.max("version").alias("v"))
    return {r["table"]: int(r["v"]) for r in rows.collect()}


def collect_history(
    spark: SparkSession, catalog: Catalog, audit_run_id: str, extra_tables: tuple[str, ...] = ()
) -> list[str]:
    """Append every table's versions not yet in audit.table_history; one summary line each
    for the tables that had new versions."""
    recorded = recorded_versions(spark, catalog)
    current = table_versions(spark, catalog, list_tables(spark, catalog, extra_tables))
    # A table re-created from scratch starts again at version 0: record it again from there.
    todo = {
        name: (recorded.get(name, -1) if recorded.get(name, -1) <= version else -1)
        for name, version in current.items()
        if recorded.get(name, -1) != version
    }
    if not todo:
        return ["  audit.table_history: no new versions"]
    parts = [
        with_history_columns(
            catalog.delta_table(spark, name).history().where(F.col("version") > after),
            name, audit_run_id,
        )
        for name, after in sorted(todo.items())
    ]
    new_rows = reduce(DataFrame.unionByName, parts)
    appended = append_chained(spark, catalog, HISTORY_TABLE, new_rows, ["table", "version"])
    return [
        f"  audit.table_history: +{appended} versions of {len(todo)} table(s) "
        f"({', '.join(f'{n} {todo[n] + 1}..{current[n]}' for n in sorted(todo))})"
    ]
