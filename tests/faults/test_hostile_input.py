"""Hostile files dropped into the raw folders (issue: reliability under faults).

For each case: a private copy of the xs lake, one hostile file, then `lakehouse run bronze` and
`lakehouse run silver` in a child process (make test's sample: in this process). The case
passes when either

* both stages succeed, every bronze row is accounted for (silver = bronze - quarantined -
  duplicates, per source), every quarantined row of the file has a reason, and every silver row
  that existed before is still there unchanged; or
* a stage fails with exactly one `lakehouse: error:` line that names the file, and no table of
  the failing stage moved to a new version.

The child's exit must never be a crash (a signal, a JVM out-of-memory). `make test` runs a
sample; `make faults` (LAKEHOUSE_FAULTS=full) runs every case.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from conftest import copy_lake
from faultlib import business_rows, record, run_cli, versions
from hostile_inputs import CASES, SAMPLE
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.cli import main
from lakehouse.silver.reconcile import reconcile

FULL = os.environ.get("LAKEHOUSE_FAULTS") == "full"
SILVER = ("customers", "events", "orders", "payments", "social_posts", "iot_readings")


def _run_stage(data_dir: str, stage: str, in_process: bool) -> tuple[int, str]:
    """(exit code, stderr) of `lakehouse run STAGE`. The full suite runs it in a child process:
    a hostile file may kill its JVM. make test's sample case is known not to, so it runs the
    same CLI entry point in this process (one JVM start and Spark set-up fewer per stage)."""
    if not in_process:
        result = run_cli(data_dir, "run", stage)
        return result.returncode, result.stderr
    err = io.StringIO()
    saved = os.environ.get("LAKEHOUSE_DATA_DIR")
    os.environ["LAKEHOUSE_DATA_DIR"] = data_dir
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", stage])
    finally:
        if saved is None:
            del os.environ["LAKEHOUSE_DATA_DIR"]
        else:
            os.environ["LAKEHOUSE_DATA_DIR"] = saved
    return code, err.getvalue()


def _check(spark, config, path) -> tuple[bool, str]:
    before_rows = {t: business_rows(spark, config, f"silver.{t}") for t in SILVER}
    for stage in ("bronze", "silver"):
        before = versions(spark, config)
        returncode, stderr = _run_stage(config.data_dir, stage, in_process=not FULL)
        if returncode != 0:
            lines = stderr.strip().splitlines()
            if returncode < 0 or "OutOfMemoryError" in stderr:
                return False, f"{stage} crashed (exit {returncode}): {lines[-1:]}"
            last = lines[-1] if lines else ""
            if not last.startswith("lakehouse: error:") or path.name not in last:
                return False, f"{stage} failed without naming {path.name}: {last[:200]}"
            moved = {t for t, v in versions(spark, config).items()
                     if t.startswith(stage) and v != before.get(t)}
            if moved:
                return False, f"{stage} failed but committed to {sorted(moved)}"
            return True, f"refused cleanly: {last[:160]}"
    unbalanced = [r for r in reconcile(spark, config) if not r["balanced"]]
    if unbalanced:
        return False, f"bronze rows unaccounted for: {unbalanced}"
    quarantine = Catalog(config).read(spark, "silver.quarantine")
    reasonless = quarantine.where(F.col("source_file").endswith(path.name)).where(
        F.coalesce(F.length("reason"), F.lit(0)) == 0).count()
    if reasonless:
        return False, f"{reasonless} quarantined rows of {path.name} without a reason"
    for table, rows in before_rows.items():
        lost = rows - business_rows(spark, config, f"silver.{table}")
        if lost:
            return False, f"silver.{table}: {len(lost)} earlier rows changed or lost"
    return True, "accepted: rows landed, quarantined with reasons, or deduplicated"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES) if FULL else SAMPLE)
def test_hostile_file_is_quarantined_or_refused_cleanly(spark, xs_lake, tmp_path, case):
    config = copy_lake(xs_lake, tmp_path / "lake")
    path = CASES[case](Path(config.data_dir) / "raw")
    ok, detail = _check(spark, config, path)
    record("hostile input", case, ok, detail)
    assert ok, f"{case}: {detail}"
