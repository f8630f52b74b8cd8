"""Restore drill on a private copy of the xs lake: damage gold.customer_360, restore, compare."""

from __future__ import annotations

import pytest
from conftest import copy_lake
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.audit.reconcile import gold_checks
from lakehouse.catalog import Catalog
from lakehouse.cli import main

TABLE = "gold.customer_360"


def test_restore_drill(spark, xs_lake, tmp_path, capsys, monkeypatch):
    config = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(config)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    good = catalog.current_version(spark, TABLE)
    good_df = catalog.read(spark, TABLE, version=good)
    total = good_df.count()
    # Damage: drop every customer of one country, zero everyone's monetary value.
    country = good_df.where(F.col("country").isNotNull()).first()["country"]
    dropped = good_df.where(F.col("country") == country).count()
    table = DeltaTable.forPath(spark, catalog.path(TABLE))
    table.delete(F.col("country") == country)
    table.update(F.col("monetary") > 0, {"monetary": F.lit(0.0)})
    damaged_at = catalog.current_version(spark, TABLE)
    failed = {(c["check"], c["subject"]) for c in gold_checks(spark, catalog) if not c["passed"]}
    assert failed == {("gold_customers", TABLE), ("order_value", TABLE)}
    changed = good_df.where((F.col("country") != country) | F.col("country").isNull()).where(
        F.col("monetary") > 0
    ).count()

    # Without a terminal and without --yes: refused, nothing changes.
    assert main(["restore", TABLE, "--version", str(good)]) == 2
    captured = capsys.readouterr()
    assert "stdin is not a terminal; pass --yes" in captured.err
    assert f"{dropped:,} added, 0 removed, {changed:,} changed" in captured.out
    assert catalog.current_version(spark, TABLE) == damaged_at

    assert main(["restore", TABLE, "--version", str(good), "--yes"]) == 0
    assert f"new version {damaged_at + 1}" in capsys.readouterr().out
    assertDataFrameEqual(catalog.read(spark, TABLE), good_df)
    assert catalog.read(spark, TABLE).count() == total
    assert all(c["passed"] for c in gold_checks(spark, catalog))
    last = DeltaTable.forPath(spark, catalog.path(TABLE)).history(1).first()
    assert last["operation"] == "RESTORE"
    assert f"restore to version {good}" in last["userMetadata"]

    assert main(["history", TABLE, "--limit", "2"]) == 0
    assert "RESTORE" in capsys.readouterr().out
    # Restoring the version it is at changes nothing, and says so (no new version is made).
    current = catalog.current_version(spark, TABLE)
    assert main(["restore", TABLE, "--version", str(current), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"nothing restored: {TABLE} is at version {current} already" in out, out
    assert "new version" not in out
    assert catalog.current_version(spark, TABLE) == current

    # One gold table alone taken to another date (as a restore of it to an older version
    # does): the check names the dates, and each table is still checked for its own date.
    from datetime import date

    from lakehouse.gold import gold_options, run_gold

    kpis = ("kpi_daily", "kpi_channel_daily")
    run_gold(spark, config, "one-table-earlier", date(2026, 1, 2), tables=kpis,
             refuse_before_data=False, **gold_options(config))
    checks = {(c["check"], c["subject"]): c for c in gold_checks(spark, catalog)}
    assert {k for k, c in checks.items() if not c["passed"]} == {("gold_as_of", "gold.kpi_daily")}
    assert "gold.customer_360 as_of 2026-01-03, gold.kpi_daily as_of 2026-01-02" in checks[
        ("gold_as_of", "gold.kpi_daily")]["detail"]
    # Expected independently: completed orders of silver up to the end of 2026-01-02 (UTC).
    orders = catalog.read(spark, "silver.orders").where(
        (F.lower("status") == "completed") & (F.col("order_ts") < F.lit("2026-01-03 00:00:00")))
    assert checks[("order_value", "gold.kpi_daily")]["expected"] == pytest.approx(
        orders.agg(F.sum("amount_eur")).first()[0], abs=1e-6)


def test_a_restored_silver_table_gets_its_rows_back_from_bronze(spark, xs_lake, tmp_path,
                                                                 capsys, monkeypatch):
    """Restoring silver.orders to its empty first version took out rows of bronze versions
    that audit.stage_progress records as read: the next silver run must bring them back
    (before, it read nothing and the table stayed empty), and every bronze row is still
    accounted for."""
    from lakehouse.pipeline import RunContext, run_stages
    from lakehouse.silver.reconcile import reconcile

    config = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(config)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    business = [c for c in catalog.read(spark, "silver.orders").columns if not c.startswith("_")]
    before = catalog.read(spark, "silver.orders").select(*business)
    assert before.count() > 0

    assert main(["restore", "silver.orders", "--version", "0", "--yes"]) == 0
    assert "reads bronze.orders again from version 0" in capsys.readouterr().out
    assert catalog.read(spark, "silver.orders").count() == 0

    run_stages(spark, config, "silver", RunContext(run_id="after-restore"),
               echo=lambda line: None)
    assertDataFrameEqual(catalog.read(spark, "silver.orders").select(*business), before)
    results = {r["source"]: r for r in reconcile(spark, config)}
    assert results["orders"]["balanced"], results["orders"]


def test_a_restored_quarantine_gets_its_rows_back_from_bronze(spark, xs_lake, tmp_path,
                                                              capsys, monkeypatch):
    """Quarantine rows name their source and bronze version: restoring the table to a version
    without some of them sets each of those sources back, and the next silver run quarantines
    the same rows again (before, they were gone for good)."""
    from lakehouse.pipeline import RunContext, run_stages

    config = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(config)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    name = "silver.quarantine"
    business = ["source", "natural_key", "rule", "severity", "reason", "raw", "bronze_version"]
    current = catalog.current_version(spark, name)
    before = catalog.read(spark, name, version=current).select(*business)
    fewer = [v for v in range(current) if catalog.read(spark, name, version=v).count()
             < before.count()]
    assert fewer, "no older quarantine version lacks rows"

    assert main(["restore", name, "--version", str(fewer[-1]), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: the next silver run reads bronze." in out, out
    assert catalog.read(spark, name).count() < before.count()

    run_stages(spark, config, "silver", RunContext(run_id="after-restore"),
               echo=lambda line: None)
    assertDataFrameEqual(catalog.read(spark, name).select(*business), before)


def test_restored_identity_map_and_customer_pii_get_their_rows_back_from_bronze(
    spark, xs_lake, tmp_path, capsys, monkeypatch
):
    """identity_map and customer_pii rows carry no bronze version: restoring them to their
    empty first version sets the sources that feed them back to where silver stood before
    (here: nothing read), and the next silver run rebuilds both as they were (before, progress
    was left alone and both stayed empty). The other silver tables do not change."""
    from lakehouse.pipeline import RunContext, run_stages

    config = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(config)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    tables = ("silver.identity_map", "silver.customer_pii", "silver.events")

    def business(name):
        df = catalog.read(spark, name)
        return df.select(*[c for c in df.columns if not c.startswith("_")])

    before = {name: business(name).collect() for name in tables}
    assert all(before.values())
    identity_version = catalog.current_version(spark, "silver.identity_map")

    # Not while a pipeline run holds the lake: nothing is restored.
    from lakehouse.locks import pipeline_lock

    with pipeline_lock(config, "a silver run"):
        assert main(["restore", "silver.identity_map", "--version", "0", "--yes"]) != 0
    assert "another pipeline run is working on" in capsys.readouterr().err
    assert catalog.current_version(spark, "silver.identity_map") == identity_version

    # customer_pii is fed by the CRM alone; identity_map also by clickstream and IoT readings.
    assert main(["restore", "silver.customer_pii", "--version", "0", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "silver.customer_pii: the next silver run reads bronze.crm_customers again from " \
        "version 0" in out, out
    assert "bronze.clickstream" not in out
    assert main(["restore", "silver.identity_map", "--version", "0", "--yes"]) == 0
    out = capsys.readouterr().out
    for bronze in ("bronze.clickstream", "bronze.iot_readings"):
        assert f"silver.identity_map: the next silver run reads {bronze} again from version 0" \
            in out, out
    assert "bronze.orders" not in out
    assert catalog.read(spark, "silver.identity_map").count() == 0
    assert catalog.read(spark, "silver.customer_pii").count() == 0

    run_stages(spark, config, "silver", RunContext(run_id="after-restore"),
               echo=lambda line: None)
    for name in tables:
        assertDataFrameEqual(business(name), before[name])


def test_silver_is_set_back_to_the_progress_before_the_first_commit_taken_out(spark, tmp_path):
    """A run commits its tables, then its progress: restoring identity_map to version v sets
    silver back to the progress written before the run that made commit v + 1. The run is
    found by its commit metadata, not by commit times (here made useless: the progress commits
    look older than every table commit, as after a copy of the lake that lost file times)."""
    import os
    import time

    from lakehouse.audit.lineage import USER_METADATA_CONF
    from lakehouse.config import load_config
    from lakehouse.silver import io
    from lakehouse.silver.job import reread_after_restore

    config = load_config("local", overrides={"data_dir": str(tmp_path / "data")})
    catalog = Catalog(config)
    name = "silver.identity_map"
    fed_by = ("crm_customers", "clickstream", "iot_readings")

    def silver_run(run_id, read_to):
        spark.conf.set(USER_METADATA_CONF, f"run_id={run_id} stage=silver")
        try:
            io.append(spark, catalog, name, spark.createDataFrame([(run_id,)], "x string"))
            made = catalog.current_version(spark, name)
            io.write_progress(spark, catalog, "silver",
                              {n: (f"bronze.{n}", read_to) for n in fed_by}, run_id)
        finally:
            spark.conf.unset(USER_METADATA_CONF)
        return made

    silver_run("r1", 4)
    second = silver_run("r2", 9)
    third = silver_run("r3", 12)
    # A day earlier, in commit order (within Delta's 7 days of time travel).
    log = tmp_path / "data" / "lake" / "audit" / "stage_progress" / "_delta_log"
    day_earlier = time.time() - 86_400
    for i, commit in enumerate(sorted(log.glob("*.json"))):
        os.utime(commit, (day_earlier + i, day_earlier + i))

    lines = reread_after_restore(spark, config, name, third, second)
    assert len(lines) == 3, lines
    assert all("again from version 10 (it had read up to 12" in line for line in lines), lines
    lines = reread_after_restore(spark, config, name, third, second - 1)
    assert all("again from version 5 (it had read up to 9" in line for line in lines), lines
    assert io.read_progress(spark, catalog, "silver") == dict.fromkeys(fed_by, 4)
    # A commit without run metadata (another tool wrote it): the newest progress older than it
    # by commit time, here the set-back just written.
    io.append(spark, catalog, name, spark.createDataFrame([("other",)], "x string"))
    assert io.progress_before_commit(
        spark, catalog, "silver", name, catalog.current_version(spark, name)
    ) == dict.fromkeys(fed_by, 4)


def test_versions_older_than_seven_days_can_still_be_read_and_diffed(spark, tmp_path, capsys,
                                                                      monkeypatch):
    """Delta refuses time travel past a table's deletedFileRetentionDuration (7 days unless
    set) even when every file is there; tables get audit.time_travel_days instead, so a
    10-day-old version can be read and diffed (before: one line, refused)."""
    import os
    import time

    from lakehouse.config import load_config
    from lakehouse.silver import io

    config = load_config("local", overrides={"data_dir": str(tmp_path / "data")})
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    catalog = Catalog(config)
    name = "gold.kpi_daily"
    for i in range(3):
        io.append(spark, catalog, name, spark.createDataFrame([(i,)], "x int"))
    days = config.get("audit.time_travel_days")
    assert days >= 10
    properties = catalog.delta_table(spark, name).detail().first()["properties"]
    assert properties["delta.deletedFileRetentionDuration"] == f"interval {days} days"
    # The commits made ten days ago, in order (their files all still there).
    log = tmp_path / "data" / "lake" / "gold" / "kpi_daily" / "_delta_log"
    ten_days_ago = time.time() - 10 * 86_400
    for i, commit in enumerate(sorted(log.glob("*.json"))):
        os.utime(commit, (ten_days_ago + i, ten_days_ago + i))

    assert catalog.read(spark, name, version=1).collect() == [(0,)]
    assert main(["diff", name, "--from", "1", "--to", "3", "--key", "x"]) == 0
    assert "2 added, 0 removed" in capsys.readouterr().out

    # A table created with Delta's 7 days (before the setting): one line that says why.
    old = "gold.kpi_channel_daily"
    for i in range(2):
        spark.createDataFrame([(i,)], "x int").write.format("delta").mode("append").option(
            "delta.deletedFileRetentionDuration", "interval 7 days").save(catalog.path(old))
    old_log = tmp_path / "data" / "lake" / "gold" / "kpi_channel_daily" / "_delta_log"
    for i, commit in enumerate(sorted(old_log.glob("*.json"))):
        os.utime(commit, (ten_days_ago + i, ten_days_ago + i))
    assert main(["diff", old, "--from", "0", "--to", "1", "--key", "x"]) == 2
    err = capsys.readouterr().err
    assert "is older than the table's time-travel window" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_table_of_the_audit_layer_is_not_restored(spark, xs_lake, tmp_path, capsys,
                                                     monkeypatch):
    """Restoring audit.stage_progress (or the privacy ledger, the suppression list) would
    rewrite the lake's record: one line, exit 2, no new version."""
    config = copy_lake(xs_lake, tmp_path / "lake")
    catalog = Catalog(config)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    name = "audit.stage_progress"
    before = catalog.current_version(spark, name)
    assert before >= 1, "the xs lake's progress has versions to restore to"
    assert main(["restore", name, "--version", "0", "--yes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "audit layer" in err[0] and name in err[0], err
    assert catalog.current_version(spark, name) == before
