"""The whole pipeline submitted with scripts/submit.sh to a real Spark standalone cluster (one
master and one worker on 127.0.0.1, from the installed pyspark) gives the same gold tables and
attribution as a local run on the same raw data. The cluster is shut down whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pyspark
import pytest
from conftest import XS_AS_OF, copy_lake
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.config import REPO_ROOT, load_config
from lakehouse.pipeline import RunContext, run_stages

pytestmark = pytest.mark.slow

SPARK_CLASS = REPO_ROOT / ".venv" / "bin" / "spark-class"
COMPARED = ("gold.customer_360", "gold.journeys", "gold.kpi_daily", "gold.kpi_channel_daily",
            "gold.channel_attribution")
# Bookkeeping that differs between any two runs by design.
RUN_COLUMNS = {"run_id"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory):
    """spark://127.0.0.1:PORT with one 2-core worker; both processes killed on the way out."""
    if not SPARK_CLASS.exists():
        pytest.fail(f"{SPARK_CLASS} missing: run `make setup`")
    work = tmp_path_factory.mktemp("standalone")
    env = {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    port, ui_port = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    commands = [
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
        [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url,
         "--host", "127.0.0.1", "--cores", "2", "--memory", "2g",
         "--webui-port", str(_free_port()), "--work-dir", str(work / "worker")],
    ]
    procs: list[subprocess.Popen] = []
    try:
        for i, command in enumerate(commands):
            log = open(work / f"daemon{i}.log", "wb")  # noqa: SIM115 - lives as long as the daemon
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            if i == 0:
                time.sleep(2)
        deadline = time.monotonic() + 120
        while _alive_workers(ui_port) < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join((work / f"daemon{i}.log").read_text()[-2000:] for i in range(2))
                pytest.fail(f"standalone cluster did not come up:\n{logs}")
            time.sleep(1)
        yield url
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _rows(spark, config, name: str) -> list:
    df = Catalog(config).read(spark, name)
    columns = [
        F.round(c, 6).alias(c) if t in ("double", "float") else F.col(c)
        for c, t in df.dtypes if c not in RUN_COLUMNS
    ]
    return sorted(df.select(*columns).collect(), key=repr)


def test_pipeline_submitted_to_a_standalone_cluster_equals_a_local_run(
    spark, xs_lake, standalone_master, tmp_path
):
    data = tmp_path / "cluster"
    shutil.copytree(Path(xs_lake.data_dir) / "raw", data / "raw")
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(data),
           "SPARK_SUBMIT_OPTS_EXTRA": "--executor-memory 1g --driver-memory 1g"}
    submitted = subprocess.run(
        [str(REPO_ROOT / "scripts" / "submit.sh"), "--master", standalone_master,
         "--env", "standalone", "all", "--as-of", XS_AS_OF],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "[attribute] done" in submitted.stdout

    # The local reference: the shared xs lake (same raw data, same as_of) plus attribution.
    local = copy_lake(xs_lake, tmp_path / "local")
    ctx = RunContext(run_id="local-reference", as_of=date.fromisoformat(XS_AS_OF))
    run_stages(spark, local, "attribute", ctx, echo=lambda line: None)

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
