"""The table catalog: logical names such as 'silver.orders' mapped to Delta locations.

Jobs never build a storage path by hand; they ask the catalog. Names are validated (one known
layer, one table made of lower-case letters, digits and underscores) so that neither a config
value nor a command-line argument can point outside the data root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.config import Config
from lakehouse.errors import DataDirError, InvalidTableNameError, TableNotFoundError

LAYERS = ("bronze", "silver", "gold", "audit", "publish")
# A plain lower-case identifier: layer, table, raw folder, source and column names.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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

        A local data root is listed directly; an object store needs ``spark`` (Hadoop FS).
        """
        if layer not in LAYERS:
            raise InvalidTableNameError(f"unknown layer '{layer}' (known: {', '.join(LAYERS)})")
        folder = self._join("lake", layer)
        if self.config.is_local_data_dir:
            base = Path(folder.removeprefix("file:"))
            names = [p.name for p in base.iterdir() if (p / "_delta_log").is_dir()] \
                if base.is_dir() else []
        else:
            if spark is None:
                raise ValueError("listing tables on an object store needs a Spark session")
            jvm = spark.sparkContext._jvm
            hpath = jvm.org.apache.hadoop.fs.Path(folder)
            fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
            names = [s.getPath().getName() for s in fs.listStatus(hpath)] if fs.exists(hpath) \
                else []
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

    def read_inserts(self, spark: SparkSession, name: str, start: int, end: int) -> DataFrame:
        """Rows inserted in versions start..end (inclusive), from the table's change feed,
        with ``_commit_version``: for append-only tables, exactly what those versions added."""
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

    def current_version(self, spark: SparkSession, name: str) -> int | None:
        """Latest committed version, or None when the table does not exist."""
        if not self.exists(spark, name):
            return None
        return table_version(self.delta_table(spark, name))


def table_version(table) -> int | None:
    """Latest committed version of a Delta table (a DeltaTable), read from its log."""
    history = table.history(1).select("version").first()
    return int(history["version"]) if history else None


def ensure_data_dir_writable(config: Config) -> None:
    """Fail early, with the folder named, when the local data root cannot be written."""
    if not config.is_local_data_dir:
        return
    root = Path(config.data_dir.removeprefix("file:"))
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
