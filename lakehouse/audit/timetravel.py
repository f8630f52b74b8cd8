"""Reading the past: which versions a table has, and version / timestamp resolution.

Every user-facing mistake (a table that is not there, a version that never existed or whose
files VACUUM removed, a timestamp before the table's first commit) is one
VersionNotAvailableError / TableNotFoundError line naming the table and the oldest and newest
version available, so the user can pick a valid one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.catalog import LAYERS, Catalog, parse_table_name
from lakehouse.config import file_uri_path, local_path
from lakehouse.errors import TableNotFoundError, VersionNotAvailableError

# Tables the contracts name (ARCHITECTURE.md); used to list tables where the data root cannot
# be listed as a local folder (an object store), together with the configured extra tables.
CONTRACT_TABLES = (
    *(f"bronze.{t}" for t in (
        "crm_customers", "clickstream", "orders", "payments", "social_posts", "iot_readings")),
    *(f"silver.{t}" for t in (
        "customers", "customer_pii", "events", "orders", "payments", "social_posts",
        "iot_readings", "identity_map", "quarantine")),
    *(f"gold.{t}" for t in (
        "customer_360", "journeys", "kpi_daily", "kpi_channel_daily", "customer_segments",
        "channel_attribution")),
    *(f"audit.{t}" for t in (
        "table_history", "lineage", "reconciliation", "dq_metrics", "stage_progress")),
)


@dataclass(frozen=True)
class VersionRange:
    """Versions of a table still in its log, and their commit times (UTC)."""

    table: str
    oldest: int
    newest: int
    oldest_ts: datetime
    newest_ts: datetime

    def describe(self) -> str:
        return (
            f"oldest available version {self.oldest} ({_iso(self.oldest_ts)}), newest "
            f"{self.newest} ({_iso(self.newest_ts)})"
        )


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_dir(catalog: Catalog, name: str) -> Path | None:
    """The table's folder when the data root is a local file system, else None."""
    if not catalog.config.is_local_data_dir:
        return None
    return local_path(catalog.path(name))


def list_tables(spark: SparkSession, catalog: Catalog, extra: Iterable[str] = ()) -> list[str]:
    """Logical names of every Delta table under the data root, sorted."""
    root = local_path(catalog.root) / "lake"
    if catalog.config.is_local_data_dir:
        found = {
            f"{layer.name}.{table.name}"
            for layer in (root.iterdir() if root.is_dir() else [])
            if layer.name in LAYERS and layer.is_dir()
            for table in layer.iterdir()
            if (table / "_delta_log").is_dir() and any((table / "_delta_log").glob("*.json"))
        }
        candidates = found | {n for n in extra if catalog.exists(spark, n)}
    else:
        candidates = {n for n in (*CONTRACT_TABLES, *extra) if catalog.exists(spark, n)}
    return sorted(candidates)


def table_versions(
    spark: SparkSession, catalog: Catalog, names: Iterable[str]
) -> dict[str, int]:
    """Newest version of each existing table among `names`."""
    versions = {name: catalog.current_version(spark, name) for name in names}
    return {name: v for name, v in versions.items() if v is not None}


def require_table(spark: SparkSession, catalog: Catalog, name: str) -> None:
    """TableNotFoundError (one line, listing what exists) unless `name` is a Delta table."""
    parse_table_name(name)
    if catalog.exists(spark, name):
        return
    layer = name.split(".")[0]
    if catalog.config.is_local_data_dir:
        root = local_path(catalog.config.data_dir)
        if not root.is_dir():
            raise TableNotFoundError(
                f"table {name}: the data directory {root} "
                f"{'is not a folder' if root.exists() else 'does not exist'}: set "
                f"LAKEHOUSE_DATA_DIR to the lake's data directory"
            )
    known = [t for t in list_tables(spark, catalog) if t.startswith(f"{layer}.")]
    where = ", ".join(known) or "none"
    if name in CONTRACT_TABLES:
        raise TableNotFoundError(
            f"table {name} does not exist yet at {catalog.path(name)}: run the stage that "
            f"writes it first (tables of layer {layer} now: {where})"
        )
    raise TableNotFoundError(
        f"table {name} is not in the catalog (no Delta table at {catalog.path(name)}); "
        f"tables of layer {layer}: {where}"
    )


def version_range(spark: SparkSession, catalog: Catalog, name: str) -> VersionRange:
    require_table(spark, catalog, name)
    # unix_micros keeps the commit instant exact and zone-free on its way to the driver.
    row = (
        catalog.delta_table(spark, name)
        .history()
        .agg(
            F.min("version").alias("oldest"),
            F.max("version").alias("newest"),
            F.min_by(F.unix_micros("timestamp"), "version").alias("oldest_us"),
            F.max_by(F.unix_micros("timestamp"), "version").alias("newest_us"),
        )
        .first()
    )
    return VersionRange(
        name, int(row["oldest"]), int(row["newest"]),
        _from_micros(row["oldest_us"]), _from_micros(row["newest_us"]),
    )


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def check_version(spark: SparkSession, catalog: Catalog, name: str, version: int) -> int:
    """`version` if it can be read; else one line with the table's available range."""
    available = version_range(spark, catalog, name)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int, got {type(version).__name__} {version!r}")
    if not available.oldest <= version <= available.newest:
        raise VersionNotAvailableError(
            f"table {name} has no version {version}: {available.describe()}"
        )
    missing = missing_files(spark, catalog, name, version)
    if missing:
        readable = next_readable_version(spark, catalog, name, version, available.newest)
        raise VersionNotAvailableError(
            f"version {version} of table {name} can no longer be read: {missing} of its data "
            f"files were removed (VACUUM); oldest readable version after it {readable}, newest "
            f"{available.newest} ({_iso(available.newest_ts)})"
        )
    return version


# Versions next_readable_version checks one by one before it names the newest instead.
_READABLE_SEARCH_LIMIT = 50


def next_readable_version(
    spark: SparkSession, catalog: Catalog, name: str, after: int, newest: int
) -> int:
    """First version after ``after`` whose data files are all still there (the newest always
    is). Checked one by one: readability is not monotone in the version (a file added and
    later rewritten makes only the versions holding it unreadable)."""
    for candidate in range(after + 1, min(newest, after + _READABLE_SEARCH_LIMIT)):
        try:
            if missing_files(spark, catalog, name, candidate) == 0:
                return candidate
        except VersionNotAvailableError:
            continue
    return newest


def missing_files(spark: SparkSession, catalog: Catalog, name: str, version: int) -> int:
    """Data files of `version` that are gone from a local data root (0 when not checkable)."""
    if _local_dir(catalog, name) is None:
        return 0
    try:
        files = (
            spark.read.format("delta").option("versionAsOf", version)
            .load(catalog.path(name)).inputFiles()
        )
    except Exception as exc:  # noqa: BLE001 - a log too old to replay is "not available" too
        why = (
            "is older than the table's time-travel window (its "
            "delta.deletedFileRetentionDuration; tables created before audit.time_travel_days "
            "had Delta's 7 days): raise the property with ALTER TABLE to reach it (README, "
            "time travel)"
            if "BEYOND_DELETED_FILE_RETENTION_DURATION" in str(exc)
            else f"cannot be reconstructed from its log ({str(exc).splitlines()[0][:160]})"
        )
        raise VersionNotAvailableError(
            f"version {version} of table {name} {why}; "
            f"{version_range(spark, catalog, name).describe()}"
        ) from None
    return sum(not _file_path(f).exists() for f in files)


def change_files_missing(catalog: Catalog, name: str, start: int, end: int) -> int | None:
    """Files that reading the change feed of versions ``start``..``end`` would need and that
    are gone (an erasure's or a retention's VACUUM removes them), from the commit files of a
    local data root; None when that cannot be told (an object store, a commit file already
    cleaned from the log). Tells before the read: a failed feed read fails in the executors,
    which log a stack trace for every task."""
    folder = _local_dir(catalog, name)
    if folder is None:
        return None
    missing = 0
    for version in range(start, end + 1):
        commit = folder / "_delta_log" / f"{version:020d}.json"
        if not commit.is_file():
            return None
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        # A commit with change files is read from them alone; otherwise the feed is the files
        # it added (inserts) and removed (deletes) as a data change (Delta's CDC reader).
        changes = [a["cdc"] for a in actions if "cdc" in a] or [
            a[kind] for a in actions for kind in ("add", "remove")
            if kind in a and a[kind].get("dataChange", True)
        ]
        missing += sum(not _log_path(folder, c["path"]).exists() for c in changes)
    return missing


def _log_path(table_dir: Path, path: str) -> Path:
    """A path of a log action: relative to the table (URL-encoded) or an absolute URI."""
    if "://" in path or path.startswith("file:") or path.startswith("/"):
        return _file_path(path)
    return table_dir / unquote(path)


def _file_path(uri: str) -> Path:
    """A local file URI (file:///a%20b/x.parquet) or plain path as a Path (another scheme as
    it is: such a file never exists locally)."""
    return file_uri_path(uri) or Path(uri)


def parse_timestamp(text: str) -> datetime:
    """'2026-01-03', '2026-01-03T10:00:00', '...Z' or with an offset; no zone means UTC."""
    cleaned = text.strip().replace("Z", "+00:00").replace(" ", "T", 1)
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"'{text}' is not a timestamp: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z]"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def version_at(spark: SparkSession, catalog: Catalog, name: str, at: datetime) -> int:
    """The newest version committed at or before `at` (what Delta's timestampAsOf reads)."""
    at_utc = at if at.tzinfo else at.replace(tzinfo=UTC)
    now = datetime.now(UTC)  # read only to refuse: no version chosen depends on it
    if at_utc > now:
        raise VersionNotAvailableError(
            f"{_iso(at_utc)} is after now ({_iso(now)}): {name} may still get versions before "
            f"it, so a run pinned to it could not be repeated; give an instant up to now, or a "
            f"version with --as-of-version"
        )
    available = version_range(spark, catalog, name)
    micros = int(at_utc.timestamp() * 1_000_000)
    row = (
        catalog.delta_table(spark, name)
        .history()
        .where(F.unix_micros("timestamp") <= F.lit(micros))
        .agg(F.max("version").alias("v"))
        .first()
    )
    if row["v"] is None:
        raise VersionNotAvailableError(
            f"table {name} did not exist yet at {_iso(at_utc)}: {available.describe()}"
        )
    return check_version(spark, catalog, name, int(row["v"]))


def read_version(spark: SparkSession, catalog: Catalog, name: str, version: int) -> DataFrame:
    """The table as of `version`, after checking that version can be read."""
    return catalog.read(spark, name, version=check_version(spark, catalog, name, version))


def pinned_versions(
    spark: SparkSession,
    catalog: Catalog,
    names: Iterable[str],
    versions: Mapping[str, int] | None = None,
    timestamps: Mapping[str, datetime] | None = None,
    run_timestamp: datetime | None = None,
) -> dict[str, int]:
    """Version to read for each of `names` the user pinned: TABLE=VERSION first, then
    TABLE=TIMESTAMP, then the whole-run timestamp (for tables that exist). Unpinned tables are
    left out: they are read at their newest version."""
    versions, timestamps = dict(versions or {}), dict(timestamps or {})
    pinned: dict[str, int] = {}
    for name in names:
        if name in versions:
            pinned[name] = check_version(spark, catalog, name, versions[name])
        elif name in timestamps:
            pinned[name] = version_at(spark, catalog, name, timestamps[name])
        elif run_timestamp is not None and catalog.exists(spark, name):
            pinned[name] = version_at(spark, catalog, name, run_timestamp)
    return pinned
