"""The session a command builds: what its JVM prints does not mix into the command's output."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

# A child process: the JVM must be launched by the code under test (this session's is running).
# Delta prints one line per VACUUM on the JVM's standard output ("Deleted N files and
# directories in a total of M directories."), the line `lakehouse erase` used to show between
# its own.
CHILD = """
import sys
from delta.tables import DeltaTable
from lakehouse.config import load_config
from lakehouse.session import get_spark

root = sys.argv[1]
spark = get_spark(load_config("local", overrides={"data_dir": root, "spark.master": "local[1]"}))
spark.range(3).write.format("delta").save(root + "/t")
spark.range(3).write.format("delta").mode("overwrite").save(root + "/t")
spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
DeltaTable.forPath(spark, root + "/t").vacuum(0.0)
print("the command's own line")
"""


def test_the_jvms_console_lines_go_to_stderr_and_the_commands_stdout_stays_its_own(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["the command's own line"]
    # The line is still there for whoever reads the logs (and the VACUUM did run).
    assert re.search(r"^Deleted \d+ files and directories", result.stderr, re.M), result.stderr[-2000:]


FAILING_TASK = """
import sys
from pyspark.sql import functions as F
from lakehouse.config import load_config
from lakehouse.session import get_spark

spark = get_spark(load_config("local", overrides={"data_dir": sys.argv[1], "spark.master": "local[2]"}))
try:
    spark.range(4).repartition(2).select(F.raise_error(F.lit("a task failed here"))).collect()
except Exception as exc:
    print("raised:", "a task failed here" in str(exc))
"""


def test_a_failed_task_reaches_the_caller_without_a_log_flood(tmp_path):
    """The executor, the scheduler (for the task and each task it cancels) and a writer each
    logged a failed task with its trace, ~40 lines apiece, before the command's one line said
    the same: in a local session at warnings, the error reaches the caller and only there."""
    result = subprocess.run(
        [sys.executable, "-c", FAILING_TASK, str(tmp_path)], capture_output=True, text=True,
        timeout=300,
    )
    assert result.stdout.splitlines() == ["raised: True"], result.stderr[-2000:]
    assert "a task failed here" not in result.stderr, result.stderr[-2000:]


def test_the_configured_driver_java_options_reach_the_jvm_the_suite_starts(spark):
    """This session's JVM was started by get_spark from the local config (conftest): the
    options of spark.driver_java_options are on its command line, next to the log settings, and
    the collector it runs is the parallel one that local.yaml asks for."""
    from lakehouse.config import load_config

    jvm = spark.sparkContext._jvm
    management = jvm.java.lang.management.ManagementFactory
    arguments = list(management.getRuntimeMXBean().getInputArguments())
    configured = load_config("local").get("spark.driver_java_options").split()
    assert configured and set(configured) <= set(arguments), arguments
    assert any(a.startswith("-Dlog4j2.configurationFile=") for a in arguments), arguments
    collectors = {bean.getName() for bean in management.getGarbageCollectorMXBeans()}
    # HotSpot's names for the parallel collector's young and old generation collectors.
    assert collectors == {"PS Scavenge", "PS MarkSweep"}, collectors


def test_java_options_not_in_effect_names_unknown_options_and_switches_the_jvm_has_otherwise(spark):
    """Checked against this session's JVM (parallel collector, G1 off): an option the JVM does
    not know and a switch set the other way are named; options in effect, valued ones and
    non -XX options are not."""
    from lakehouse.session import java_options_not_in_effect

    options = ("-XX:+UseParallelGC -XX:+UseBogusGC -XX:-UseParallelGC -XX:+UseG1GC "
               "-XX:-UseG1GC -XX:MaxGCPauseMillis=150 -Dlakehouse.some=thing")
    assert java_options_not_in_effect(spark, options) == [
        "-XX:+UseBogusGC", "-XX:-UseParallelGC", "-XX:+UseG1GC"]


def test_a_misspelt_driver_java_option_stops_the_command_with_one_line(tmp_path):
    """Spark starts the JVM with -XX:+IgnoreUnrecognizedVMOptions: without the check, a typo
    in spark.driver_java_options ran the whole command with the option silently dropped."""
    import os
    import shutil

    from lakehouse.config import REPO_ROOT

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    local = conf / "local.yaml"
    text = local.read_text()
    assert 'driver_java_options: "-XX:+UseParallelGC"' in text
    local.write_text(text.replace('"-XX:+UseParallelGC"', '"-XX:+UseParalelGC"'))
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "run", "bronze", "--conf-dir", str(conf)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LAKEHOUSE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["lakehouse: error: spark.driver_java_options: -XX:+UseParalelGC not in "
                      "effect in the JVM (an option it does not know is ignored): correct or "
                      "remove it"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "lake" / "bronze").exists()


def test_what_spark_keeps_on_local_disk_is_encrypted(spark):
    """Shuffle files and blocks kept on disk are what a run killed part-way leaves behind in
    spark.local.dir (raw lines, pseudonymised rows): with I/O encryption, a byte search of
    them finds none of the rows' text. Without it, both the kept blocks and the shuffle files
    hold the text as it is (checked with spark.io.encryption.enabled=false)."""
    import uuid
    from pathlib import Path

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    assert spark.sparkContext.getConf().get("spark.io.encryption.enabled") == "true"
    marker = f"lakehouse-disk-marker-{uuid.uuid4().hex}"
    kept = spark.range(2000).select(
        F.concat(F.lit(marker), F.col("id").cast("string")).alias("line")
    ).persist(StorageLevel.DISK_ONLY)
    try:
        # A shuffle of the kept rows: their blocks and the shuffle's files are both on disk.
        counts = kept.groupBy(F.substring("line", 1, len(marker)).alias("prefix")).count().collect()
        assert [tuple(r) for r in counts] == [(marker, 2000)]
        env = spark.sparkContext._jvm.org.apache.spark.SparkEnv.get()
        folders = [Path(str(d.getAbsolutePath()))
                   for d in env.blockManager().diskBlockManager().localDirs()]
        files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
        kinds = {p.name.split("_")[0] for p in files}
        assert {"rdd", "shuffle"} <= kinds, sorted(kinds)
        readable = [p.name for p in files if marker.encode() in _bytes_of(p)]
        assert not readable, f"{readable} hold the rows' text unencrypted"
    finally:
        kept.unpersist()


def _bytes_of(path) -> bytes:
    """A file's bytes; none when Spark removed it meanwhile (its cleaner runs on its own)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_only_a_plain_local_master_leaves_a_failed_task_to_the_command():
    """local, local[N], local[*] run tasks once in this JVM: the command says a failure. With
    retries (local[N,M], local-cluster) or on a cluster, or asked for INFO, each failed task
    keeps its lines."""
    from lakehouse.config import load_config
    from lakehouse.session import session_settings

    def quiet(**overrides) -> bool:
        config = load_config("local").with_overrides(overrides)
        return "-Dlakehouse.taskLogLevel=OFF" in session_settings(config)[
            "spark.driver.extraJavaOptions"]

    assert [quiet(**{"spark.master": m}) for m in ("local", "local[2]", "local[*]")] == [True] * 3
    assert not any(quiet(**{"spark.master": m}) for m in (
        "local[2,3]", "local-cluster[2,1,1024]", "spark://h:7077", ""))
    assert not quiet(**{"spark.master": "local[2]", "spark.log_level": "INFO"})


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[2,3]", "local[*, 4]",
                                    "local-cluster[2,1,1024]", "spark://h1:7077,h2:7077",
                                    "yarn", "k8s://https://k8s.example:443", ""])
def test_the_masters_spark_takes_are_accepted(master):
    from lakehouse.config import load_config
    from lakehouse.session import check_spark_settings, session_settings

    config = load_config("local").with_overrides({"spark.master": master})
    check_spark_settings(config, session_settings(config))


def test_memory_sizes_spark_parses_itself_may_say_gb():
    """Only the driver's size is handed to the JVM as -Xmx; Spark reads the others ("2gb")."""
    from lakehouse.config import load_config
    from lakehouse.session import check_spark_settings, session_settings

    config = load_config("local").with_overrides({"spark.conf.spark.executor.memory": "2gb"})
    check_spark_settings(config, session_settings(config))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"spark.master": "bogus"}, "spark.master 'bogus' in "),
        ({"spark.master": "local[x]"}, "spark.master 'local[x]' in "),
        ({"spark.master": "mesos://h:5050"}, "spark.master 'mesos://h:5050' in "),
        ({"spark.conf.spark.master": "bogus"}, "spark.conf spark.master 'bogus' in "),
        ({"spark.conf.spark.driver.memory": "lots"}, "spark.conf spark.driver.memory 'lots' in "),
        ({"spark.conf.spark.driver.memory": "6gb"}, "spark.conf spark.driver.memory '6gb' in "),
        ({"spark.conf.spark.executor.memoryOverhead": "1.5g"},
         "spark.conf spark.executor.memoryOverhead '1.5g' in "),
    ],
)
def test_a_master_or_memory_size_spark_would_refuse_is_named_before_it_starts(override, message):
    from lakehouse.config import load_config
    from lakehouse.errors import ConfigError
    from lakehouse.session import check_spark_settings, session_settings

    config = load_config("local").with_overrides(override)
    with pytest.raises(ConfigError, match=re.escape(message) + r"an override is not a "):
        check_spark_settings(config, session_settings(config))


@pytest.mark.parametrize(("override", "key", "option"), [
    ({"spark.driver_java_options": "-XX:+UseParallelGC -Xmx6gb"},
     "spark.driver_java_options", "-Xmx6gb"),
    ({"spark.conf.spark.driver.extraJavaOptions": '-Dx=1 "-Xmx6g"'},
     "spark.conf spark.driver.extraJavaOptions", "-Xmx6g"),
])
def test_a_heap_size_in_the_driver_java_options_is_named_before_spark_starts(
        monkeypatch, override, key, option):
    """spark-submit refuses -Xmx in the driver's java options once launched, printing its whole
    usage text (96 lines) above the command's line. (This process's JVM runs already: the
    check is for a command that launches one.)"""
    from lakehouse import session
    from lakehouse.config import load_config
    from lakehouse.errors import ConfigError

    monkeypatch.setattr(session, "launches_jvm", lambda: True)
    config = load_config("local").with_overrides(override)
    with pytest.raises(ConfigError) as raised:
        session.check_spark_settings(config, session.session_settings(config))
    assert str(raised.value) == (
        f"{key} {option!r} in an override: Spark takes the driver's heap size only from "
        f"spark.driver.memory; remove it and set spark.conf spark.driver.memory (as 6g) instead")
    shipped = load_config("local")
    session.check_spark_settings(shipped, session.session_settings(shipped))


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("local.yaml", 'master: "local[*]"', "master: bogus", "spark.master 'bogus' in {local}"),
    ("base.yaml", "conf: {}", "conf: {spark.executor.memory: lots}",
     "spark.conf spark.executor.memory 'lots' in {base}"),
    ("local.yaml", '"6g"', '"6gb"', "spark.conf spark.driver.memory '6gb' in {local}"),
])
def test_a_refused_spark_setting_names_the_one_file_that_set_it(tmp_path, file, old, new, message):
    """The line named base.yaml and the overlay both, for a value only one of them set."""
    import shutil

    from lakehouse.config import REPO_ROOT, load_config
    from lakehouse.errors import ConfigError
    from lakehouse.session import check_spark_settings, session_settings

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    text = (conf / file).read_text()
    assert text.count(old) == 1
    (conf / file).write_text(text.replace(old, new))
    config = load_config("local", conf)
    expected = message.format(local=conf / "local.yaml", base=conf / "base.yaml")
    with pytest.raises(ConfigError) as caught:
        check_spark_settings(config, session_settings(config))
    assert str(caught.value).startswith(f"{expected} is not a "), caught.value


def _run_bronze_with(tmp_path, old: str, new: str) -> subprocess.CompletedProcess:
    """`lakehouse run bronze` in a child process, with ``old`` replaced by ``new`` in a copy of
    conf/local.yaml."""
    import os
    import shutil

    from lakehouse.config import REPO_ROOT

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    local = conf / "local.yaml"
    text = local.read_text()
    assert old in text
    local.write_text(text.replace(old, new))
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", "run", "bronze", "--conf-dir", str(conf)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LAKEHOUSE_DATA_DIR": str(tmp_path / "data")},
    )


def test_a_master_spark_would_refuse_is_one_line_without_a_java_trace(tmp_path):
    """SparkSubmit printed its stack trace and the command `Spark failed: [JAVA_GATEWAY_EXITED]
    Java gateway process exited`, naming neither the key nor the value."""
    result = _run_bronze_with(tmp_path, 'master: "local[*]"', "master: bogus")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"lakehouse: error: spark.master 'bogus' in {tmp_path}/conf/local.yaml is not a Spark "
        f"master: use local, local[N], local[*], local[N,M], "
        f"spark://HOST:PORT, yarn or k8s://HOST:PORT"], result.stderr[-2000:]
    assert not (tmp_path / "data" / "lake" / "bronze").exists()


def test_a_jvm_that_does_not_start_names_the_settings_it_was_given(tmp_path):
    """A value the checks do not know (a stack size the JVM refuses): the JVM says why, then
    one line names what the suite passed it, instead of the gateway's exception."""
    result = _run_bronze_with(tmp_path, '"-XX:+UseParallelGC"', '"-XX:+UseParallelGC -Xss1.5m"')
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Invalid thread stack size" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"lakehouse: error: Spark did not start (its Java process exited, saying why above): "
        f"check spark.master 'local[*]', spark.driver_java_options '-XX:+UseParallelGC "
        f"-Xss1.5m' and spark.conf in {tmp_path}/conf/base.yaml or {tmp_path}/conf/local.yaml"
    ), result.stderr[-2000:]
    assert not (tmp_path / "data" / "lake" / "bronze").exists()
