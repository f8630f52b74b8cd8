"""A throwaway Spark standalone cluster on 127.0.0.1, from the installed pyspark: one master and
one worker, for the cluster test and the local-vs-cluster benchmark.

    with standalone_cluster(work_dir) as master_url:
        subprocess.run(["scripts/submit.sh", "--master", master_url, "--env", "standalone", "all"])

Both daemons run in their own process groups and are killed on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyspark

from lakehouse.config import REPO_ROOT
from lakehouse.errors import LakehouseError

SPARK_CLASS = REPO_ROOT / ".venv" / "bin" / "spark-class"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@contextlib.contextmanager
def standalone_cluster(
    work_dir: Path, *, cores: int = 2, memory: str = "2g", timeout: float = 120.0
) -> Iterator[str]:
    """Start master + worker, wait until the worker registered, yield ``spark://...``."""
    if not SPARK_CLASS.exists():
        raise LakehouseError(f"{SPARK_CLASS} is missing: run `make setup`")
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        # spark-class looks for pyspark with `python3` unless SPARK_HOME says where it is.
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    port, ui_port = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    commands = [
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
        [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url,
         "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
         "--webui-port", str(free_port()), "--work-dir", str(work_dir / "worker")],
    ]
    logs = [work_dir / "master.log", work_dir / "worker.log"]
    procs: list[subprocess.Popen] = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(command, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            time.sleep(1)
        deadline = time.monotonic() + timeout
        while alive_workers(ui_port) < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tail = "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
                raise LakehouseError(f"standalone cluster did not come up in {timeout:.0f}s; "
                                     f"logs in {work_dir}: {tail.splitlines()[-1:]}")
            time.sleep(1)
        yield url
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
