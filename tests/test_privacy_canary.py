"""Secrets: a planted canary pseudonymisation key appears in no log and no written file after a
full run; and after an erasure of one customer, bronze and silver run again cleanly without
bringing them back (the rewritten raw file is not re-ingested)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from childconf import light_conf_env
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import load_config
from lakehouse.pipeline import STAGE_ORDER
from lakehouse.privacy.erasure import erase_subject
from lakehouse.session import REDACTION_REGEX

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2026-01-01"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "lakehouse", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def canary_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    canary = f"canary-{uuid.uuid4().hex}-key"
    data = root / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PYSPARK"))},
        "LAKEHOUSE_DATA_DIR": str(data),
        "LAKEHOUSE_PSEUDONYM_KEY": canary,
        **light_conf_env(),
        # The Spark event log too: it records every Spark and system property of the run.
        "PYSPARK_SUBMIT_ARGS": (f"--conf spark.eventLog.enabled=true --conf "
                                f"spark.eventLog.dir=file:{root / 'eventlog'} "
                                f"--conf spark.master=local[2] pyspark-shell"),
    }
    (root / "eventlog").mkdir()
    outputs = [_run(["generate", "--scale", "xs", "--days", "1", "--no-progress"], env)]
    outputs.append(_run(["run", "all", "--as-of", AS_OF], env))
    return root, canary, env, outputs


def test_redaction_pattern_covers_the_key_variable():
    name = load_config("local").get("privacy.pseudonym_key_env")
    assert re.search(REDACTION_REGEX, name)


def test_run_all_reports_every_stage(canary_lake):
    *_, outputs = canary_lake
    text = outputs[1].stdout
    for stage in STAGE_ORDER:
        assert f"[{stage}] done in" in text, f"run all printed no summary for {stage}"
    assert "gold.customer_360" in text and "gold.journeys" in text


def test_canary_key_is_in_no_log_and_no_file(canary_lake):
    root, canary, _, outputs = canary_lake
    for out in outputs:
        assert canary not in out.stdout and canary not in out.stderr
    needle = canary.encode()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any("mlflow" in p.parts for p in files), "the run wrote MLflow files"
    assert any("eventlog" in p.parts for p in files), "the run wrote a Spark event log"
    assert [str(p) for p in files if needle in p.read_bytes()] == []


def test_bronze_and_silver_rerun_after_erasure_bring_nothing_back(spark, canary_lake, monkeypatch):
    root, canary, _, _ = canary_lake
    monkeypatch.setenv("LAKEHOUSE_PSEUDONYM_KEY", canary)
    config = load_config("local", overrides={"data_dir": str(root / "data")})
    catalog = Catalog(config)
    crm = catalog.read(spark, "bronze.crm_customers").where(F.col("customer_id").isNotNull())
    customer_id = crm.select(F.trim("customer_id")).first()[0]
    result = erase_subject(spark, config, customer_id=customer_id)
    assert result.rows_deleted.get("bronze.crm_customers", 0) >= 1
    rows_before = {t: catalog.read(spark, t).count()
                   for t in ("bronze.crm_customers", "silver.customers")}

    # In this process (the test session's Spark), with the same key: what the CLI would run.
    from lakehouse.pipeline import RunContext, run_stages

    lines: list[str] = []
    for stage in ("bronze", "silver"):
        run_stages(spark, config, stage, RunContext(run_id=f"after-erasure-{stage}"),
                   echo=lines.append)
    assert any(re.search(r"bronze: 0 rows landed", line) for line in lines), lines
    assert {t: catalog.read(spark, t).count() for t in rows_before} == rows_before
    again = catalog.read(spark, "bronze.crm_customers").where(
        F.trim("customer_id") == customer_id).count()
    assert again == 0
