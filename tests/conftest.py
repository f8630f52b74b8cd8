"""One local Spark session for the whole test run, tuned for small data (see STYLE.md)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lakehouse.config import REPO_ROOT, Config, load_config
from lakehouse.session import get_spark

# Every test writes below its own tmp_path; nothing may touch the repository's data/.
os.environ.pop("LAKEHOUSE_DATA_DIR", None)

# One pseudonymisation key for the whole run, and a planted canary: every lake of the run (in
# this process and in the child processes, which inherit the environment) is pseudonymised
# with it, and tests/test_privacy_canary.py proves it reaches no log and no file of a full run.
# Tests that recompute a customer key independently use crm_customer_key. Fixed, not random per run:
# customer keys decide the order of rows, and K-means on a few hundred customers follows the
# data's order, so a random key made the segmentation tests pass or fail by chance.
CANARY_KEY = "canary-3f9c2e7d51b84a06-test-session-key"
PSEUDONYM_KEY = CANARY_KEY.encode()
os.environ["LAKEHOUSE_PSEUDONYM_KEY"] = CANARY_KEY


def load_script(name: str):
    """scripts/<name>.py as a module (scripts are not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: a dataclass of the script looks its own module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def crm_customer_key(customer_id: str) -> str:
    """docs/tables.md: customer_key = HMAC-SHA256(key, "crm:" + customer_id), with the run's key
    (computed here with hmac, independently of lakehouse.privacy.pseudonym)."""
    return hmac.new(PSEUDONYM_KEY, f"crm:{customer_id}".encode(), hashlib.sha256).hexdigest()


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
            "spark.delta_log_partitions": 2,
            "spark.conf.spark.sql.streaming.minBatchesToRetain": "2",
            # Adaptive execution re-plans each query after every stage: on xs data that costs
            # more than it saves (an xs lake's bronze, silver and gold took ~20% less time
            # without it, warm). Results do not depend on it; shipped configs keep it on.
            "spark.conf.spark.sql.adaptive.enabled": "false",
            # Expressions evaluated as interpreted code instead of generated and compiled Java
            # (Spark's own suites run both modes): on xs data, compiling each new projection
            # and predicate costs more than it saves (tests/test_silver_identity.py: 95 s
            # instead of 126-133 s). Whole-stage code generation stays on. The cluster test's
            # run keeps the shipped settings and must give the same tables as this session.
            "spark.conf.spark.sql.codegen.factoryMode": "NO_CODEGEN",
        }
    )
    session = get_spark(config, app_name="lakehouse-tests")
    yield session
    session.stop()


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    """Local config whose data root is this test's tmp_path."""
    return load_config("local", overrides={"data_dir": str(tmp_path / "data")})


XS_AS_OF = "2026-01-03"  # the last of the three days xs generates
XS_SEED = 3


@pytest.fixture(scope="session")
def xs_lake(spark, tmp_path_factory) -> Config:
    """An xs lake built once per test run through bronze, silver and gold (seed 3).

    Shared and read-only: a test that writes to it must work on ``copy_lake(xs_lake, dest)``.
    """
    from datetime import date

    from lakehouse.generate import generate
    from lakehouse.pipeline import RunContext, run_stages

    root = tmp_path_factory.mktemp("xs_lake") / "data"
    generate(root / "raw", "xs", seed=XS_SEED, progress=False)
    config = load_config("local", overrides={"data_dir": str(root)})
    ctx = RunContext(run_id="xs-lake", as_of=date.fromisoformat(XS_AS_OF))
    for stage in ("bronze", "silver", "gold"):
        run_stages(spark, config, stage, ctx, echo=lambda line: None)
    return config


def indexed_in_last_commit(table_path: str) -> dict:
    """Column -> minimum of the files the table's latest commit added, as its ``add`` actions
    in the _delta_log hold them (the columns Delta kept statistics of)."""
    import json

    last = sorted((Path(table_path) / "_delta_log").glob("*.json"))[-1]
    adds = [json.loads(a["add"]["stats"]) for a in map(json.loads, last.read_text().splitlines())
            if "add" in a]
    assert adds, f"{last} added a file"
    return {k: v for add in adds for k, v in add.get("minValues", {}).items()}


def lake_tables(config: Config) -> list[str]:
    """Every Delta table of a lake, as layer.table, found on disk (not from the catalog)."""
    root = Path(config.data_dir) / "lake"
    return sorted(
        f"{layer.name}.{t.name}" for layer in root.iterdir() if layer.is_dir()
        for t in layer.iterdir() if (t / "_delta_log").is_dir()
    )


def copy_lake(source: Config, dest: Path) -> Config:
    """A private copy of a lake (raw files, tables, checkpoints) with its own config.

    Delta logs hold relative file paths, but the bronze stream checkpoints record the absolute
    paths of the raw files they ingested: those are rewritten to the copy's root, so the copy's
    streams carry on where the original's stopped.
    """
    import shutil

    shutil.copytree(source.data_dir, dest)
    old_root, new_root = str(Path(source.data_dir).resolve()), str(Path(dest).resolve())
    for path in (Path(dest) / "checkpoints").rglob("*"):
        if path.is_file() and not path.name.endswith(".crc"):
            text = path.read_bytes()
            if old_root.encode() in text:
                path.write_bytes(text.replace(old_root.encode(), new_root.encode()))
                # Hadoop's local checksum of the old content would fail the read; without
                # the .crc file the content is read unchecked.
                (path.parent / f".{path.name}.crc").unlink(missing_ok=True)
    return load_config("local", overrides={"data_dir": str(dest)})


@pytest.fixture(scope="session")
def full_xs_lake(spark, xs_lake, tmp_path_factory) -> Config:
    """A copy of the xs lake taken through every stage after gold (segment, attribute, audit,
    whatever is registered). Read-only, like xs_lake.

    Segmentation searches fewer k (childconf.LIGHT_SEGMENT), as the cluster test's submitted
    run does; two starts, so that reproducing its segment run refits a chosen seed."""
    from datetime import date

    from childconf import LIGHT_SEGMENT

    from lakehouse.pipeline import STAGE_ORDER, RunContext, registered_stages, run_stages

    config = copy_lake(xs_lake, tmp_path_factory.mktemp("full_xs_lake") / "data")
    config = config.with_overrides({**LIGHT_SEGMENT, "segment.kmeans.starts": 2})
    ctx = RunContext(run_id="full-xs-lake", as_of=date.fromisoformat(XS_AS_OF))
    stages = registered_stages()
    for stage in STAGE_ORDER[STAGE_ORDER.index("gold") + 1:]:
        if stage in stages:
            run_stages(spark, config, stage, ctx, echo=lambda line: None)
    return config


@pytest.fixture(scope="session")
def erased_lake(spark, full_xs_lake, tmp_path_factory):
    """A copy of the full xs lake, published once (publish.*, the privacy ledger), then one
    person erased: interrupted after the raw files, as a crash would, and completed by a
    re-run. Returns (config, person, needles, files holding each needle before, result).

    Shared by tests/test_access.py (every table the access matrix names exists, the erasure
    log included) and tests/test_erasure.py (the erasure of a lake that holds every table),
    so the suite builds and erases one lake instead of two. test_erasure's last tests erase
    again and re-run bronze and silver on it; nothing else writes to it.
    """
    import shutil
    from datetime import date

    from erasurelib import files_containing, pick_person
    from pyspark.sql import functions as F

    from lakehouse.catalog import Catalog
    from lakehouse.privacy.erasure import _SimulatedCrash, erase_subject
    from lakehouse.privacy.publish import publish

    config = copy_lake(full_xs_lake, tmp_path_factory.mktemp("erased_lake") / "lake")
    # Bronze and the silver tables behind silver's cached frames get deletion vectors, as on a
    # lake that an older version of the suite built in a cluster's session (whose defaults turn
    # them on): the erasure purges these tables and rewrites the others, so both paths are
    # erased and byte-searched here; and silver after a second erasure on such a lake once ran
    # out of memory (see Catalog.read_pinned; test_erasure's second-erasure test runs it).
    lake = Path(config.data_dir) / "lake"
    for table in [*sorted(lake.glob("bronze/*")),
                  *(lake / "silver" / name for name in ("identity_map", "customers", "orders"))]:
        if (table / "_delta_log").is_dir():
            location = str(table).replace("`", "``")
            spark.sql(f"ALTER TABLE delta.`{location}` "
                      "SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    publish(spark, config, as_of=date.fromisoformat(XS_AS_OF))
    person = pick_person(spark, config)
    # gold.customer_360 rewritten without the person, as a gold run for a date before their
    # signup leaves them out: their row is then only in the table's older version, which the
    # erasure must find and vacuum all the same (test_erasure). The table ends as the erasure
    # leaves it anyway.
    c360 = Catalog(config).read(spark, "gold.customer_360")
    key = crm_customer_key(person["customer_id"])
    # A run rebuilt by `lakehouse reproduce` lies outside the lake's layers: a copy of the table
    # as it holds the person now, where reproduce leaves it (test_erasure).
    shutil.copytree(Catalog(config).path("gold.customer_360"),
                    Path(config.data_dir) / config.get("audit.scratch_dir") / "some-run" / "lake"
                    / "gold" / "customer_360")
    person["older_only_rows"] = c360.where(F.col("customer_key") == key).count()
    (c360.where(F.col("customer_key") != key).write.format("delta").mode("overwrite")
     .save(Catalog(config).path("gold.customer_360")))
    root = Path(config.data_dir)
    needles = person["needles"]
    before = {n: files_containing(root, n) for n in needles}
    email = person["email"]
    with pytest.raises(_SimulatedCrash):
        erase_subject(spark, config, email=email.upper(), stop_after="raw")
    pii = Catalog(config).read(spark, "silver.customer_pii")
    person["left_after_crash"] = pii.where(F.col("email") == email).count()
    result = erase_subject(spark, config, email=email)
    return config, person, needles, before, result


@dataclass(frozen=True)
class ClusterRun:
    """What a `run all` submitted to a standalone cluster left: its root folder (data, Spark
    event log, the cluster's daemon and executor logs), its data config, and its output."""

    root: Path
    config: Config
    submitted: subprocess.CompletedProcess


class _ClusterRunInBackground:
    """The submission behind ``cluster_run``, started in a thread when the session starts.

    Why in the background: the run is three minutes of child JVMs (driver, executor, cluster
    daemons) that wait for nothing in this process, while the in-process tests leave about a
    quarter of the two cores idle (Python, py4j round trips, file I/O). Started first, it runs
    alongside them; the tests that need it wait for it. It generates its own xs raw files
    (the generator is deterministic: the same seed gives the same files as xs_lake's), so it
    needs no fixture of this process.
    """

    def __init__(self, root: Path):
        import threading

        self.root = root
        self.data = root / "data"
        self.proc: subprocess.Popen | None = None
        self.result: subprocess.CompletedProcess | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name="cluster-run", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from childconf import light_conf_env

        from lakehouse.generate import generate
        from lakehouse.standalone import standalone_cluster

        try:
            generate(self.data / "raw", "xs", seed=XS_SEED, progress=False)
            (self.root / "eventlog").mkdir()
            # A lighter K-means search (segments are not compared); attribution as locally.
            env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(self.data),
                   "SPARK_SUBMIT_OPTS_EXTRA": (
                       "--executor-memory 1g --driver-memory 1g "
                       "--conf spark.eventLog.enabled=true "
                       # Uncompressed (Spark 4 compresses it by default): a byte search must
                       # see text.
                       "--conf spark.eventLog.compress=false "
                       f"--conf spark.eventLog.dir=file:{self.root / 'eventlog'}"),
                   **light_conf_env("standalone", attribution=False)}
            with standalone_cluster(self.root / "standalone") as master:
                if self.cancelled:
                    return
                command = [str(REPO_ROOT / "scripts" / "submit.sh"), "--master", master,
                           "--env", "standalone", "all", "--as-of", XS_AS_OF]
                self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True,
                                             start_new_session=True)
                out, err = self.proc.communicate(timeout=1200)
                self.result = subprocess.CompletedProcess(command, self.proc.returncode, out,
                                                          err)
        except BaseException as error:  # reported to the test that waits for the run
            self.error = error

    def wait(self) -> subprocess.CompletedProcess:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None, "the cluster run was cancelled"
        return self.result

    def cancel(self) -> None:
        """End the run now (the session is over); the cluster is shut down by its thread."""
        import signal

        self.cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.thread.join(timeout=120)


@pytest.fixture(scope="session", autouse=True)
def _cluster_run_started(request, tmp_path_factory):
    """Starts the ``cluster_run`` submission first thing, when a collected test needs it."""
    if not any("cluster_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    background = _ClusterRunInBackground(tmp_path_factory.mktemp("cluster_run"))
    yield background
    background.cancel()


@pytest.fixture(scope="session")
def cluster_run(_cluster_run_started) -> ClusterRun:
    """`run all` on xs raw files (seed XS_SEED, as xs_lake), submitted with scripts/submit.sh
    to a throwaway Spark standalone cluster (one master and one worker on 127.0.0.1), the Spark
    event log on. Started in the background when the session starts (_ClusterRunInBackground).

    One run for two checks: the cluster test compares its tables with the in-process lake, and
    the privacy canary searches all it wrote and printed for the run's key (CANARY_KEY).
    The cluster is shut down as soon as the run ends, whatever happened.
    """
    background = _cluster_run_started
    submitted = background.wait()
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    return ClusterRun(background.root,
                      load_config("standalone", overrides={"data_dir": str(background.data)}),
                      submitted)
