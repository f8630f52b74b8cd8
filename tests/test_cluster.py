"""The whole pipeline submitted with scripts/submit.sh to a real Spark standalone cluster (one
master and one worker on 127.0.0.1, from the installed pyspark) gives the same gold tables and
attribution as a local run on the same raw data. The cluster is shut down whatever happens."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from childconf import light_conf_env
from conftest import XS_AS_OF
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import REPO_ROOT, load_config
from lakehouse.standalone import standalone_cluster

pytestmark = pytest.mark.slow

COMPARED = ("gold.customer_360", "gold.journeys", "gold.kpi_daily", "gold.kpi_channel_daily",
            "gold.channel_attribution")
# Bookkeeping that differs between any two runs by design.
RUN_COLUMNS = {"run_id"}


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory):
    """spark://127.0.0.1:PORT with one 2-core worker; both processes killed on the way out."""
    with standalone_cluster(tmp_path_factory.mktemp("standalone")) as url:
        yield url


def _rows(spark, config, name: str) -> list:
    df = Catalog(config).read(spark, name)
    if name == "gold.channel_attribution":
        # Per-segment rows depend on K-means, whose k-means|| start follows the data's
        # partitioning (cluster and local differ); the overall answer must not.
        df = df.where("segment = 'all'")
    columns = [
        F.round(c, 6).alias(c) if t in ("double", "float") else F.col(c)
        for c, t in df.dtypes if c not in RUN_COLUMNS
    ]
    return sorted(df.select(*columns).collect(), key=repr)


def test_pipeline_submitted_to_a_standalone_cluster_equals_a_local_run(
    spark, xs_lake, full_xs_lake, standalone_master, tmp_path
):
    data = tmp_path / "cluster"
    shutil.copytree(Path(xs_lake.data_dir) / "raw", data / "raw")
    # A lighter K-means search (segments are not compared); attribution as in the local run.
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(data),
           "SPARK_SUBMIT_OPTS_EXTRA": "--executor-memory 1g --driver-memory 1g",
           **light_conf_env("standalone", attribution=False)}
    submitted = subprocess.run(
        [str(REPO_ROOT / "scripts" / "submit.sh"), "--master", standalone_master,
         "--env", "standalone", "all", "--as-of", XS_AS_OF],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "[attribute] done" in submitted.stdout

    # The local reference: the same raw data through every stage in this process.
    local = full_xs_lake
    cluster = load_config("standalone", overrides={"data_dir": str(data)})
    for name in COMPARED:
        assert _rows(spark, cluster, name) == _rows(spark, local, name), (
            f"{name} differs between the cluster run and the local run")


def test_submit_refuses_an_unknown_job_in_one_line():
    result = subprocess.run([str(REPO_ROOT / "scripts" / "submit.sh"), "--master", "local[1]",
                             "no_such_job"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no job 'no_such_job'" in lines[0]
