"""`make mlflow-ui` for real: the MLflow server started by scripts/mlflow_ui.py on a free
loopback port, against the store a pipeline run produced, serves the registered segmentation
model with its champion alias, the run's metrics and its PNG plots through the REST API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from lakehouse.config import REPO_ROOT

pytestmark = pytest.mark.slow
MODEL = "customer_segmentation"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def raw(self, route: str, **params: str) -> bytes:
        url = f"{self.base}{route}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get(self, endpoint: str, **params: str) -> dict:
        return json.loads(self.raw(f"/api/2.0/mlflow/{endpoint}", **params))


@pytest.fixture(scope="module")
def mlflow_server(full_xs_lake, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow_ui") / "server.log"
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": full_xs_lake.data_dir}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "scripts" / "mlflow_ui.py"), "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        api = Api(port)
        deadline = time.monotonic() + 180
        while True:
            try:
                if api.raw("/health").strip() == b"OK":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MLflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield api
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _artifact_files(api: Api, run_id: str, path: str = "") -> list[str]:
    listing = api.get("artifacts/list", run_id=run_id, **({"path": path} if path else {}))
    files = []
    for entry in listing.get("files", []):
        if entry.get("is_dir"):
            files += _artifact_files(api, run_id, entry["path"])
        else:
            files.append(entry["path"])
    return files


def test_registered_model_alias_metrics_and_plots_are_served(mlflow_server):
    api = mlflow_server
    model = api.get("registered-models/get", name=MODEL)["registered_model"]
    assert model["name"] == MODEL
    champion = api.get("registered-models/alias", name=MODEL, alias="champion")["model_version"]
    assert "champion" in champion.get("aliases", [])

    run = api.get("runs/get", run_id=champion["run_id"])["run"]
    metrics = {m["key"] for m in run["data"].get("metrics", [])}
    assert any("silhouette" in key for key in metrics), metrics

    pngs = [f for f in _artifact_files(api, champion["run_id"]) if f.endswith(".png")]
    assert pngs, "no PNG artifacts on the champion's run"
    image = api.raw("/get-artifact", path=pngs[0], run_uuid=champion["run_id"])
    assert image.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_port_in_use_is_one_clear_line(full_xs_lake):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "mlflow_ui.py"), "--port", str(port)],
            env={**os.environ, "LAKEHOUSE_DATA_DIR": full_xs_lake.data_dir},
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env_yaml", "message"),
    [
        (["--port", "70000"], "", "port 70000 is outside 1-65535"),
        (["--port", "http"], "", "'http' is not a port number"),
        # A configured SQLite store is served like the default one (it printed "open sqlite:...").
        ([], "mlflow:\n  tracking_uri: sqlite:///{tmp}/nowhere.db\n",
         "no MLflow store at {tmp}/nowhere.db yet"),
        ([], "mlflow:\n  tracking_uri: databricks\n", "neither a server nor a SQLite store"),
    ],
)
def test_bad_ui_settings_are_one_clear_line(tmp_path, args, env_yaml, message):
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    with (conf / "local.yaml").open("a", encoding="utf-8") as env_file:
        env_file.write("\n" + env_yaml.format(tmp=tmp_path))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "mlflow_ui.py"), *args],
        env={**os.environ, "LAKEHOUSE_DATA_DIR": str(tmp_path / "data"),
             "LAKEHOUSE_CONF_DIR": str(conf)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], result.stderr
