"""A bronze run killed (SIGKILL) half-way and started again neither loses nor duplicates rows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

from lakehouse.bronze import run_bronze
from lakehouse.catalog import Catalog
from lakehouse.config import REPO_ROOT, load_config
from lakehouse.sources import load_sources

DAYS = 6


def _land_files(raw: Path) -> None:
    """Six daily files for two sources, 30 lines each, one malformed line per file."""
    for day in range(1, DAYS + 1):
        orders = ["order_id,customer_id,order_ts,amount,currency,status,n_items"]
        orders += [f"O{day}-{i},C{i},2026-01-{day:02d}T10:00:00Z,{i}.5,EUR,completed,1"
                   for i in range(29)]
        orders.append(f"O{day}-bad,truncated")
        (raw / "orders").mkdir(parents=True, exist_ok=True)
        (raw / "orders" / f"orders_2026-01-{day:02d}.csv").write_text("\n".join(orders) + "\n")
        clicks = [f'{{"event_id": "E{day}-{i}", "cookie_id": "k{i}"}}' for i in range(29)]
        clicks.append('{"event_id": "broken')
        (raw / "clickstream").mkdir(parents=True, exist_ok=True)
        (raw / "clickstream" / f"clickstream_2026-01-{day:02d}.jsonl").write_text(
            "\n".join(clicks) + "\n")


def _conf_dir_one_file_per_batch(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    (conf / "crash.yaml").write_text(
        "spark:\n  master: local[1]\n  shuffle_partitions: 1\n  show_progress: false\n"
        "bronze:\n  max_files_per_trigger: 1\n"
    )
    return conf


def _commits(table_dir: Path) -> int:
    log = table_dir / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def _rows(spark, config, name):
    df = Catalog(config).read(spark, name)
    return sorted(
        (r["_raw"], r["f"]) for r in df.select("_raw", F.element_at(
            F.split("_source_file", "/"), -1).alias("f")).collect()
    )


def test_killed_bronze_run_resumes_without_loss_or_duplicates(spark, tmp_path):
    data = tmp_path / "data"
    _land_files(data / "raw")
    conf = _conf_dir_one_file_per_batch(tmp_path)
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "run", "bronze", "--env", "crash", "--conf-dir",
         str(conf)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    orders_dir = data / "lake" / "bronze" / "orders"
    deadline = time.monotonic() + 240
    try:
        # Kill mid-stream: after some but not all of the orders batches are committed.
        while _commits(orders_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = _commits(orders_dir)
    assert 0 < killed_at < DAYS, f"kill did not land mid-run ({killed_at} commits)"

    config = load_config("crash", conf, overrides={"data_dir": str(data)})
    sources = load_sources(config)
    run_bronze(spark, config, sources, "rerun", only=["orders", "clickstream"])

    # The uninterrupted reference takes all files in one batch per source: the rows must not
    # depend on how the files were batched.
    clean = load_config("crash", conf, overrides={"data_dir": str(tmp_path / "clean"),
                                                  "bronze.max_files_per_trigger": 50})
    shutil.copytree(data / "raw", tmp_path / "clean" / "raw")
    run_bronze(spark, clean, sources, "clean", only=["orders", "clickstream"])

    for name in ("bronze.orders", "bronze.clickstream"):
        resumed, uninterrupted = _rows(spark, config, name), _rows(spark, clean, name)
        assert len(resumed) == DAYS * 30
        assert resumed == uninterrupted, f"{name} differs after kill and re-run"
