"""The I/O edge of silver: bronze change feed, progress table, schema guard, Delta MERGEs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.catalog import Catalog, committed_version
from lakehouse.commits import retry_on_conflict
from lakehouse.errors import SchemaChangeError
from lakehouse.faults import crash_point

if TYPE_CHECKING:
    from delta.tables import DeltaTable

PROGRESS_TABLE = "audit.stage_progress"
PROGRESS_SCHEMA = T.StructType(
    [
        T.StructField("stage", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("bronze_table", T.StringType()),
        T.StructField("bronze_version", T.LongType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("updated_at", T.TimestampType()),
    ]
)
# Widenings that keep every value: an existing column may receive these narrower types.
_SAFE_WIDENING = {
    ("int", "bigint"), ("int", "double"), ("bigint", "double"), ("float", "double"),
    ("date", "timestamp"),
}


def read_progress(
    spark: SparkSession, catalog: Catalog, stage: str, version: int | None = None
) -> dict[str, int]:
    """Last processed bronze version per source (one small row per source), as of the progress
    table's ``version`` (None: now)."""
    if not catalog.exists(spark, PROGRESS_TABLE):
        return {}
    rows = (catalog.read(spark, PROGRESS_TABLE, version=version)
            .where(F.col("stage") == stage).collect())
    return {r["source"]: int(r["bronze_version"]) for r in rows}


def progress_before_commit(
    spark: SparkSession, catalog: Catalog, stage: str, table: str, version: int
) -> dict[str, int]:
    """``stage``'s progress as recorded before ``table``'s commit ``version`` was made.

    A run commits its tables first and its progress last, so this is how far the run that made
    that commit had read when it started. The run is found by the metadata every commit of a
    stage carries (``run_id=... stage=...``): the progress version before that run's own
    progress commit. When the run wrote no progress (it stopped before) or the metadata is
    missing, by commit times instead: the newest progress commit older than ``version``.
    Empty (read everything again) when there was no progress yet, or when that version of the
    progress table can no longer be read.
    """
    if not catalog.exists(spark, PROGRESS_TABLE):
        return {}
    # unix_micros keeps the commit instants exact and zone-free on their way to the driver.
    made = (
        catalog.delta_table(spark, table).history()
        .where(F.col("version") == version)
        .select("userMetadata", F.unix_micros("timestamp").alias("us")).first()
    )
    if made is None:
        return {}
    history = catalog.delta_table(spark, PROGRESS_TABLE).history()
    by_run = None
    if made["userMetadata"]:
        by_run = (history.where(F.col("userMetadata") == made["userMetadata"])
                  .agg(F.min("version")).first()[0])
    if by_run is not None:
        before = by_run - 1
    else:
        # Commit times order commits across tables only as far as the clock and copies of
        # the lake kept file times: the fallback, not the rule.
        before = (history.where(F.unix_micros("timestamp") < F.lit(made["us"]))
                  .agg(F.max("version")).first()[0])
    if before is None or before < 0:
        return {}
    try:
        return read_progress(spark, catalog, stage, version=int(before))
    except Exception:
        # That version's files are gone (VACUUM; on an object store Spark only finds out when
        # reading): reading everything again is slower, never wrong.
        return {}


def write_progress(
    spark: SparkSession, catalog: Catalog, stage: str, done: Mapping[str, tuple[str, int]],
    run_id: str,
) -> None:
    """Record the bronze version each source was processed up to (one MERGE, one commit)."""
    if not done:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(stage, src, table, int(v), run_id, now) for src, (table, v) in done.items()]
    df = spark.createDataFrame(rows, PROGRESS_SCHEMA)
    ensure_table(spark, catalog, PROGRESS_TABLE, PROGRESS_SCHEMA)
    crash_point("silver.before_progress")
    merge_upsert(spark, catalog.path(PROGRESS_TABLE), df, ("stage", "source"))


def read_bronze_changes(
    spark: SparkSession, catalog: Catalog, table: str, start: int, end: int
) -> DataFrame:
    """Rows bronze appended in versions start..end (inclusive), with ``_commit_version``."""
    return catalog.read_inserts(spark, table, start, end)


def _nullable(schema: T.StructType) -> T.StructType:
    # Columns built from literals are non-nullable in Spark; Delta would turn that into a
    # NOT NULL constraint that a later run could trip over.
    return T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])


def ensure_table(
    spark: SparkSession, catalog: Catalog, name: str, schema: T.StructType,
    partition_by: Sequence[str] = (), indexed_strings: frozenset[str] = frozenset(),
) -> None:
    """Create an empty table with ``schema`` (partitioned by ``partition_by``) unless it exists;
    Delta keeps file statistics of the ``indexed_strings`` its reads prune by (privacy.stats).

    Created by appending an empty frame rather than with ``DeltaTable.createIfNotExists``: a
    process killed while creating a table can leave an empty ``_delta_log`` folder behind, and
    the builder then fails forever with DELTA_TABLE_NOT_FOUND, while an append commits version 0
    over it. Two creators racing both succeed (the second commit is an empty append).
    """
    if catalog.exists(spark, name):
        catalog.narrow_statistics(spark, name, indexed_strings=indexed_strings)
        return
    # The lake's table properties, and no min/max stats of PII or identifiers in the
    # _delta_log (erasure must reach them).
    spark.createDataFrame([], _nullable(schema)).write.format("delta").mode("append").options(
        **catalog.creation_options(schema, indexed_strings=indexed_strings)
    ).partitionBy(*partition_by).save(catalog.path(name))


def align_to_table(df: DataFrame, existing: T.StructType | None, table: str) -> DataFrame:
    """``df`` with the existing table's column order and types; refuses unsafe changes.

    A column whose type changed in a way that loses values (double -> int, string -> date, a
    column missing or new) raises SchemaChangeError naming it, before anything is written.
    Narrower types that widen without loss (int -> long, ...) are cast.
    """
    if existing is None:
        return df
    incoming = {f.name: f.dataType for f in df.schema.fields}
    current = {f.name: f.dataType for f in existing.fields}
    missing = [c for c in current if c not in incoming]
    added = [c for c in incoming if c not in current]
    if missing or added:
        parts = []
        if missing:
            parts.append(f"column(s) {', '.join(missing)} no longer produced")
        if added:
            parts.append(f"new column(s) {', '.join(added)}")
        raise SchemaChangeError(
            f"{table}: {'; '.join(parts)}; change the table contract (docs/tables.md) and "
            f"migrate the table deliberately; nothing was committed"
        )
    columns = []
    for name, old_type in current.items():
        new_type = incoming[name]
        if new_type == old_type:
            columns.append(F.col(name))
        elif new_type.simpleString() == old_type.simpleString():
            # Same type, different nullability inside (Delta stores nested fields as nullable).
            columns.append(F.col(name).cast(old_type).alias(name))
        elif (new_type.simpleString(), old_type.simpleString()) in _SAFE_WIDENING:
            columns.append(F.col(name).cast(old_type).alias(name))
        else:
            raise SchemaChangeError(
                f"{table}: column '{name}' would change type from {old_type.simpleString()} to "
                f"{new_type.simpleString()}, which cannot be applied safely; nothing was "
                f"committed (revert the declaration or migrate the table deliberately)"
            )
    return df.select(*columns)


def table_schema(spark: SparkSession, catalog: Catalog, name: str) -> T.StructType | None:
    return catalog.read(spark, name).schema if catalog.exists(spark, name) else None


def merge_counts(result: DataFrame) -> dict[str, int]:
    """Rows a MERGE inserted and updated, from the result its ``execute()`` returns.

    Not from the table's history: under a concurrent writer the latest commit there may be
    someone else's (and reading the history costs a Delta log read per table).
    """
    row = result.first()
    values = row.asDict() if row else {}
    return {"inserted": int(values.get("num_inserted_rows") or 0),
            "updated": int(values.get("num_updated_rows") or 0)}


def _on(keys: Iterable[str], null_safe: bool = False) -> str:
    op = "<=>" if null_safe else "="
    return " AND ".join(f"t.`{k}` {op} s.`{k}`" for k in keys)


def _newer(event_time: str) -> str:
    return (
        f"(s.`{event_time}` > t.`{event_time}` "
        f"OR (t.`{event_time}` IS NULL AND s.`{event_time}` IS NOT NULL))"
    )


def _fills(fill_column: str) -> str:
    return f"(t.`{fill_column}` IS NULL AND s.`{fill_column}` IS NOT NULL)"


@dataclass(frozen=True)
class KeyScope:
    """The target rows an incoming batch can match: ``column`` (its first key column) between
    the lowest and highest value of the batch's new rows, or, with ``or_flag``, rows where that
    flag column is true (the anonymous partition, whose old rows are re-resolved with keys
    outside that range).

    A new row's equal key lies in the range, so for those rows the scope changes no match; it
    is a condition on target columns alone, which Delta uses to skip whole data files (min/max
    statistics, where the column has them, and partition values). Keys that grow with time
    (ids with the day in them) then keep a daily MERGE from scanning files of earlier days.

    A re-resolved row is matched through the flag only. If another writer moved its target
    row out of the anonymous partition meanwhile (filled its customer_key), the row finds no
    match: merge_newer inserts only rows whose own key is in the range (``in_range("s")``), so
    such a row changes nothing instead of landing as a second row of its key.
    """

    column: str
    low: object
    high: object
    or_flag: str | None = None

    def in_range(self, alias: str | None = None) -> Column:
        if self.low is None or self.high is None:
            return F.lit(False)  # the batch has no new row with a key
        return _qualified(self.column, alias).between(F.lit(self.low), F.lit(self.high))

    def condition(self, alias: str | None = None) -> Column:
        in_range = self.in_range(alias)
        return (in_range | _qualified(self.or_flag, alias)) if self.or_flag else in_range


def _qualified(name: str, alias: str | None) -> Column:
    return F.col(f"{alias}.`{name}`" if alias else f"`{name}`")


def rows_that_change(
    df: DataFrame, target_df: DataFrame, keys: Iterable[str], event_time: str,
    fill_column: str | None = None,
) -> DataFrame:
    """Rows of ``df`` that merge_newer would insert or update in ``target_df``.

    A row whose key is already in the target with a version at least as new (and nothing to
    fill) changes nothing, but Delta counts its match all the same and rewrites the whole data
    file holding that key, copying every other row of it. Re-delivered rows are spread over
    the whole table, so one re-delivery per file made an incremental MERGE copy the entire
    table (scale m, iot_readings: 2.5M rows copied to insert 86k and update none).
    """
    changes = _newer(event_time) + (f" OR {_fills(fill_column)}" if fill_column else "")
    unchanged = f"{_on(keys)} AND NOT COALESCE({changes}, false)"
    needed = list(dict.fromkeys([*keys, event_time, *([fill_column] if fill_column else [])]))
    return (
        df.alias("s")
        .join(target_df.select(*needed).alias("t"), F.expr(unchanged), how="left_anti")
        .select(*df.columns)
    )


def holds_no_files(table: DeltaTable) -> bool:
    """True when the table's current snapshot has no data file (read from the Delta log)."""
    return int(table.detail().select("numFiles").first()[0]) == 0


def version_if_empty(table: DeltaTable, path: str) -> int | None:
    """The table's version when it holds no data file, else None.

    Emptiness is checked on both sides of the version read. Unless some writer filled and
    emptied the table in between, the version returned is one at which it was empty; either
    way merge_newer's check that its own commit is the next version catches any writer since.
    A table with data (every load after the first) pays only one read of the log, not the
    slower history read.
    """
    if not holds_no_files(table):
        return None
    version = committed_version(table, path)
    return version if holds_no_files(table) else None


def merge_newer(
    spark: SparkSession, path: str, df: DataFrame, keys: Iterable[str], event_time: str,
    fill_column: str | None = None, filled_with: Sequence[str] = (),
    scope: KeyScope | None = None,
) -> dict[str, int]:
    """Insert new keys; update a key only when the incoming version is newer (event time).

    Re-delivered or re-processed rows are not newer, so they change nothing: idempotent. With
    ``fill_column``, a row that is not newer may still fill that column where the table has
    null (a customer_key that became known later), and nothing else but the columns derived
    from it (``filled_with``, e.g. the anonymity partition flag). Only the rows that change
    something reach the MERGE (rows_that_change), so files holding no change are not
    rewritten. Returns merge_counts.

    Into a table with no data file (a first load) the MERGE is insert-only: Delta's one-pass
    path, with no change filter and no copy of the source. That choice is made before the
    MERGE's own transaction starts, so when any other commit landed between the check and
    this MERGE's commit, the rows it wrote were only skipped: the full MERGE then runs as well
    (idempotent: what the first one inserted changes nothing).

    ``scope`` (see KeyScope) narrows both the change filter's read of the target and the MERGE
    condition to the files that can hold the batch's keys, and inserts only rows in its range.
    """
    from delta.tables import DeltaTable

    keys = tuple(keys)
    condition = F.expr(_on(keys))
    insert_if: Column | None = None
    if scope is not None:
        condition = condition & scope.condition("t")
        insert_if = scope.in_range("s")

    def full_merge(target: DeltaTable) -> dict[str, int]:
        # Built anew on each attempt: after a conflict the filter reads the newer snapshot.
        target_rows = target.toDF() if scope is None else target.toDF().where(scope.condition())
        changing = rows_that_change(df, target_rows, keys, event_time, fill_column)
        merge = (
            target.alias("t")
            .merge(changing.alias("s"), condition)
            .whenMatchedUpdateAll(condition=_newer(event_time))
        )
        if fill_column:
            filled = dict.fromkeys([fill_column, *filled_with])
            merge = merge.whenMatchedUpdate(
                condition=_fills(fill_column), set={c: f"s.`{c}`" for c in filled}
            )
        return merge_counts(merge.whenNotMatchedInsertAll(condition=insert_if).execute())

    def attempt() -> dict[str, int]:
        target = DeltaTable.forPath(spark, path)
        seen = version_if_empty(target, path)
        if seen is None:
            return full_merge(target)
        counts = merge_counts(
            target.alias("t").merge(df.alias("s"), condition)
            .whenNotMatchedInsertAll(condition=insert_if).execute()
        )
        if committed_version(target, path) == seen + 1:
            return counts  # this MERGE's commit is the only one since the table was empty
        more = full_merge(DeltaTable.forPath(spark, path))
        return {k: counts[k] + more[k] for k in counts}

    crash_point("silver.before_merge")
    counts = retry_on_conflict(attempt, f"MERGE into {path}")
    crash_point("silver.after_merge")
    return counts


def update_matched(
    spark: SparkSession, path: str, rows: DataFrame, keys: Iterable[str], column: str,
    where: Column,
) -> int:
    """Set ``column`` of the target rows whose key ``rows`` holds and that meet ``where`` (a
    condition on target columns, alias ``t``, which also narrows the files read) to the
    value in ``rows``; inserts nothing. Returns the number of rows changed."""
    from delta.tables import DeltaTable

    condition = F.expr(_on(keys)) & where

    def attempt() -> dict[str, int]:
        merge = (
            DeltaTable.forPath(spark, path).alias("t")
            .merge(rows.alias("s"), condition)
            .whenMatchedUpdate(condition=f"NOT (t.`{column}` <=> s.`{column}`)",
                               set={column: f"s.`{column}`"})
        )
        return merge_counts(merge.execute())

    crash_point("silver.before_merge")
    counts = retry_on_conflict(attempt, f"MERGE into {path}")
    crash_point("silver.after_merge")
    return counts["updated"]


def add_boolean_column(
    spark: SparkSession, path: str, column: str, true_where: Column
) -> None:
    """Add ``column`` to a table written before it existed: true where ``true_where`` holds,
    null (not known) elsewhere. Two commits; a crash between them leaves those rows null."""
    from delta.tables import DeltaTable

    spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS (`{column}` BOOLEAN)")
    DeltaTable.forPath(spark, path).update(condition=true_where, set={column: F.lit(True)})


def merge_insert_only(
    spark: SparkSession, path: str, df: DataFrame, keys: Iterable[str]
) -> None:
    """Insert rows whose (null-safe) key is not there yet: replaying a batch adds nothing."""
    from delta.tables import DeltaTable

    merge = (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(df.alias("s"), _on(keys, null_safe=True))
        .whenNotMatchedInsertAll()
    )
    retry_on_conflict(merge.execute, f"MERGE into {path}")


def merge_upsert(
    spark: SparkSession, path: str, df: DataFrame, keys: Iterable[str], null_safe: bool = False
) -> None:
    """Update every row whose key is there, insert the others (``null_safe``: a null key
    matches a null key)."""
    from delta.tables import DeltaTable

    merge = (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(df.alias("s"), _on(keys, null_safe=null_safe))
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
    )
    retry_on_conflict(merge.execute, f"MERGE into {path}")


def append(spark: SparkSession, catalog: Catalog, name: str, df: DataFrame) -> None:
    ensure_table(spark, catalog, name, df.schema)
    df.write.format("delta").mode("append").save(catalog.path(name))
