"""SIGKILL at named points of `lakehouse run all`, then a plain re-run: every silver and gold
table must equal an uninterrupted run's (no lost rows, no duplicates), whatever the point.

The points are `lakehouse.faults.crash_point` calls placed before and after the commits of each
stage; `NAME:N` is the N-th time a point is reached (the N-th source, table or batch). Runs in
`make faults` only (two pipeline runs per point); `make test` keeps the two kill-and-rerun tests
in tests/test_bronze_crash.py and tests/test_pipeline_e2e.py as its sample.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import XS_AS_OF
from faultlib import record, reference_fixture, run_cli  # noqa: F401 - fixture
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import load_config

FULL = os.environ.get("LAKEHOUSE_FAULTS") == "full"
CRASH_POINTS = (
    "bronze.before_commit:1", "bronze.before_commit:3", "bronze.before_commit:6",
    "bronze.after_commit:1", "bronze.after_commit:4",
    "silver.before_merge:1", "silver.before_merge:3", "silver.before_merge:6",
    "silver.before_merge:5", "silver.after_merge:2", "silver.after_merge:6",
    "silver.before_progress:1",
    "gold.before_write:1", "gold.before_write:2", "gold.before_write:4", "gold.after_write:3",
    "segment.before_register:1", "segment.before_scores:1", "segment.after_scores:1",
    "attribute.before_write:1", "attribute.after_write:1",
    "audit.before_write:1",
)
# Differ between any two runs by design (ids, times, versions of the run's own bookkeeping).
BOOKKEEPING = {"run_id", "quarantined_at", "bronze_version", "bronze_batch_id", "model_version",
               "source_file"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FULL, reason="crash points run in `make faults`")]


def _rows(spark, config, name: str) -> list:
    df = Catalog(config).read(spark, name)
    keep = [c for c in df.columns if c not in BOOKKEEPING and not c.startswith("_")]
    doubles = {c for c, t in df.dtypes if t == "double"}
    cols = [F.round(c, 6).alias(c) if c in doubles else F.col(c) for c in keep]
    return sorted((tuple(r) for r in df.select(*cols).collect()), key=repr)


def _tables(config) -> list[str]:
    catalog = Catalog(config)
    return catalog.tables("silver") + catalog.tables("gold")


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_then_rerun_equals_an_uninterrupted_run(spark, xs_lake, reference, tmp_path, point):
    root = tmp_path / "data"
    shutil.copytree(Path(xs_lake.data_dir) / "raw", root / "raw")
    os.environ["LAKEHOUSE_CRASH_AT"] = point
    try:
        crashed = run_cli(str(root), "run", "all", "--as-of", XS_AS_OF)
    finally:
        del os.environ["LAKEHOUSE_CRASH_AT"]
    if crashed.returncode != -9:
        record("crash", point, False, f"point not reached (exit {crashed.returncode})")
        pytest.fail(f"{point}: the run was not killed (exit {crashed.returncode}); "
                    f"{crashed.stderr[-500:]}")
    rerun = run_cli(str(root), "run", "all", "--as-of", XS_AS_OF)
    if rerun.returncode != 0:
        record("crash", point, False, f"re-run failed: {rerun.stderr.strip()[-200:]}")
        pytest.fail(f"{point}: re-run failed: {rerun.stderr[-2000:]}")
    config = load_config("local", overrides={"data_dir": str(root)})
    expected_tables = _tables(reference)
    problems = [] if _tables(config) == expected_tables else ["different set of tables"]
    problems += [name for name in expected_tables
                 if _rows(spark, config, name) != _rows(spark, reference, name)]
    record("crash", point, not problems, f"differs: {problems}" if problems else "")
    assert not problems, f"{point}: tables differ after the re-run: {problems}"
