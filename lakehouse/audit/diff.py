"""Rows added, removed and changed between two versions of a table.

Net changes are multisets of whole rows: ``added`` = rows in the later state not in the earlier
one, ``removed`` the reverse (exceptAll, so a row rewritten unchanged, as a gold overwrite does,
cancels out). Two ways to get them:

* **change data feed** (when on for every version in the range): the inserted and post-update
  images minus the deleted and pre-update images of the versions in between. Reads only the
  files the range touched, for MERGE/UPDATE/DELETE;
* **snapshot comparison** otherwise: the two versions read whole and compared.

With a key, an added and a removed row of the same key pair up as one *changed* row; without
one, changes show as a removal plus an addition. Counts come first; samples are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from lakehouse.audit.timetravel import change_files_missing, check_version
from lakehouse.catalog import Catalog
from lakehouse.errors import LakehouseError
from lakehouse.privacy.stats import PERSONAL_COLUMNS

CDF_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
# One-key grains of the contract tables (docs/tables.md): the default --key.
DEFAULT_KEYS = {
    "silver.customers": ("customer_key",),
    "silver.customer_pii": ("customer_key",),
    "silver.events": ("event_id",),
    "silver.orders": ("order_id",),
    "silver.payments": ("payment_id",),
    "silver.social_posts": ("post_id",),
    "silver.iot_readings": ("reading_id",),
    "silver.identity_map": ("id_type", "id_value"),
    "gold.customer_360": ("customer_key",),
    "gold.journeys": ("journey_id",),
    "gold.kpi_daily": ("day",),
    "gold.kpi_channel_daily": ("day", "channel"),
    "audit.table_history": ("table", "version"),
}


@dataclass
class TableDiff:
    table: str
    from_version: int
    to_version: int
    method: str
    key: tuple[str, ...]
    added: int
    removed: int
    changed: int
    added_sample: list[dict[str, Any]] = field(default_factory=list)
    removed_sample: list[dict[str, Any]] = field(default_factory=list)
    changed_sample: list[dict[str, Any]] = field(default_factory=list)  # key, column -> (old, new)
    note: str = ""

    def lines(self) -> list[str]:
        head = (
            f"{self.table} version {self.from_version} -> {self.to_version} ({self.method}"
            f"{', key ' + ','.join(self.key) if self.key else ', no key'}): "
            f"{self.added:,} added, {self.removed:,} removed, {self.changed:,} changed"
        )
        out = [head] + ([f"  note: {self.note}"] if self.note else [])
        for label, sample in (("added", self.added_sample), ("removed", self.removed_sample)):
            if sample:
                out.append(f"  sample {label}:")
                out += [f"    {_row_text(r)}" for r in sample]
        if self.changed_sample:
            out.append("  sample changed:")
            for r in self.changed_sample:
                key = ", ".join(f"{k}={_shown(k, r['key'][k])}" for k in self.key)
                diffs = "; ".join(f"{c}: {_shown(c, o)} -> {_shown(c, n)}"
                                  for c, (o, n) in r["columns"].items())
                out.append(f"    {key}: {diffs}")
        return out


def _shown(column: str, value: Any) -> str:
    """A sample value as printed: personal data in clear (names, emails, raw lines...) only
    as its first character and '***', as access.yaml's ``masked`` shows it: the lines end up
    in terminals and job logs, which the access matrix does not govern."""
    if column in PERSONAL_COLUMNS and value is not None:
        return repr(f"{str(value)[:1]}***")
    return repr(value)


def _row_text(row: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={_shown(k, v)}" for k, v in row.items())
    return text if len(text) <= 300 else text[:297] + "..."


def comparable(df: DataFrame) -> DataFrame:
    """Maps cannot be compared by exceptAll: replace them by their sorted entries as JSON."""
    return df.select(
        *[
            F.to_json(F.array_sort(F.map_entries(F.col(f.name)))).alias(f.name)
            if isinstance(f.dataType, MapType) else F.col(f.name)
            for f in df.schema.fields
        ]
    )


def net_changes_from_feed(
    spark: SparkSession, catalog: Catalog, name: str, start: int, end: int
) -> tuple[DataFrame, DataFrame]:
    """(added, removed) from version `start` to `end` (start < end), from the change feed.
    Raises when the feed is not available over the whole range."""
    feed = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start + 1)
        .option("endingVersion", end)
        .load(catalog.path(name))
    )
    feed.limit(1).collect()  # runs the read: a range without a feed fails here
    images = comparable(feed.drop(*CDF_COLUMNS[1:]))
    new = images.where(F.col("_change_type").isin("insert", "update_postimage")).drop(
        "_change_type"
    )
    old = images.where(F.col("_change_type").isin("delete", "update_preimage")).drop(
        "_change_type"
    )
    return new.exceptAll(old), old.exceptAll(new)


def net_changes_from_snapshots(
    spark: SparkSession, catalog: Catalog, name: str, start: int, end: int
) -> tuple[DataFrame, DataFrame, str]:
    """(added, removed, note) comparing the two versions read whole (common columns only)."""
    before = catalog.read(spark, name, version=start)
    after = catalog.read(spark, name, version=end)
    common = [c for c in after.columns if c in before.columns]
    note = ""
    if set(common) != set(before.columns) | set(after.columns):
        gone = sorted(set(before.columns) - set(common))
        new = sorted(set(after.columns) - set(common))
        note = f"schema changed (removed columns: {gone or '-'}, new: {new or '-'}); compared on common columns"
    before_c, after_c = comparable(before.select(common)), comparable(after.select(common))
    return after_c.exceptAll(before_c), before_c.exceptAll(after_c), note


def diff_versions(
    spark: SparkSession,
    catalog: Catalog,
    name: str,
    from_version: int,
    to_version: int,
    key: tuple[str, ...] | None = None,
    sample: int = 5,
) -> TableDiff:
    """Net changes from `from_version` to `to_version` (either order), counts and samples."""
    for version in (from_version, to_version):
        check_version(spark, catalog, name, version)
    key = tuple(key) if key is not None else DEFAULT_KEYS.get(name, ())
    columns = catalog.read(spark, name, version=to_version).columns
    missing = [k for k in key if k not in columns]
    if missing:
        raise LakehouseError(
            f"key column(s) {', '.join(missing)} not in table {name} version {to_version} "
            f"(columns: {', '.join(columns)})"
        )
    low, high = sorted((from_version, to_version))
    note = ""
    if low == high:
        empty = comparable(catalog.read(spark, name, version=low)).limit(0)
        added, removed, method = empty, empty, "same version"
    else:
        feed = None
        # Both versions are readable (checked above), but an erasure's VACUUM may have removed
        # change files in between: then compare the two snapshots instead of failing the read.
        gone = change_files_missing(catalog, name, low + 1, high)
        if gone in (0, None):
            try:
                feed = net_changes_from_feed(spark, catalog, name, low, high)
            except Exception:  # noqa: BLE001 - no feed over the range (or a schema change)
                feed = None
        if feed is not None:
            (added, removed), method = feed, "change data feed"
        else:
            added, removed, note = net_changes_from_snapshots(spark, catalog, name, low, high)
            method = "snapshot comparison"
            if gone:
                note = "; ".join(filter(None, [
                    f"{gone} change file(s) of versions {low + 1}-{high} were removed (VACUUM)",
                    note,
                ]))
    if from_version > to_version:
        added, removed = removed, added
    return _classify(name, from_version, to_version, method, key, added, removed, sample, note)


def _classify(
    name: str, from_version: int, to_version: int, method: str, key: tuple[str, ...],
    added: DataFrame, removed: DataFrame, sample: int, note: str,
) -> TableDiff:
    added, removed = added.cache(), removed.cache()
    try:
        if key:
            only_added = added.join(removed.select(*key).distinct(), on=list(key), how="left_anti")
            only_removed = removed.join(added.select(*key).distinct(), on=list(key), how="left_anti")
            changed_keys = added.select(*key).distinct().join(
                removed.select(*key).distinct(), on=list(key), how="inner"
            )
            changed = changed_keys.count()
        else:
            only_added, only_removed, changed = added, removed, 0
        result = TableDiff(
            name, from_version, to_version, method, key,
            added=only_added.count(), removed=only_removed.count(), changed=changed, note=note,
        )
        if sample > 0:
            result.added_sample = [r.asDict() for r in only_added.limit(sample).collect()]
            result.removed_sample = [r.asDict() for r in only_removed.limit(sample).collect()]
            if key and changed:
                result.changed_sample = _changed_sample(added, removed, key, sample)
        return result
    finally:
        added.unpersist()
        removed.unpersist()


def _changed_sample(
    added: DataFrame, removed: DataFrame, key: tuple[str, ...], sample: int
) -> list[dict[str, Any]]:
    """Old and new values of the columns that differ, for up to `sample` changed keys."""
    keys = (
        added.select(*key).distinct()
        .join(removed.select(*key).distinct(), on=list(key), how="inner")
        .orderBy(*key).limit(sample)
    )
    others = [c for c in added.columns if c not in key]
    old = removed.join(keys, on=list(key), how="inner").select(
        *key, *[F.col(c).alias(f"old__{c}") for c in others]
    )
    new = added.join(keys, on=list(key), how="inner").select(
        *key, *[F.col(c).alias(f"new__{c}") for c in others]
    )
    out = []
    for row in old.join(new, on=list(key), how="inner").orderBy(*key).limit(sample).collect():
        values = row.asDict()
        diffs = {
            c: (values[f"old__{c}"], values[f"new__{c}"])
            for c in others
            if values[f"old__{c}"] != values[f"new__{c}"]
        }
        out.append({"key": {k: values[k] for k in key}, "columns": diffs})
    return out
