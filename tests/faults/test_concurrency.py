"""Concurrency: two pipeline runs at once, concurrent MERGEs into one table, blind appends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import XS_AS_OF
from faultlib import child_env, record, reference_fixture  # noqa: F401 - fixture
from test_crashes import _rows, _tables

from lakehouse.config import load_config
from lakehouse.silver.io import merge_upsert

FULL = os.environ.get("LAKEHOUSE_FAULTS") == "full"


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="two whole pipeline runs: `make faults`")
def test_two_runs_at_once_end_as_one_run(spark, xs_lake, reference, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(Path(xs_lake.data_dir) / "raw", root / "raw")
    env = child_env(str(root))
    command = [sys.executable, "-m", "lakehouse", "run", "all", "--as-of", XS_AS_OF]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=1800), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refused = [err.strip().splitlines()[-1] for code, err in results if code != 0]
    ok = codes[0] == 0 and all(code in (0, 2) for code in codes) and all(
        line.startswith("lakehouse: error:") for line in refused)
    config = load_config("local", overrides={"data_dir": str(root)})
    differs = [n for n in _tables(reference) if _rows(spark, config, n) != _rows(
        spark, reference, n)]
    record("concurrency", "two run all at once", ok and not differs,
           f"exit codes {codes}; refused: {refused}; differs: {differs}")
    assert ok, f"exit codes {codes}: {refused}"
    assert not differs, f"tables differ from one run: {differs}"


def test_concurrent_merges_into_one_table_are_retried_to_the_right_result(spark, tmp_path):
    path = str(tmp_path / "target")
    spark.createDataFrame([(i, "base") for i in range(100)], "id long, v string") \
        .write.format("delta").save(path)
    # Two writers upsert overlapping keys with the same values (so any commit order gives the
    # same table): keys 50-149 and 100-199.
    batches = [[(i, f"new-{i}") for i in range(50, 150)], [(i, f"new-{i}") for i in range(100, 200)]]
    errors: list[BaseException] = []

    def writer(rows):
        try:
            merge_upsert(spark, path, spark.createDataFrame(rows, "id long, v string"), ["id"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {i: "base" for i in range(50)} | {i: f"new-{i}" for i in range(50, 200)}
    got = {r.id: r.v for r in spark.read.format("delta").load(path).collect()}
    ok = not errors and got == expected
    record("concurrency", "concurrent MERGEs, same table", ok, f"errors: {errors[:1]}")
    assert not errors, f"a concurrent MERGE failed instead of retrying: {errors[0]}"
    assert got == expected


def test_concurrent_blind_appends_lose_no_rows(spark, tmp_path):
    path = str(tmp_path / "appends")
    spark.range(0).write.format("delta").save(path)

    def writer(offset):
        for batch in range(5):
            start = offset + batch * 100
            spark.range(start, start + 100).write.format("delta").mode("append").save(path)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 10_000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(r.id for r in spark.read.format("delta").load(path).collect())
    expected = sorted([*range(0, 500), *range(10_000, 10_500)])
    record("concurrency", "blind appends", ids == expected)
    assert ids == expected
