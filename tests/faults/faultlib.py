"""Shared pieces of the fault suite: running the CLI in a child process, table snapshots, and
the results file `make faults` summarises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from childconf import light_conf_env
from pyspark.sql import functions as F

from lakehouse.catalog import LAYERS, Catalog
from lakehouse.config import load_config

XS_AS_OF = "2026-01-03"  # as tests/conftest.py (importing it here would be circular)

# Written per case when set (make faults sets it); one JSON object per line.
REPORT_ENV = "LAKEHOUSE_FAULTS_REPORT"
BOOKKEEPING = {"run_id", "quarantined_at", "bronze_version", "bronze_batch_id", "_ingested_at",
               "_batch_id", "_ingest_run_id", "updated_at", "loaded_at"}


def record(category: str, case: str, ok: bool, detail: str = "") -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"category": category, "case": case, "ok": ok,
                                  "detail": detail[:300]}) + "\n")


def child_env(data_dir: str) -> dict[str, str]:
    """The environment of a child `lakehouse` process on ``data_dir`` with the faults config."""
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_DEBUG"}
    return {**env, "LAKEHOUSE_DATA_DIR": data_dir, **light_conf_env()}


def run_cli(data_dir: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m lakehouse ARGS` in a child process (its own JVM: a crash cannot take the test
    session down) against ``data_dir``."""
    return subprocess.run([sys.executable, "-m", "lakehouse", *args], env=child_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)


def versions(spark, config) -> dict[str, int | None]:
    catalog = Catalog(config)
    return {name: catalog.current_version(spark, name)
            for layer in LAYERS for name in catalog.tables(layer)}


def business_rows(spark, config, name: str) -> set[tuple]:
    """A table's rows without per-run bookkeeping columns, as a set of tuples."""
    df = Catalog(config).read(spark, name)
    keep = [c for c in df.columns if c not in BOOKKEEPING and not c.startswith("_")]
    return {tuple(r) for r in df.select(*[F.col(c).cast("string") for c in keep]).collect()}


@pytest.fixture(scope="session", name="reference")
def reference_fixture(xs_lake, tmp_path_factory):
    """`lakehouse run all` uninterrupted, in a child process, on the xs lake's raw files."""
    root = tmp_path_factory.mktemp("faults_reference") / "data"
    shutil.copytree(Path(xs_lake.data_dir) / "raw", root / "raw")
    result = run_cli(str(root), "run", "all", "--as-of", XS_AS_OF)
    assert result.returncode == 0, result.stderr[-2000:]
    return load_config("local", overrides={"data_dir": str(root)})
