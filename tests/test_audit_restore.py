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


def test_restoring_a_table_built_from_several_sources_says_what_is_not_set_back(
    spark, xs_lake, tmp_path, capsys, monkeypatch
):
    config = copy_lake(xs_lake, tmp_path / "lake")
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    assert main(["restore", "silver.identity_map", "--version", "0", "--yes"]) == 0
    assert "silver.identity_map is built from several sources, so silver's progress was not " \
        "set back" in capsys.readouterr().out
