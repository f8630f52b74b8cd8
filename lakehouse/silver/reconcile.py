"""Count reconciliation: every bronze row is a silver row, a quarantine row or a duplicate.

Computed from the tables themselves, not from counters a run kept, so it also holds across
crashed and replayed runs. For each source, over the bronze versions silver has processed:

- a bronze row is *quarantined* when silver.quarantine holds a row of its source with its
  natural key and its (stored) raw record;
- the other rows are *clean*; each distinct natural key among them must be exactly one silver
  row, and the further clean rows of a key (re-deliveries, superseded versions) are
  *duplicates removed*, as are bronze rows equal to a quarantine row already stored;
- except: a key silver holds although all its bronze rows equal a quarantine row was
  quarantined once and passed on a later delivery of the same line (a rule that depends on
  the time of arrival): one of those rows is its silver row, not a duplicate.

Then bronze rows = silver rows + quarantined rows + duplicates removed holds exactly when
nothing was dropped silently (and nothing invented).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.privacy.pseudonym import pseudonym_key, trim_whitespace
from lakehouse.silver import io
from lakehouse.silver.cleanse import with_quarantine_raw
from lakehouse.silver.job import QUARANTINE, STAGE
from lakehouse.silver.transforms import TableSpec, crm_pseudonym, table_spec
from lakehouse.sources import SourceSpec, load_sources


def reconcile(
    spark: SparkSession, config: Config, sources: Mapping[str, SourceSpec] | None = None
) -> list[dict[str, Any]]:
    """One dict per processed source: bronze_rows, silver_rows, quarantined_rows,
    duplicates_removed, balanced (bool), bronze_version."""
    catalog = Catalog(config)
    sources = dict(sources) if sources is not None else load_sources(config)
    progress = io.read_progress(spark, catalog, STAGE)
    key = pseudonym_key(config) if any(s.pii for s in sources.values()) else b""
    has_quarantine = catalog.exists(spark, QUARANTINE)
    results = []
    for name, source in sources.items():
        if name not in progress:
            continue
        version = progress[name]
        spec = table_spec(source)
        silver_table = f"silver.{spec.table}"
        bronze = with_quarantine_raw(
            io.read_bronze_changes(spark, catalog, source.bronze_table, 0, version), source, key
        )
        natural_key = F.concat_ws("|", *[trim_whitespace(k) for k in source.natural_key])
        rows = bronze.select(
            F.when(natural_key != "", natural_key).alias("natural_key"),
            F.col("_quarantine_raw").alias("raw"),
        )
        if has_quarantine:
            quarantine = (
                catalog.read(spark, QUARANTINE)
                .where(F.col("source") == name)
                .select("natural_key", "raw")
            )
            flags = quarantine.distinct().withColumn("_q", F.lit(True))
            cond = rows["natural_key"].eqNullSafe(flags["natural_key"]) & rows["raw"].eqNullSafe(
                flags["raw"]
            )
            rows = rows.join(flags, cond, how="left").select(
                rows["natural_key"], F.col("_q").isNotNull().alias("_q")
            )
            quarantined = quarantine.count()
        else:
            rows = rows.withColumn("_q", F.lit(False))
            quarantined = 0
        figures = rows.agg(
            F.count(F.lit(1)).alias("bronze"),
            F.sum(F.col("_q").cast("long")).alias("q_rows"),
            F.sum((~F.col("_q")).cast("long")).alias("clean"),
            F.count_distinct(F.when(~F.col("_q"), F.col("natural_key"))).alias("keys"),
        ).first()
        silver_rows = passed_later = 0
        if catalog.exists(spark, silver_table):
            silver = catalog.read(spark, silver_table)
            silver_rows = silver.count()
            if has_quarantine:
                passed_later = _passed_on_redelivery(rows, silver, _silver_key(source, spec, key),
                                                     spec.key)
        bronze_rows = int(figures["bronze"] or 0)
        duplicates = (int(figures["clean"] or 0) - int(figures["keys"] or 0)) + (
            int(figures["q_rows"] or 0) - passed_later - quarantined
        )
        results.append(
            {
                "source": name,
                "table": silver_table,
                "bronze_version": version,
                "bronze_rows": bronze_rows,
                "silver_rows": silver_rows,
                "quarantined_rows": quarantined,
                "duplicates_removed": duplicates,
                "balanced": bronze_rows == silver_rows + quarantined + duplicates,
            }
        )
    return results


def _silver_key(source: SourceSpec, spec: TableSpec, key: bytes) -> Column:
    """The silver table's key, as one string, of a bronze row's ``natural_key`` (its trimmed
    key columns joined by '|'): that itself, or for the CRM the customer_key (the pseudonym
    of the trimmed customer_id)."""
    if spec.key == source.natural_key:
        return F.col("natural_key")
    if spec.key == ("customer_key",) and source.natural_key == ("customer_id",):
        return crm_pseudonym(F.col("natural_key"), key)
    raise ValueError(f"{source.name}: no known silver key for natural key {source.natural_key}")


def _passed_on_redelivery(
    rows: DataFrame, silver: DataFrame, silver_key: Column, silver_columns: tuple[str, ...]
) -> int:
    """Keys silver holds whose bronze rows all equal a quarantine row (``_q``). The silver key
    (an HMAC for the CRM) is derived for those few keys only, not for every bronze row."""
    clean_keys = rows.where(~F.col("_q")).select("natural_key")
    only_quarantined = (
        rows.where(F.col("_q") & F.col("natural_key").isNotNull())
        .select("natural_key").distinct()
        .join(clean_keys, "natural_key", how="left_anti")
        .select(silver_key.alias("silver_key"))
    )
    held = silver.select(F.concat_ws("|", *silver_columns).alias("silver_key"))
    return only_quarantined.join(held, "silver_key", how="left_semi").count()
