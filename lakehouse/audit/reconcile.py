"""Reconciliation checks after a pipeline run, recorded in audit.reconciliation.

* ``bronze_balance`` per source: bronze rows = silver rows + quarantined + duplicates removed,
  computed by lakehouse.silver.reconcile (one implementation of that count, reused here);
* ``gold_customers``: gold.customer_360 has one row per resolved customer, i.e. per distinct
  customer_key of silver.customers that had signed up by the snapshot's as_of (or whose
  signup date is unknown);
* ``order_value``: the EUR value of completed silver orders up to the end of as_of (latest
  version of each order_id) equals gold.kpi_daily's revenue and gold.customer_360's monetary
  total for the orders of known customers.

Gold is compared with the silver versions it was built from (its latest lineage record), so a
silver run after gold does not make the check fail; without lineage, silver's newest version.
An erasure after gold deleted the person from both and vacuumed the versions gold was built
from: gold is then compared with the version right after the erasure (comparable_version).
The expected figures are computed here from silver directly, not with gold's builders.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse.audit import LINEAGE_TABLE
from lakehouse.audit.timetravel import missing_files
from lakehouse.catalog import NO_DATA_OPERATIONS, Catalog
from lakehouse.config import Config
from lakehouse.errors import VersionNotAvailableError

CHECK_SCHEMA = (
    "audit_run_id string, check string, subject string, expected double, actual double, "
    "passed boolean, detail string, checked_at timestamp"
)
_TOLERANCE = 1e-6  # gold sums money as decimal(24,6): anything above that is a real difference


def gold_input_versions(spark: SparkSession, catalog: Catalog) -> dict[str, int]:
    """Silver versions read by the latest completed gold stage, from audit.lineage."""
    if not catalog.exists(spark, LINEAGE_TABLE):
        return {}
    lineage = catalog.read(spark, LINEAGE_TABLE).where(
        (F.col("stage") == "gold") & (F.col("status") == "COMPLETE")
    )
    latest = lineage.agg(F.max_by("run_id", "record_seq").alias("run_id")).first()["run_id"]
    if latest is None:
        return {}
    rows = lineage.where((F.col("run_id") == latest) & (F.col("direction") == "input")).collect()
    return {r["dataset"]: int(r["version"]) for r in rows if r["version"] is not None}


# Commits that add and change no row: the catalog's no-data commits (VACUUM's bookkeeping,
# table properties), a DELETE, compaction, an erasure's purge of deletion vectors (REORG, which
# rewrites files without the rows already deleted), and (below) a MERGE that only deletes (an
# erasure's or retention's).
_NO_ROW_ADDED_OPERATIONS = NO_DATA_OPERATIONS | {"DELETE", "OPTIMIZE", "REORG"}


def _adds_no_row(operation: str, metrics: dict[str, str] | None) -> bool:
    if operation in _NO_ROW_ADDED_OPERATIONS:
        return True
    metrics = metrics or {}
    return operation == "MERGE" and all(
        int(metrics.get(m, "1")) == 0 for m in ("numTargetRowsInserted", "numTargetRowsUpdated")
    )


def comparable_version(spark: SparkSession, catalog: Catalog, name: str, built_from: int) -> int:
    """The version of silver table ``name`` that gold, built from ``built_from``, now matches.

    An erasure (or retention) deletes the person from silver and from gold alike, then VACUUM
    removes the files of every version before its delete, ``built_from`` among them. Gold
    then matches ``built_from`` advanced over the commits right after it that add or change
    no row. A version that can no longer be read (a silver run came between, then an erasure)
    raises VersionNotAvailableError naming the remedy, instead of a failed read inside Spark.
    """
    later = (
        catalog.delta_table(spark, name).history()
        .where(F.col("version") > built_from)
        .select("version", "operation", "operationMetrics")
        .orderBy("version")
        .collect()
    )
    version = built_from
    for commit in later:
        if not _adds_no_row(commit["operation"], commit["operationMetrics"]):
            break
        version = commit["version"]
    if missing_files(spark, catalog, name, version):
        raise VersionNotAvailableError(
            f"gold was built from {name} version {built_from}, whose data files VACUUM has "
            f"removed since (an erasure after a later silver run), so gold cannot be checked "
            f"against it: run `lakehouse run gold`, then the audit again"
        )
    return version


def _latest_orders(orders_df: DataFrame) -> DataFrame:
    window = Window.partitionBy("order_id").orderBy(
        F.col("_bronze_version").desc_nulls_last(), F.col("order_ts").desc_nulls_last()
    ).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return (
        orders_df.where(F.col("order_id").isNotNull())
        .withColumn("_n", F.row_number().over(window))
        .where(F.col("_n") == 1)
    )


def _check(check: str, subject: str, expected: float, actual: float, detail: str) -> dict:
    return {
        "check": check, "subject": subject, "expected": float(expected),
        "actual": float(actual), "passed": abs(expected - actual) <= _TOLERANCE, "detail": detail,
    }


def gold_checks(spark: SparkSession, catalog: Catalog) -> list[dict[str, Any]]:
    if not all(catalog.exists(spark, t) for t in ("gold.customer_360", "gold.kpi_daily")):
        return []
    versions = {
        name: comparable_version(spark, catalog, name, version)
        for name, version in gold_input_versions(spark, catalog).items()
        if name in ("silver.customers", "silver.orders")
    }
    silver = {
        name: catalog.read(spark, name, version=versions.get(name))
        for name in ("silver.customers", "silver.orders")
    }
    where = ", ".join(f"{n}@{versions[n]}" for n in sorted(silver) if n in versions) or "newest"
    c360 = catalog.read(spark, "gold.customer_360")
    as_of_row = c360.agg(F.max("as_of").alias("as_of"), F.count(F.lit(1)).alias("n")).first()
    as_of: date | None = as_of_row["as_of"]
    if as_of is None:
        return []
    customers = silver["silver.customers"].where(
        F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(as_of))
    )
    expected_customers = customers.agg(F.count_distinct("customer_key")).first()[0]
    latest_orders = _latest_orders(silver["silver.orders"])
    known = customers.select("customer_key").distinct()
    money = "decimal(24,6)"
    known_sum = (
        _completed_until(latest_orders, as_of).join(known, on="customer_key", how="inner")
        .agg(F.sum(F.col("amount_eur").cast(money)))
        .first()[0]
    )
    kpi = catalog.read(spark, "gold.kpi_daily").agg(
        F.sum(F.col("revenue_eur").cast(money)).alias("revenue"), F.max("as_of").alias("as_of")
    ).first()
    # Each table is checked for the date it holds: after a restore of one of them they differ,
    # which gold_as_of reports, instead of a revenue gap blamed on the wrong table.
    kpi_as_of = kpi["as_of"] or as_of
    order_sum = _completed_until(latest_orders, kpi_as_of).agg(
        F.sum(F.col("amount_eur").cast(money))
    ).first()[0]
    monetary = c360.agg(F.sum(F.col("monetary").cast(money))).first()[0]
    detail = f"as_of {as_of}, silver {where}"
    return [
        _check("gold_as_of", "gold.kpi_daily", as_of.toordinal(), kpi_as_of.toordinal(),
               f"gold.customer_360 as_of {as_of}, gold.kpi_daily as_of {kpi_as_of}"
               + ("" if kpi_as_of == as_of else ": the gold tables describe different dates "
                  "(one restored or rebuilt alone?); run gold for one --as-of")),
        _check("gold_customers", "gold.customer_360", expected_customers, as_of_row["n"], detail),
        _check("order_value", "gold.kpi_daily", float(order_sum or 0), float(kpi["revenue"] or 0),
               f"as_of {kpi_as_of}, silver {where}"),
        _check("order_value", "gold.customer_360", float(known_sum or 0),
               float(monetary or 0), detail),
    ]


def _completed_until(latest_orders: DataFrame, as_of: date) -> DataFrame:
    """Completed orders placed on or before ``as_of`` (UTC days, as gold counts them)."""
    cutoff = F.lit(f"{(as_of + timedelta(days=1)).isoformat()} 00:00:00+00:00").cast("timestamp")
    return latest_orders.where(
        (F.lower(F.col("status")) == "completed") & (F.col("order_ts") < cutoff)
    )


def bronze_checks(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    from lakehouse.silver.reconcile import reconcile

    return [
        _check(
            "bronze_balance", r["source"], r["bronze_rows"],
            r["silver_rows"] + r["quarantined_rows"] + r["duplicates_removed"],
            f"bronze@{r['bronze_version']}: {r['silver_rows']} silver + "
            f"{r['quarantined_rows']} quarantined + {r['duplicates_removed']} duplicates",
        )
        for r in reconcile(spark, config)
    ]


def reconciliation_checks(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    return [*bronze_checks(spark, config), *gold_checks(spark, Catalog(config))]
