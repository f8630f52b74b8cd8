"""Lineage, table history, OpenLineage events, reproduce, pinned reads and the hash chain.

One module-scoped copy of the shared xs lake (built by run_stages bronze -> silver -> gold under
run id ``xs-lake``, so its lineage was recorded on a fresh lake) plus one audit stage run. The
expectations come from Delta's own logs (DESCRIBE HISTORY, the commit userMetadata), read here
without the audit code.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from pathlib import Path

import pytest
from conftest import XS_AS_OF, copy_lake
from pyspark.sql import functions as F

from lakehouse.audit.lineage import stage_run_uuid
from lakehouse.catalog import Catalog
from lakehouse.cli import main
from lakehouse.pipeline import RunContext, run_stages

XS_RUN = "xs-lake"


def lake_tables(root: str) -> list[str]:
    lake = Path(root) / "lake"
    return sorted(
        f"{layer.name}.{t.name}" for layer in lake.iterdir() for t in layer.iterdir()
        if (t / "_delta_log").is_dir()
    )


def delta_history(spark, catalog: Catalog, name: str) -> list[dict]:
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{catalog.path(name)}`").select(
        "version", "operation", "userMetadata"
    )
    return [r.asDict() for r in rows.orderBy("version").collect()]


@pytest.fixture(scope="module")
def lake(spark, xs_lake, tmp_path_factory):
    config = copy_lake(xs_lake, tmp_path_factory.mktemp("audit_lake") / "data")
    run_stages(spark, config, "audit", RunContext(run_id="audit-1"), echo=lambda line: None)
    return config


def lineage_rows(spark, config, run_id: str) -> list[dict]:
    df = Catalog(config).read(spark, "audit.lineage").where(F.col("run_id") == run_id)
    return [r.asDict() for r in df.collect()]


def test_lineage_names_every_table_read_and_written_with_existing_versions(spark, xs_lake, lake):
    catalog = Catalog(lake)
    rows = lineage_rows(spark, lake, XS_RUN)
    assert {r["stage"] for r in rows} == {"bronze", "silver", "gold"}
    assert {r["status"] for r in rows} == {"COMPLETE"}
    assert {r["config_digest"] for r in rows} == {xs_lake.digest()}  # the lake was built there

    # Written: exactly the versions whose commit carries the run id (Delta's own log).
    written_by_run, notes_by_run = {}, {}
    for name in lake_tables(lake.data_dir):
        commits = [
            h for h in delta_history(spark, catalog, name)
            if f"run_id={XS_RUN}" in (h["userMetadata"] or "")
        ]
        if commits and name != "audit.lineage":
            written_by_run[name] = (min(h["version"] for h in commits),
                                    max(h["version"] for h in commits))
            notes_by_run[name] = {h["userMetadata"] for h in commits}
    outputs = {
        r["dataset"]: (r["first_version"], r["version"]) for r in rows if r["direction"] == "output"
    }
    assert outputs == written_by_run
    # Each of those commits also names the stage that made it (README: run_id=... stage=...).
    for r in (r for r in rows if r["direction"] == "output"):
        assert all(f" stage={r['stage']}" in note for note in notes_by_run[r["dataset"]]), (
            r["dataset"], notes_by_run[r["dataset"]])
    assert {n.split(".")[0] for n in outputs} >= {"bronze", "silver", "gold"}

    # Read: gold names the five silver tables it builds from, at versions silver wrote.
    gold_inputs = {
        r["dataset"]: r["version"] for r in rows
        if r["stage"] == "gold" and r["direction"] == "input"
    }
    assert set(gold_inputs) == {
        "silver.customers", "silver.events", "silver.orders", "silver.social_posts",
        "silver.iot_readings",
    }
    for name, version in gold_inputs.items():
        assert version == outputs[name][1]
    silver_inputs = {
        r["dataset"] for r in rows if r["stage"] == "silver" and r["direction"] == "input"
    }
    assert {n for n in outputs if n.startswith("bronze.")} <= silver_inputs
    raw = [r for r in rows if r["stage"] == "bronze" and r["direction"] == "input"]
    raw_root = Path(lake.data_dir) / "raw"
    assert sorted(Path(r["dataset"]).name for r in raw) == sorted(
        p.name for p in raw_root.iterdir() if p.is_dir() and not p.name.startswith("_")
    )
    # Every version named exists in its table's history.
    for r in rows:
        if r["direction"] != "run" and r["version"] is not None:
            versions = {h["version"] for h in delta_history(spark, catalog, r["dataset"])}
            assert r["version"] in versions and (r["first_version"] in versions)


def test_openlineage_events_follow_the_run_event_spec(lake):
    folder = Path(lake.data_dir) / "lineage" / "openlineage"
    events = [json.loads(p.read_text()) for p in sorted(folder.glob(f"*_{XS_RUN}_*.json"))]
    by_stage = {}
    for event in events:
        by_stage.setdefault(event["job"]["name"], []).append(event)
    assert set(by_stage) == {"pipeline.bronze", "pipeline.silver", "pipeline.gold"}
    for name, stage_events in by_stage.items():
        assert [e["eventType"] for e in stage_events] == ["START", "COMPLETE"]
        run_ids = {e["run"]["runId"] for e in stage_events}
        assert run_ids == {stage_run_uuid(XS_RUN, name.split(".")[1])}
        uuid.UUID(run_ids.pop())
        for e in stage_events:
            datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00"))
            assert e["job"]["namespace"] == "lakehouse"
            assert e["producer"].startswith("https://")
            assert e["schemaURL"].startswith("https://openlineage.io/spec/")
            assert e["run"]["facets"]["lakehouse_run"]["pipeline_run_id"] == XS_RUN
    gold_done = by_stage["pipeline.gold"][1]
    outputs = {
        Path(d["name"]).name: d["facets"]["version"]["datasetVersion"] for d in gold_done["outputs"]
    }
    assert set(outputs) == {"customer_360", "journeys", "kpi_daily", "kpi_channel_daily"}
    c360 = next(d for d in gold_done["outputs"] if d["name"].endswith("customer_360"))
    assert {"name": "customer_key", "type": "string"} in c360["facets"]["schema"]["fields"]
    assert all(d["namespace"] == "file" for d in gold_done["inputs"] + gold_done["outputs"])


def test_history_is_complete_without_duplicates_after_rerunning_audit(spark, lake):
    catalog = Catalog(lake)
    run_stages(spark, lake, "audit", RunContext(run_id="audit-2"), echo=lambda line: None)
    recorded = catalog.read(spark, "audit.table_history")
    dupes = recorded.groupBy("table", "version").count().where(F.col("count") > 1).count()
    assert dupes == 0
    by_table: dict[str, set[int]] = {}
    for r in recorded.select("table", "version").collect():
        by_table.setdefault(r["table"], set()).add(r["version"])
    for name in lake_tables(lake.data_dir):
        versions = {h["version"] for h in delta_history(spark, catalog, name)}
        if name in ("audit.table_history", "audit.lineage"):
            # Written after the second audit collected the history: recorded next time.
            versions -= {max(versions)}
        assert by_table.get(name, set()) == versions, name
    made_by = {
        r["version"]: r["run_id"]
        for r in recorded.where(F.col("table") == "gold.customer_360").collect()
    }
    assert made_by[0] == XS_RUN
    checks = catalog.read(spark, "audit.reconciliation").where(F.col("audit_run_id") == "audit-2")
    assert checks.count() >= 8 and checks.where(~F.col("passed")).count() == 0


def test_reproduce_reports_identical_output(lake, capsys, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", lake.data_dir)
    assert main(["reproduce", XS_RUN]) == 0
    out = capsys.readouterr().out
    for table in ("customer_360", "journeys", "kpi_daily", "kpi_channel_daily"):
        assert f"gold.{table} (version 0): identical" in out
    assert "stage bronze: not rebuilt" in out and "stage silver: not rebuilt" in out
    assert f"run {XS_RUN}: 4/4 output table(s) identical" in out
    assert (Path(lake.data_dir) / "scratch" / "reproduce" / XS_RUN / "lake" / "gold").is_dir()


def test_gold_reads_the_pinned_silver_version(spark, lake, capsys, monkeypatch):
    catalog = Catalog(lake)
    # silver.orders version 0 is its empty creation (silver creates tables by an empty append).
    assert catalog.read(spark, "silver.orders", version=0).count() == 0
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", lake.data_dir)
    argv = ["run", "gold", "--as-of", XS_AS_OF, "--as-of-version", "silver.orders=0"]
    assert main(argv) == 0
    run_id = capsys.readouterr().out.split()[1].rstrip(":")
    rows = lineage_rows(spark, lake, run_id)
    inputs = {r["dataset"]: r["version"] for r in rows if r["direction"] == "input"}
    assert inputs["silver.orders"] == 0
    assert inputs["silver.customers"] == catalog.current_version(spark, "silver.customers")
    kpis = catalog.read(spark, "gold.kpi_daily")
    assert kpis.agg(F.sum("orders")).first()[0] == 0
    assert kpis.select("as_of").distinct().first()[0] == date.fromisoformat(XS_AS_OF)


def test_verify_finds_the_edited_and_the_removed_record(spark, lake, capsys, monkeypatch):
    from delta.tables import DeltaTable

    catalog = Catalog(lake)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", lake.data_dir)
    assert main(["audit", "verify"]) == 0
    assert "audit.table_history" in capsys.readouterr().out

    history = catalog.read(spark, "audit.table_history")
    target = history.where(
        (F.col("table") == "gold.customer_360") & (F.col("version") == 0)
    ).first()
    DeltaTable.forPath(spark, catalog.path("audit.table_history")).update(
        (F.col("table") == "gold.customer_360") & (F.col("version") == 0),
        {"rows_written": F.lit(999)},
    )
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert (
        f"audit.table_history: chain BROKEN at record {target['record_seq']} "
        f"(table=gold.customer_360 version=0): its content does not match its hash"
    ) in captured.out
    assert f"audit.table_history record {target['record_seq']}" in captured.err

    lineage = catalog.read(spark, "audit.lineage")
    middle = lineage.agg(F.max("record_seq")).first()[0] // 2
    DeltaTable.forPath(spark, catalog.path("audit.lineage")).delete(F.col("record_seq") == middle)
    assert main(["audit", "verify"]) == 1
    assert f"audit.lineage: chain BROKEN at record {middle}" in capsys.readouterr().out


def test_reproduce_retrains_a_segment_run_to_the_same_segments(spark, full_xs_lake):
    from lakehouse.audit.reproduce import reproduce_run

    lines: list[str] = []
    checks = reproduce_run(spark, full_xs_lake, "full-xs-lake", echo=lines.append,
                           stages=("segment",))
    assert [c.stage for c in checks] == ["segment"], lines
    # Every customer of the recorded snapshot was assigned again (the table holds only the
    # consenting ones: segments are for outreach).
    customers = Catalog(full_xs_lake).read(spark, "gold.customer_360").where(
        F.col("as_of") == XS_AS_OF).count()
    assert checks[0].rows == customers > 0
    assert checks[0].identical, checks[0].line()
    assert "identical" in lines[-1] and "MLflow run" in lines[-1]


@pytest.mark.parametrize("deletion_vectors", [False, True])
def test_gold_is_checked_against_silver_as_an_erasure_left_it(spark, config, deletion_vectors):
    """comparable_version: gold built from version v of a silver table still matches it after
    commits that add no row (an erasure's delete-only MERGE; on a table with deletion vectors
    also the purge before VACUUM); a commit that adds rows stops the walk, and a version whose
    files VACUUM removed is one clear error naming the remedy."""
    from delta.tables import DeltaTable

    from lakehouse.audit.reconcile import comparable_version
    from lakehouse.errors import VersionNotAvailableError
    from lakehouse.privacy.erasure import vacuum_now

    catalog = Catalog(config)
    path = catalog.path("silver.orders")
    rows = spark.createDataFrame([("o1", 1.0), ("o2", 2.0)], "order_id string, amount_eur double")
    rows.coalesce(1).write.format("delta").option(
        "delta.enableDeletionVectors", str(deletion_vectors).lower()).save(path)  # version 0
    rows.limit(0).union(spark.createDataFrame([("o3", 3.0)], rows.schema)).write.format(
        "delta").mode("append").save(path)                                # 1: adds a row
    gone = spark.createDataFrame([("o1",)], "order_id string")
    DeltaTable.forPath(spark, path).alias("t").merge(
        gone.alias("s"), "t.order_id = s.order_id").whenMatchedDelete().execute()  # 2: deletes
    assert comparable_version(spark, catalog, "silver.orders", 1) == 2
    assert comparable_version(spark, catalog, "silver.orders", 0) == 0
    vacuum_now(spark, catalog, "silver.orders", 0)  # version 0's only file was rewritten
    # VACUUM logs its own commits (start, end), which add no row either; with deletion vectors
    # the MERGE only masked o1 and vacuum_now purged the file first (a REORG commit).
    operations = [r["operation"] for r in DeltaTable.forPath(spark, path).history().collect()]
    assert ("REORG" in operations) == deletion_vectors, operations
    newest = catalog.current_version(spark, "silver.orders")
    assert newest > 2
    assert comparable_version(spark, catalog, "silver.orders", 1) == newest
    with pytest.raises(VersionNotAvailableError, match="silver.orders version 0.*run gold"):
        comparable_version(spark, catalog, "silver.orders", 0)


@pytest.mark.parametrize(("raised", "commits", "in_table"), [
    ("refusal", False, False),       # the user's input: every table as it was
    ("refusal", True, True),         # it changed a table first: recorded
    ("crash", False, True),          # not a refusal: recorded
    ("quality", False, True),        # a fail rule broke: the data's, recorded
])
def test_a_refused_stage_that_changed_no_table_leaves_audit_lineage_as_it_was(
        spark, config, raised, commits, in_table):
    """`run gold --as-of 2020-01-01` was refused in one line, yet committed a FAIL row to
    audit.lineage (on an empty lake it created the table): bad input leaves every table as it
    was. Its OpenLineage FAIL event, a file, is still written."""
    from lakehouse.audit.lineage import record_stage
    from lakehouse.errors import InputDataError

    catalog = Catalog(config)
    from lakehouse.errors import QualityRuleError

    error = {"refusal": InputDataError("refused"), "crash": RuntimeError("crashed"),
             "quality": QualityRuleError("a fail rule broke")}[raised]
    with pytest.raises(type(error)), record_stage(spark, config, "r1", "gold", inputs={}):
        if commits:
            spark.range(1).write.format("delta").save(catalog.path("gold.kpi_daily"))
        raise error
    assert catalog.current_version(spark, "audit.lineage") == (0 if in_table else None)
    if in_table:
        rows = catalog.read(spark, "audit.lineage").select("status").distinct().collect()
        assert [r[0] for r in rows] == ["FAIL"]
    events = [json.loads(p.read_text())["eventType"]
              for p in sorted((Path(config.data_dir) / "lineage" / "openlineage").glob("*.json"))]
    assert sorted(events) == ["FAIL", "START"]
