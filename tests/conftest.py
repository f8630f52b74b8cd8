"""One local Spark session for the whole test run, tuned for small data (see STYLE.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lakehouse.config import Config, load_config
from lakehouse.session import get_spark

# Every test writes below its own tmp_path; nothing may touch the repository's data/.
os.environ.pop("LAKEHOUSE_DATA_DIR", None)


@pytest.fixture(scope="session")
def spark():
    config = load_config("local").with_overrides(
        {
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.show_progress": False,
            "spark.conf.spark.ui.enabled": "false",
            "spark.conf.spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.conf.spark.default.parallelism": "2",
            "spark.conf.spark.databricks.delta.snapshotPartitions": "2",
            "spark.conf.spark.sql.streaming.minBatchesToRetain": "2",
        }
    )
    session = get_spark(config, app_name="lakehouse-tests")
    yield session
    session.stop()


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    """Local config whose data root is this test's tmp_path."""
    return load_config("local", overrides={"data_dir": str(tmp_path / "data")})
