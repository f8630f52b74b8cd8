"""The table catalog: logical names such as 'silver.orders' mapped to Delta locations.

Jobs never build a storage path by hand; they ask the catalog. Names are validated (one known
layer, one table made of lower-case letters, digits and underscores) so that neither a config
value nor a command-line argument can point outside the data root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.commits import retry_on_conflict
from lakehouse.config import Config, is_local_location, local_path
from lakehouse.errors import (
    DataDirError,
    InputDataError,
    InvalidTableNameError,
    TableNotFoundError,
)
from lakehouse.privacy.stats import STATS_PROPERTY, statistics_not_allowed, table_creation_options

LAYERS = ("bronze", "silver", "gold", "audit", "publish")
# A plain lower-case identifier: layer, table, raw folder, source and column names.
# \A...\Z: "$" also matches before a final newline, and 'gold.customer_360\n' passed.
IDENTIFIER = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")
# What Spark shows in place of a value spark.redaction.regex matches
# (Utils.REDACTION_REPLACEMENT_TEXT).
REDACTED = "*********(redacted)"


def lake_table_properties(time_travel_days: int) -> dict[str, str]:
    """Delta properties of every table of the lake, set when a write creates the table.

    Set on the table itself, not left to the session's ``properties.defaults``: a session the
    suite did not build (a Databricks cluster's, whose defaults turn deletion vectors on) would
    otherwise create tables on which an erasure's delete only masks rows while the data files
    keep them, silver finds no change feed, and time travel stops at Delta's 7 days.

    * change data feed on: silver reads what bronze added, ``lakehouse diff`` shows row changes;
    * deletion vectors off: a delete rewrites the data files, so VACUUM removes the old ones
      (lakehouse.privacy.erasure still purges a table that has them, see purge_deletion_vectors);
    * ``audit.time_travel_days`` of removed files kept (Delta refuses older versions otherwise),
      and the log at least as long (Delta's default for the log: 30 days).
    """
    return {
        "delta.enableChangeDataFeed": "true",
        "delta.enableDeletionVectors": "false",
        "delta.deletedFileRetentionDuration": f"interval {time_travel_days} days",
        "delta.logRetentionDuration": f"interval {max(time_travel_days, 30)} days",
    }


@dataclass(frozen=True)
class TableName:
    layer: str
    table: str

    def __str__(self) -> str:
        return f"{self.layer}.{self.table}"


def parse_table_name(name: str) -> TableName:
    """'gold.customer_360' -> TableName; anything else raises one clear line."""
    if not isinstance(name, str):
        raise InvalidTableNameError(f"table name must be a string, got {type(name).__name__}")
    parts = name.split(".")
    if len(parts) != 2 or not all(IDENTIFIER.match(p) for p in parts):
        raise InvalidTableNameError(
            f"invalid table name {name!r}: use layer.table with lower-case letters, digits "
            f"and underscores (e.g. silver.orders)"
        )
    layer, table = parts
    if layer not in LAYERS:
        raise InvalidTableNameError(
            f"invalid table name {name!r}: unknown layer '{layer}' (known: {', '.join(LAYERS)})"
        )
    return TableName(layer, table)


class Catalog:
    """Storage locations of every table, raw folder and checkpoint under one data root."""

    def __init__(self, config: Config):
        self.config = config
        self.root = config.data_dir

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    # -- locations ---------------------------------------------------------------------------
    def path(self, name: str | TableName) -> str:
        tn = name if isinstance(name, TableName) else parse_table_name(name)
        return self._join("lake", tn.layer, tn.table)

    def raw_dir(self, source_dir: str) -> str:
        if not IDENTIFIER.match(source_dir):
            raise InvalidTableNameError(f"invalid raw folder name {source_dir!r}")
        return self._join("raw", source_dir)

    def checkpoint_dir(self, name: str) -> str:
        tn = parse_table_name(name)
        return self._join("checkpoints", tn.layer, tn.table)

    @property
    def raw_root(self) -> str:
        return self._join("raw")

    @property
    def mlflow_dir(self) -> str:
        return self._join("mlflow")

    def tables(self, layer: str, spark: SparkSession | None = None) -> list[str]:
        """Logical names of the Delta tables that exist in one layer, sorted.

        A local data root is listed directly; an object store needs ``spark``.
        """
        if layer not in LAYERS:
            raise InvalidTableNameError(f"unknown layer '{layer}' (known: {', '.join(LAYERS)})")
        folder = self._join("lake", layer)
        if self.config.is_local_data_dir:
            base = local_path(folder)
            names = [p.name for p in base.iterdir() if (p / "_delta_log").is_dir()] \
                if base.is_dir() else []
        else:
            if spark is None:
                raise ValueError("listing tables on an object store needs a Spark session")
            names = delta_table_folders(spark, folder)
        return sorted(f"{layer}.{n}" for n in names if IDENTIFIER.match(n))

    # -- access ------------------------------------------------------------------------------
    def exists(self, spark: SparkSession, name: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(spark, self.path(name))

    def read(self, spark: SparkSession, name: str, version: int | None = None) -> DataFrame:
        """Current (or a past) version of a table; a missing table raises TableNotFoundError."""
        if not self.exists(spark, name):
            raise TableNotFoundError(
                f"table {name} does not exist yet at {self.path(name)}: run the stage that "
                f"writes it first"
            )
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(name))

    def read_pinned(self, spark: SparkSession, name: str) -> DataFrame:
        """The table's version current now, pinned: later commits to it change neither what
        the frame returns nor its cached copy.

        For frames that are cached and then outlive a write to the table they read: after a
        MERGE or overwrite, Delta has Spark rebuild every cached frame that reads the table's
        latest version (CacheManager.recacheByPlan), which re-plans it and computes it again
        from the new state; on lakes with deletion vectors the rebuilt entry could escape the
        frame's own unpersist() and stay in the session. A time-travel read is a different
        relation, so none of that happens to it.
        """
        return self.read(spark, name, version=self.current_version(spark, name))

    def read_inserts(self, spark: SparkSession, name: str, start: int, end: int) -> DataFrame:
        """Rows that versions start..end (inclusive) of an append-only table added and that are
        still in it, with ``_commit_version``.

        Normally read from the change feed. An erasure breaks that: its delete rewrites data
        files and its VACUUM removes the files it replaced and its own change files, so the
        feed of the erasure's version, and of any earlier append whose file it rewrote, can no
        longer be read (Spark fails on a missing file). When such a commit lies anywhere from
        ``start`` on, the rows come from the current snapshot instead, picked by the version
        that added them: Delta's row tracking keeps that version for rows an erasure copied
        into a new file (bronze creates its tables with it, BRONZE_TABLE_PROPERTIES). A table
        created without row tracking reads the change feed of the appends alone, which works
        while no erasure rewrote one of them, and raises InputDataError otherwise.
        """
        table = self.delta_table(spark, name)
        # Up to the latest commit: an erasure after ``end`` may have rewritten an append's file.
        operations = commit_operations(table, start, end)
        rewrites = [v for v, op in operations.items()
                    if op not in APPEND_OPERATIONS and op not in NO_DATA_OPERATIONS]
        if not rewrites:
            return self._change_feed_inserts(spark, name, start, end)
        if has_row_tracking(table):
            committed = F.col("_metadata.row_commit_version")
            return (
                self.read(spark, name)
                .select("*", committed.alias("_commit_version"))
                .where(F.col("_commit_version").between(start, end))
            )
        appends = sorted(v for v, op in operations.items()
                         if op in APPEND_OPERATIONS and v <= end)
        lost = [v for v in appends if v < max(rewrites)]
        if lost:
            span = f"version {lost[0]}" if len(lost) == 1 else f"versions {lost[0]}-{lost[-1]}"
            raise InputDataError(
                f"{name}: {span} must be read, but a later commit "
                f"(version {max(rewrites)}, an erasure) rewrote the table, and it was created "
                f"without row tracking, so what those versions added can no longer be told "
                f"apart: rebuild the lake from the raw files (a new data root, or remove lake/ "
                f"and checkpoints/), whose tables get row tracking"
            )
        empty = self.read(spark, name).limit(0).withColumn(
            "_commit_version", F.lit(None).cast("long")
        )
        parts = [self._change_feed_inserts(spark, name, first, last)
                 for first, last in contiguous_runs(appends)]
        return reduce(DataFrame.unionByName, parts, empty)

    def _change_feed_inserts(
        self, spark: SparkSession, name: str, start: int, end: int
    ) -> DataFrame:
        return (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", start)
            .option("endingVersion", end)
            .load(self.path(name))
            .where(F.col("_change_type") == "insert")
            .drop("_change_type", "_commit_timestamp")
        )

    def delta_table(self, spark: SparkSession, name: str):
        from delta.tables import DeltaTable

        if not self.exists(spark, name):
            raise TableNotFoundError(f"table {name} does not exist yet at {self.path(name)}")
        return DeltaTable.forPath(spark, self.path(name))

    def creation_options(
        self, schema, extra_excluded: frozenset[str] = frozenset(),
        indexed_strings: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Writer options for any write that may create a table of this lake: the lake's table
        properties and the columns Delta may keep statistics for (privacy.stats).

        Delta takes ``delta.*`` writer options as table properties only when the write creates
        the table and ignores them on later writes, so every such write passes them.
        """
        return {
            **lake_table_properties(int(self.config.get("audit.time_travel_days"))),
            **table_creation_options(schema, extra_excluded, indexed_strings),
        }

    def narrow_statistics(
        self, spark: SparkSession, name: str, extra_excluded: frozenset[str] = frozenset(),
        indexed_strings: frozenset[str] = frozenset(), schema: T.StructType | None = None,
    ) -> list[str]:
        """Stop an existing table keeping file statistics of columns privacy.stats does not
        allow (it was created before they were excluded): its stats columns become those
        creation_options gives. ``schema``: the columns the next write gives the table (gold
        overwrites its schema), of which only those the table has now can be named. Returns
        the columns dropped ([] when there is nothing to do or no table). The log's older
        commits keep theirs until its retention has passed."""
        try:
            table = self.delta_table(spark, name)  # one existence check
        except TableNotFoundError:
            return []
        location = "delta.`" + self.path(name).replace("`", "``") + "`"
        # SHOW TBLPROPERTIES reads the snapshot's metadata only; detail() also sums the files
        # (a Spark job: 0.1-0.7 s a table, and every stage asks of each of its tables).
        properties = {r["key"]: r["value"]
                      for r in spark.sql(f"SHOW TBLPROPERTIES {location}").collect()}
        if any(REDACTED in v for k, v in properties.items() if k.startswith("delta.dataSkipping")):
            # It hides a value matching spark.redaction.regex (the lake's names `token`,
            # `pseudonym`...: a column token_count); detail() does not.
            properties = table.detail().select("properties").first()["properties"] or {}
        current = table.toDF().schema
        names = set(current.fieldNames())
        both = T.StructType([f for f in (schema or current).fields if f.name in names])
        dropped = statistics_not_allowed(properties, current, extra_excluded, indexed_strings,
                                         allowed_in=both)
        if not dropped:
            return []
        wanted = table_creation_options(both, extra_excluded, indexed_strings)
        listed = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
        statements = [f"ALTER TABLE {location} SET TBLPROPERTIES ({listed})"]
        if STATS_PROPERTY in properties and STATS_PROPERTY not in wanted:
            # It takes precedence over the number of indexed columns wanted instead.
            statements.append(
                f"ALTER TABLE {location} UNSET TBLPROPERTIES IF EXISTS ('{STATS_PROPERTY}')")
        for statement in statements:
            retry_on_conflict(lambda s=statement: spark.sql(s),
                              f"{name}: narrowing its file statistics")
        return dropped

    def current_version(self, spark: SparkSession, name: str) -> int | None:
        """Latest committed version, or None when the table does not exist.

        Under a local data root the commit file names say it (latest_commit_in_log): every
        stage asks this of each table it reads or writes, and a read of the history is a Spark
        job (about 0.1-0.2 s a table on a warm session, some twenty times a silver run)."""
        if self.config.is_local_data_dir:
            return latest_commit_in_log(local_path(self.path(name)))
        if not self.exists(spark, name):
            return None
        return table_version(self.delta_table(spark, name))


# Commits that only add rows (bronze's micro-batches), and commits that change no data; any
# other commit (an erasure's MERGE, a DELETE, OPTIMIZE, RESTORE) rewrote or removed files.
APPEND_OPERATIONS = frozenset({"WRITE", "STREAMING UPDATE"})
NO_DATA_OPERATIONS = frozenset({"VACUUM START", "VACUUM END", "SET TBLPROPERTIES",
                                "UNSET TBLPROPERTIES"})
# Table properties of append-only tables read with read_inserts: row tracking keeps the version
# that added each row through an erasure's rewrite of its file.
BRONZE_TABLE_PROPERTIES = {"delta.enableRowTracking": "true"}


def commit_operations(table, start: int, latest_guess: int) -> dict[int, str]:
    """Operation of each commit of a DeltaTable from version ``start`` on, from its history.

    One read of the log when ``latest_guess`` is the latest version (a second one when more
    commits have landed since).
    """
    def since(limit: int) -> dict[int, str]:
        history = table.history(max(limit, 1)).select("version", "operation").collect()
        return {int(r["version"]): r["operation"] for r in history}

    operations = since(latest_guess - start + 1)
    if operations and min(operations) > start:
        operations = since(max(operations) - start + 1)
    return {v: op for v, op in operations.items() if v >= start}


def has_row_tracking(table) -> bool:
    properties = table.detail().select("properties").first()["properties"] or {}
    return properties.get("delta.enableRowTracking", "false").lower() == "true"


def contiguous_runs(versions: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 5, 7, 8] -> [(1, 3), (5, 5), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(versions):
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


# A commit of a Delta table: _delta_log/<version, 20 digits>.json (the Delta protocol's name).
COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def latest_commit_in_log(table_dir: Path) -> int | None:
    """Newest committed version of the Delta table in a local folder, from the names of its
    commit files; None when the folder holds no commit. Delta publishes a commit under its
    final name in one step (a rename on a local file system) and never deletes the newest
    one, so the largest name is the version a read of the table's log would find."""
    log = table_dir / "_delta_log"
    try:
        if not log.is_dir():
            return None
        versions = [int(m.group(1)) for p in log.iterdir() if (m := COMMIT_FILE.match(p.name))]
    except OSError as exc:  # a folder this user may not read
        raise DataDirError(
            f"cannot read the Delta log of the table at {table_dir}: {exc.strerror or exc}; "
            f"check the folder's permissions"
        ) from None
    return max(versions) if versions else None


def committed_version(table, path: str) -> int | None:
    """Latest committed version of ``table`` (a DeltaTable) at ``path``: from its commit file
    names under a local path (latest_commit_in_log), else from its history."""
    if is_local_location(path):
        return latest_commit_in_log(local_path(path))
    return table_version(table)


def table_version(table) -> int | None:
    """Latest committed version of a Delta table (a DeltaTable), read from its log."""
    history = table.history(1).select("version").first()
    return int(history["version"]) if history else None


def ensure_data_dir_writable(config: Config) -> None:
    """Fail early, with the folder named, when the local data root cannot be written."""
    if not config.is_local_data_dir:
        return
    root = local_path(config.data_dir)
    if root.exists() and not root.is_dir():
        raise DataDirError(
            f"data directory {root} is a file, not a folder: set LAKEHOUSE_DATA_DIR to a "
            f"writable folder"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f"data directory {root} cannot be created ({exc.strerror}): set LAKEHOUSE_DATA_DIR "
            f"to a writable folder"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DataDirError(
            f"data directory {root} is not writable: fix its permissions or set "
            f"LAKEHOUSE_DATA_DIR to a writable folder"
        )


# The operating system refusing a file or folder, as the JVM words it in an exception's text
# (a Py4J error carries the whole chain, a job abort its task's error): java.io's
# "PATH (REASON)", java.nio's AccessDeniedException "PATH", Hadoop's "Parent path is not a
# directory: PATH". Delta's "Cannot create" of a table's log and Hadoop's "Mkdirs failed" give
# no reason: the path itself is looked at.
_OS_REASONS = ("Permission denied|Operation not permitted|Read-only file system|Not a directory|"
               "No space left on device|Disk quota exceeded")
_REFUSED = re.compile(
    rf"java\.io\.FileNotFoundException: (?P<file>[^\n]+?) \((?P<reason>{_OS_REASONS})\)"
    r"|java\.nio\.file\.AccessDeniedException: (?P<denied>[^\n]+)$"
    r"|(?:Parent path is not a directory:|\[DELTA_CANNOT_CREATE_LOG_PATH\] Cannot create"
    r"|Mkdirs failed to create) (?P<folder>[^\n]+?)(?: \(exists=[^\n]*)?$",
    re.MULTILINE,
)
_FULL = ("No space left on device", "Disk quota exceeded")
_TABLE_IN_PATH = re.compile(rf"/lake/({'|'.join(LAYERS)})/([a-z][a-z0-9_]*)(?:/|$)")


def storage_refusal(error_text: str) -> DataDirError | None:
    """The one-line error for a Spark failure caused by the operating system refusing a file or
    folder (a table folder this user may not write, a read-only mount, a file where a folder
    belongs), naming the table, the path and the reason; None for any other failure."""
    found = _REFUSED.search(error_text)
    named = found and (found["folder"] or found["file"] or found["denied"])
    # An object store's refusal (S3A and ABFS raise AccessDeniedException on a 403) is the
    # store's policy, not this machine's: Spark's own line says it better than local advice.
    if not named or not is_local_location(named):
        return None
    path = local_path(named)
    reason = found["reason"] or ("Permission denied" if found["denied"] else None)
    # The nearest folder that is there refused the new one.
    folder = _nearest_existing(path if found["folder"] else path.parent)
    usable = _usable_folder(folder)
    if not folder.is_dir():
        problem = _not_a_folder(folder)
    elif reason in _FULL:
        problem = f"{reason}: free space on the disk that holds {folder}"
    else:
        reason = reason or ("refused by the file system" if usable else "Permission denied")
        # A file of a folder this user may use (a data file left unreadable) is the one to fix.
        problem = _give_access(reason, path if path.exists() and usable else folder)
    table = _TABLE_IN_PATH.search(path.as_posix())
    return DataDirError(
        f"{'.'.join(table.groups()) + ': ' if table else ''}{path}: {problem}, then run again"
    )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _usable_folder(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def _not_a_folder(path: Path) -> str:
    return f"{path} is a file, not a folder: move it away"


def _give_access(reason: str, path: Path) -> str:
    return f"{reason}: give this user access to {path} (its permissions or mount)"


def unwritable_table(catalog: Catalog, name: str) -> DataDirError | None:
    """Why a local table cannot be written now (its folder or log not a folder, or not
    writable by this user; the nearest folder there when it is to be made), as
    storage_refusal words it; None when it can be, or on an object store (no such check)."""
    location = catalog.path(name)
    if not is_local_location(location):
        return None
    table = local_path(location)
    for path in (table / "_delta_log", table):
        folder = _nearest_existing(path)  # where the folder would be made
        if _usable_folder(folder):
            continue
        problem = (_not_a_folder(folder) if not folder.is_dir()
                   else _give_access("Permission denied", folder))
        return DataDirError(f"{name}: {path}: {problem}, then run again")
    return None


def delta_table_folders(spark: SparkSession, folder: str) -> list[str]:
    """Names of the subfolders of ``folder`` that hold a Delta log, listed by Spark.

    Through the binaryFile source's listing (no file is opened: only the path is selected), so
    it works on any file system Spark reaches, over Spark Connect too.
    """
    try:
        paths = (
            spark.read.format("binaryFile").load(f"{folder.rstrip('/')}/*/_delta_log")
            .select(F.regexp_extract("path", r"([^/]+)/_delta_log/[^/]+$", 1).alias("name"))
            .distinct().collect()  # one row per table folder
        )
    except AnalysisException:  # no such folder, or no table in it
        return []
    return sorted(row["name"] for row in paths if row["name"])
