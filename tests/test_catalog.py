from __future__ import annotations

import pytest

from lakehouse.catalog import Catalog, ensure_data_dir_writable, parse_table_name
from lakehouse.errors import DataDirError, InvalidTableNameError


@pytest.mark.parametrize("name", ["bronze.orders", "gold.customer_360", "audit.dq_metrics"])
def test_valid_names_map_under_the_data_root(config, name):
    path = Catalog(config).path(name)
    layer, table = name.split(".")
    assert path == f"{config.data_dir}/lake/{layer}/{table}"


@pytest.mark.parametrize(
    "name",
    [
        "../x", "bronze/../../etc", "bronze.../x", "gold.a.b", "orders", "", "GOLD.orders",
        "gold.Orders", "x; DROP TABLE y", "gold.x'--", 'gold."x"', "nolayer.orders",
        "gold.", ".orders", "gold.1abc", "gold.a b", "gold.a" + "b" * 80,
    ],
)
def test_invalid_names_are_refused(config, name):
    with pytest.raises(InvalidTableNameError, match="invalid table name"):
        Catalog(config).path(name)


def test_parse_gives_layer_and_table():
    tn = parse_table_name("silver.identity_map")
    assert (tn.layer, tn.table, str(tn)) == ("silver", "identity_map", "silver.identity_map")


def test_raw_and_checkpoint_folders_stay_inside_root(config):
    catalog = Catalog(config)
    assert catalog.raw_dir("orders") == f"{config.data_dir}/raw/orders"
    assert catalog.checkpoint_dir("bronze.orders") == f"{config.data_dir}/checkpoints/bronze/orders"
    with pytest.raises(InvalidTableNameError):
        catalog.raw_dir("../orders")


def test_unwritable_data_dir_is_one_clear_error():
    from lakehouse.config import load_config

    # /proc refuses new folders even to root (permission bits would not bind for root)
    config = load_config("local", overrides={"data_dir": "/proc/lakehouse-data"})
    with pytest.raises(DataDirError, match="cannot be created|not writable"):
        ensure_data_dir_writable(config)


def test_a_refusal_of_the_operating_system_is_named_with_table_path_and_reason(tmp_path):
    """Texts as Spark words them (a job aborted by a task's error, a commit, a folder that could
    not be made): the table, the path and the OS reason; any other failure is not one."""
    from lakehouse.catalog import storage_refusal

    orders = tmp_path / "lake" / "silver" / "orders"
    (orders / "_delta_log").mkdir(parents=True)
    part = orders / "part-00000-c000.snappy.parquet"
    aborted = (f"An error occurred while calling o1371.save.\n: org.apache.spark.SparkException: "
               f"Job aborted due to stage failure: Task 0 in stage 113.0 failed 1 times, most "
               f"recent failure: Lost task 0.0 (executor driver): java.io.FileNotFoundException: "
               f"{part} (Permission denied)\n\tat java.base/java.io.FileOutputStream.open0")
    assert str(storage_refusal(aborted)) == (
        f"silver.orders: {part}: Permission denied: give this user access to {orders} (its "
        f"permissions or mount), then run again")
    commit = orders / "_delta_log" / ".00000000000000000001.json.tmp"
    denied = f"Caused by: java.nio.file.AccessDeniedException: {commit}\n\tat x"
    assert f"silver.orders: {commit}: Permission denied: give this user access to " \
           f"{orders / '_delta_log'} " in str(storage_refusal(denied))
    (tmp_path / "lake" / "gold").write_text("a file")
    mkdirs = (f"java.io.IOException: Mkdirs failed to create file:{tmp_path}/lake/gold/journeys "
              f"(exists=false, cwd=file:/)\n")
    assert str(storage_refusal(mkdirs)) == (
        f"gold.journeys: {tmp_path}/lake/gold/journeys: {tmp_path}/lake/gold is a file, not a "
        f"folder: move it away, then run again")
    assert storage_refusal("org.apache.spark.SparkException: Job aborted: division by zero") is None
    # An object store's 403 (S3A raises AccessDeniedException) is not this machine's folder.
    s3 = ("java.nio.file.AccessDeniedException: s3a://bucket/lake/gold/kpi_daily/_delta_log: "
          "getFileStatus on s3a://bucket/lake/gold/kpi_daily/_delta_log: Access Denied")
    assert storage_refusal(s3) is None
    # A full disk wants space, not permissions.
    full = f"java.io.FileNotFoundException: {part} (No space left on device)"
    assert str(storage_refusal(full)) == (
        f"silver.orders: {part}: No space left on device: free space on the disk that holds "
        f"{orders}, then run again")
    # One data file left unreadable in a folder this user may use: that file is named.
    part.write_bytes(b"")
    assert str(storage_refusal(aborted)) == (
        f"silver.orders: {part}: Permission denied: give this user access to {part} (its "
        f"permissions or mount), then run again")


def test_table_creation_survives_an_empty_log_left_by_a_killed_creator(spark, config):
    # A process killed between mkdir(_delta_log) and the first commit leaves this behind.
    from pathlib import Path

    from pyspark.sql import types as T

    from lakehouse.silver.io import ensure_table

    catalog = Catalog(config)
    (Path(catalog.path("silver.half_made")) / "_delta_log").mkdir(parents=True)
    assert not catalog.exists(spark, "silver.half_made")
    schema = T.StructType([T.StructField("id", T.LongType())])
    ensure_table(spark, catalog, "silver.half_made", schema)
    ensure_table(spark, catalog, "silver.half_made", schema)  # and again: a no-op
    assert catalog.current_version(spark, "silver.half_made") == 0
    assert catalog.read(spark, "silver.half_made").schema == schema


def test_a_pinned_read_cached_before_a_merge_is_not_rebuilt_from_the_merged_table(
    spark, config
):
    """Catalog.read_pinned: a cached frame of it keeps the rows it read through a MERGE into
    the table. The control, a cached frame of the latest version, is rebuilt by the MERGE
    (Delta re-plans and recomputes it from the new state), which is what silver's cached
    frames must not go through."""
    from delta.tables import DeltaTable

    catalog = Catalog(config)
    name = "silver.pinned"
    spark.createDataFrame([("a", 1), ("b", 2)], "k string, v int") \
        .write.format("delta").save(catalog.path(name))
    latest = catalog.read(spark, name).persist()
    pinned = catalog.read_pinned(spark, name).persist()
    try:
        assert latest.count() == pinned.count() == 2
        changes = spark.createDataFrame([("b", 20)], "k string, v int")
        (DeltaTable.forPath(spark, catalog.path(name)).alias("t")
         .merge(changes.alias("s"), "t.k = s.k").whenMatchedUpdateAll().execute())
        assert sorted(map(tuple, latest.collect())) == [("a", 1), ("b", 20)]
        assert sorted(map(tuple, pinned.collect())) == [("a", 1), ("b", 2)]
    finally:
        latest.unpersist()
        pinned.unpersist()


def _erasure_history(spark, catalog: Catalog, name: str, properties: dict[str, str]) -> dict:
    """An append-only table that an erasure hit between appends, as bronze goes through it:
    v0 and v1 appends, v2 a MERGE deleting one row of each, v3-v4 its VACUUM (0 hours, which
    removes the replaced files and the change files), v5 another append. Returns the rows each
    append added that are still there, by version (written down here, not read back)."""
    from delta.tables import DeltaTable

    from lakehouse.privacy.erasure import vacuum_now

    def append(ids: list[str]) -> None:
        rows = spark.createDataFrame([(i,) for i in ids], "id string")
        # Created as the suite creates its tables (the session's defaults are a cluster's).
        (rows.write.format("delta").mode("append").options(**catalog.creation_options(rows.schema))
         .options(**properties).save(catalog.path(name)))

    append(["a0", "a1", "a2"])
    append(["b0", "b1", "b2"])
    (DeltaTable.forPath(spark, catalog.path(name)).alias("t")
     .merge(spark.createDataFrame([("a1",), ("b1",)], "id string").alias("s"), "t.id = s.id")
     .whenMatchedDelete().execute())
    vacuum_now(spark, catalog, name, 0)
    append(["c0", "c1"])
    ops = [r["operation"] for r in
           DeltaTable.forPath(spark, catalog.path(name)).history().orderBy("version").collect()]
    assert ops == ["WRITE", "WRITE", "MERGE", "VACUUM START", "VACUUM END", "WRITE"], ops
    return {0: {"a0", "a2"}, 1: {"b0", "b2"}, 5: {"c0", "c1"}}


def _inserts(spark, catalog: Catalog, name: str, start: int, end: int) -> set[tuple[str, int]]:
    rows = catalog.read_inserts(spark, name, start, end).collect()
    return {(r["id"], r["_commit_version"]) for r in rows}


def test_read_inserts_after_an_erasure_gives_what_each_version_added_minus_the_erased(
    spark, config
):
    """Silver reads bronze's new versions with read_inserts. The change feed of a range holding
    an erasure cannot be read once VACUUM ran (its files are gone); with row tracking (bronze's
    table property) every range still gives exactly the rows its appends added that are left."""
    from lakehouse.catalog import BRONZE_TABLE_PROPERTIES

    catalog = Catalog(config)
    left = _erasure_history(spark, catalog, "bronze.tracked", BRONZE_TABLE_PROPERTIES)
    with pytest.raises(Exception, match="(?i)not exist|FileNotFound"):
        catalog._change_feed_inserts(spark, "bronze.tracked", 0, 5).collect()
    for start, end in [(0, 5), (1, 5), (2, 5), (0, 1), (1, 2), (3, 5), (5, 5), (2, 4)]:
        expected = {(i, v) for v, ids in left.items() if start <= v <= end for i in ids}
        assert _inserts(spark, catalog, "bronze.tracked", start, end) == expected, (start, end)


def test_read_inserts_of_a_table_without_row_tracking_skips_the_erasure_commits(spark, config):
    """A bronze table created before row tracking: a range that starts after the appends the
    erasure rewrote (silver had read them) still reads, skipping the MERGE and its VACUUM."""
    catalog = Catalog(config)
    left = _erasure_history(spark, catalog, "bronze.legacy", {})
    for start in (2, 3):
        assert _inserts(spark, catalog, "bronze.legacy", start, 5) == {
            (i, 5) for i in left[5]
        }
    assert _inserts(spark, catalog, "bronze.legacy", 2, 4) == set()
    # v0 and v1 were rewritten by the erasure: said in one line, not a missing-file failure.
    from lakehouse.errors import InputDataError

    for start, end, span in [(0, 5, "versions 0-1"), (1, 1, "version 1")]:
        with pytest.raises(InputDataError, match=rf"bronze.legacy: {span} .*\(version 2, "
                                                 r"an erasure\).*without row tracking"):
            catalog.read_inserts(spark, "bronze.legacy", start, end)


def test_contiguous_runs():
    from lakehouse.catalog import contiguous_runs

    assert contiguous_runs([7, 1, 2, 3, 5, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert contiguous_runs([]) == []


def test_table_folders_listed_through_spark_are_the_delta_tables(spark, tmp_path):
    """The object-store listing (Spark's file listing, no Hadoop calls from Python) names the
    folders that hold a Delta log, and no other."""
    from lakehouse.catalog import delta_table_folders

    layer = tmp_path / "silver"
    spark.range(3).write.format("delta").save(str(layer / "orders"))
    spark.range(1).write.format("delta").save(str(layer / "events"))
    (layer / "not_a_table").mkdir()
    (layer / "not_a_table" / "part.txt").write_text("x")
    assert delta_table_folders(spark, str(layer)) == ["events", "orders"]
    assert delta_table_folders(spark, str(tmp_path / "gold")) == []
    (tmp_path / "empty").mkdir()
    assert delta_table_folders(spark, str(tmp_path / "empty")) == []


# Table property defaults of a cluster's session, unlike the suite's: deletion vectors on (as
# on Databricks), no change data feed, Delta's 7 days of time travel.
CLUSTER_TABLE_DEFAULTS = {
    "enableDeletionVectors": "true",
    "enableChangeDataFeed": "false",
    "deletedFileRetentionDuration": "interval 7 days",
    "logRetentionDuration": "interval 14 days",
}


def _lake_properties(config) -> dict[str, str]:
    """The properties docs/README name for every table of a lake (written out here)."""
    days = config.get("audit.time_travel_days")
    return {
        "delta.enableChangeDataFeed": "true",
        "delta.enableDeletionVectors": "false",
        "delta.deletedFileRetentionDuration": f"interval {days} days",
        "delta.logRetentionDuration": f"interval {max(days, 30)} days",
    }


def _properties(spark, path: str, keys) -> tuple[dict, bool]:
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, path).detail().first()
    return ({k: detail["properties"].get(k) for k in keys},
            "deletionVectors" in detail["tableFeatures"])


def test_tables_created_in_a_session_with_a_clusters_defaults_get_the_lake_properties(
    spark, config
):
    """A session the suite did not build (a Databricks cluster's) keeps its own defaults for new
    tables; the suite's writes set the lake's properties on the tables they create anyway."""
    from pyspark.sql import types as T

    from lakehouse.audit.chain import append_chained
    from lakehouse.silver.io import ensure_table

    catalog = Catalog(config)
    expected = _lake_properties(config)
    keys = {f"spark.databricks.delta.properties.defaults.{k}": v
            for k, v in CLUSTER_TABLE_DEFAULTS.items()}
    previous = {k: spark.conf.get(k, None) for k in keys}
    for key, value in keys.items():
        spark.conf.set(key, value)
    try:
        ensure_table(spark, catalog, "silver.created",
                     T.StructType([T.StructField("id", T.LongType())]))
        append_chained(spark, catalog, "audit.chained",
                       spark.createDataFrame([("a",)], "name string"), ["name"])
        spark.range(1).write.format("delta").save(catalog.path("silver.by_hand"))
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
    # The session really had a cluster's defaults: a table written without the suite's
    # options got them.
    assert _properties(spark, catalog.path("silver.by_hand"), expected)[0] != expected
    for name in ("silver.created", "audit.chained"):
        assert _properties(spark, catalog.path(name), expected) == (expected, False), name


def test_every_table_of_the_full_xs_lake_carries_the_lake_properties(spark, full_xs_lake):
    """Every table that bronze, silver, gold, segment, attribute and audit created."""
    from lakehouse.catalog import LAYERS

    expected = _lake_properties(full_xs_lake)
    catalog = Catalog(full_xs_lake)
    found = {name: _properties(spark, catalog.path(name), expected)
             for layer in LAYERS for name in catalog.tables(layer)}
    assert len(found) >= 20, sorted(found)
    assert {n: v for n, v in found.items() if v != (expected, False)} == {}


def test_a_name_ending_in_a_newline_is_refused():
    # "$" also matches before a final newline: this once passed the check and failed later,
    # inside Spark, with a message listing the very table asked for.
    with pytest.raises(InvalidTableNameError):
        parse_table_name("gold.customer_360\n")


def test_current_version_under_a_local_root_is_the_one_deltas_history_gives(spark, tmp_path):
    """Read from the commit file names: a table with a checkpoint (ten commits), in a folder
    whose name has a space, gives the version Delta's own history gives; a missing table and a
    log folder without a commit give None."""
    from delta.tables import DeltaTable

    from lakehouse.config import load_config

    catalog = Catalog(load_config("local", overrides={"data_dir": str(tmp_path / "a lake")}))
    assert catalog.current_version(spark, "silver.orders") is None
    path = catalog.path("silver.orders")
    for n in range(12):
        spark.range(n, n + 1).write.format("delta").mode("append").save(path)
    assert list((tmp_path / "a lake" / "lake" / "silver" / "orders" / "_delta_log")
                .glob("*.checkpoint.parquet"))
    history = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
    assert catalog.current_version(spark, "silver.orders") == history == 11
    (tmp_path / "a lake" / "lake" / "silver" / "events" / "_delta_log").mkdir(parents=True)
    assert catalog.current_version(spark, "silver.events") is None


def test_a_delta_log_that_cannot_be_listed_is_one_line_naming_the_table(tmp_path, monkeypatch):
    """Read by file names, a log folder this user may not read raised PermissionError with a
    traceback (root reads any folder, so the refusal is played by Path.iterdir)."""
    from pathlib import Path

    from lakehouse.catalog import latest_commit_in_log

    log = tmp_path / "orders" / "_delta_log"
    log.mkdir(parents=True)
    (log / f"{0:020d}.json").write_text("{}")
    assert latest_commit_in_log(tmp_path / "orders") == 0

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(DataDirError) as raised:
        latest_commit_in_log(tmp_path / "orders")
    assert str(raised.value) == (f"cannot read the Delta log of the table at {tmp_path}/orders: "
                                 f"Permission denied; check the folder's permissions")
