"""The pipeline end to end on generated xs data: gold reconciles with silver, no raw PII leaves
the restricted table, and a `run all` killed part-way then re-run gives the same silver and gold
tables as an uninterrupted run.

The uninterrupted lake is the suite's shared xs lake (conftest.xs_lake: the same generator seed
and as-of, taken through bronze, silver and gold); that `run all` reports every stage is checked
on the run submitted to a standalone cluster (tests/test_privacy_canary.py)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from conftest import XS_AS_OF
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import load_config
from lakehouse.pipeline import RunContext, run_stages

AS_OF = date(2026, 1, 3)  # the last day of xs's three generated days
SILVER = ("customers", "events", "orders", "payments", "social_posts", "iot_readings",
          "identity_map", "quarantine", "customer_pii")
GOLD = ("customer_360", "journeys", "kpi_daily", "kpi_channel_daily")


@pytest.fixture(scope="module")
def lake(xs_lake):
    """(raw files, config) of the uninterrupted lake: the shared xs lake, read-only."""
    assert AS_OF.isoformat() == XS_AS_OF
    return Path(xs_lake.data_dir) / "raw", xs_lake


def _business_rows(spark, config, name: str) -> list:
    """Rows without run bookkeeping (run ids, bronze versions, load times differ by design)."""
    df = Catalog(config).read(spark, name)
    keep = [c for c in df.columns
            if not c.startswith("_") and c not in {"run_id", "quarantined_at", "bronze_version",
                                                   "bronze_batch_id"}]
    # the two runs read the same raw files from different data roots: compare file names
    columns = [F.element_at(F.split(c, "/"), -1).alias(c) if c == "source_file" else F.col(c)
               for c in keep]
    return sorted(df.select(*columns).collect(), key=repr)


def test_gold_reconciles_with_silver(spark, lake):
    _, config = lake
    catalog = Catalog(config)
    customers = catalog.read(spark, "silver.customers")
    c360 = catalog.read(spark, "gold.customer_360")
    # every resolved customer who had signed up by the as-of date has exactly one row
    expected_keys = customers.where(
        F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(AS_OF))
    ).select("customer_key").distinct()
    assert c360.count() == c360.select("customer_key").distinct().count()
    assert c360.select("customer_key").exceptAll(expected_keys).count() == 0
    assert expected_keys.exceptAll(c360.select("customer_key")).count() == 0
    # revenue: completed orders of known customers up to the as-of day, summed independently
    orders = catalog.read(spark, "silver.orders").where(
        (F.lower("status") == "completed")
        & (F.to_date("order_ts") <= F.lit(AS_OF))
    ).join(c360.select("customer_key"), "customer_key", how="inner")
    silver_revenue = orders.agg(F.sum("amount_eur")).first()[0] or 0.0
    gold_revenue = c360.agg(F.sum("monetary")).first()[0] or 0.0
    assert silver_revenue > 0
    assert gold_revenue == pytest.approx(silver_revenue, rel=1e-9)
    # journeys are a marketing output: only customers with marketing consent, all their orders
    consenting = customers.where(F.col("marketing_consent")).select("customer_key")
    assert 0 < consenting.count() < customers.count()
    consenting_revenue = orders.join(consenting, "customer_key").agg(F.sum("amount_eur")).first()[0]
    journeys = catalog.read(spark, "gold.journeys")
    assert journeys.join(consenting, "customer_key", "left_anti").count() == 0
    converted = journeys.where("converted")
    assert converted.agg(F.sum("conversion_value")).first()[0] == pytest.approx(
        consenting_revenue, rel=1e-9)
    # kpi_channel_daily's last-touch conversions are those same journeys, the ones with a
    # touchpoint: no conversion of a customer without consent may be counted there
    touched = converted.where(F.col("touchpoints") > 0)
    assert 0 < touched.count() < customers.count()
    channel_kpis = catalog.read(spark, "gold.kpi_channel_daily").agg(
        F.sum("conversions").alias("conversions"), F.sum("revenue_eur").alias("revenue"))
    kpi = channel_kpis.first()
    assert kpi["conversions"] == touched.count()
    assert kpi["revenue"] == pytest.approx(
        touched.agg(F.sum("conversion_value")).first()[0], rel=1e-9)


def test_no_gold_or_silver_table_holds_raw_crm_pii(spark, lake):
    raw, config = lake
    pii: set[str] = set()
    for path in (raw / "crm_customers").glob("*.csv"):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                for column in ("email", "phone", "first_name", "last_name", "social_handle"):
                    value = (row.get(column) or "").strip()
                    if len(value) > 3:
                        pii |= {value, value.lower()}
    assert len(pii) > 100
    catalog = Catalog(config)
    names = [f"gold.{t}" for t in GOLD] + [f"silver.{t}" for t in SILVER if t != "customer_pii"]
    for name in names:
        df = catalog.read(spark, name)
        strings = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        if not strings:
            continue
        values = {v for row in df.select(*strings).collect() for v in row if v}
        leaked = values & pii
        assert not leaked, f"{name} holds raw PII such as {sorted(leaked)[:1]}"


@pytest.mark.slow
def test_killed_run_all_then_rerun_equals_uninterrupted(spark, lake, tmp_path):
    raw, clean_config = lake
    crashed = tmp_path / "crashed"
    shutil.copytree(raw, crashed / "raw")
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(crashed)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "run", "all", "--as-of", AS_OF.isoformat()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    # Kill inside silver: after its first MERGE target exists, before the run can finish.
    marker = crashed / "lake" / "silver" / "customers" / "_delta_log"
    deadline = time.monotonic() + 600
    try:
        while not marker.is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert marker.is_dir(), "the pipeline never reached silver before the deadline"
    assert not (crashed / "lake" / "gold" / "journeys").exists(), "killed too late"

    # Re-run the stages whose tables are compared (segment and the later stages read gold only).
    config = load_config("local", overrides={"data_dir": str(crashed)})
    for stage in ("bronze", "silver", "gold"):
        run_stages(spark, config, stage, RunContext(run_id="rerun", as_of=AS_OF),
                   echo=lambda line: None)
    for layer, tables in (("silver", SILVER), ("gold", GOLD)):
        for table in tables:
            name = f"{layer}.{table}"
            assert _business_rows(spark, config, name) == _business_rows(
                spark, clean_config, name), f"{name} differs after kill and re-run"
