"""The one place a SparkSession is built: Delta-enabled, quiet, from config.

An active session (spark-submit's, a Databricks notebook's, the test fixture's) is reused as it
is, so the same library code runs everywhere. A new local session gets Delta's jars from the
project folder that `make jars` fills from Maven Central; clusters pass them with --jars or
--packages and set spark.jars_dir to "".
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from lakehouse.catalog import lake_table_properties
from lakehouse.config import REPO_ROOT, Config
from lakehouse.errors import ConfigError, DeltaJarsMissingError

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOG4J_CONF = REPO_ROOT / "conf" / "log4j2.properties"

# Spark redacts config values whose *key* matches this in the UI, event log and logs;
# our secrets are passed by environment variable, and any conf that names one is hidden too.
REDACTION_REGEX = "(?i)secret|password|token|access[.]?key|pseudonym|credential"

# What Spark 4 takes as a master (Mesos is gone) and as a memory size (the driver's becomes the
# JVM's -Xmx): SparkSubmit refused another master, and the JVM another size, with a Java stack
# trace and "Java gateway process exited", naming neither the key nor the value.
MASTER_FORMS = "local, local[N], local[*], local[N,M], spark://HOST:PORT, yarn or k8s://HOST:PORT"
_MASTER = re.compile(r"local(\[(\d+|\*)(\s*,\s*\d+)?\])?|local-cluster\[[\d\s,]+\]"
                     r"|spark://\S+|yarn|k8s://\S+")
# The driver's size becomes -Xmx as written (the JVM takes no "gb"); Spark parses the others
# itself and also takes "2gb".
_JVM_MEMORY_SIZE = re.compile(r"\d+[kmgt]?", re.IGNORECASE)
_SPARK_MEMORY_SIZE = re.compile(r"\d+([kmgtp]b?|b)?", re.IGNORECASE)


def delta_jars(config: Config) -> list[str]:
    """Delta's jar files for a new session; raises one clear line when they are missing."""
    jars_dir = config.get("spark.jars_dir")
    if not jars_dir:
        return []
    folder = Path(jars_dir)
    if not folder.is_absolute():
        folder = REPO_ROOT / folder
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not any("delta-spark" in Path(j).name for j in jars):
        raise DeltaJarsMissingError(
            f"Delta jars not found in {folder}: run `make jars` once (fetches "
            f"io.delta:delta-spark_4.2_2.13 from Maven Central), or set spark.jars_dir to \"\" "
            f"where the cluster provides Delta"
        )
    return jars


def stderr_is_terminal() -> bool:
    """Whether this process's standard error (which the JVM's progress bar inherits) is a tty."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except ValueError:  # a closed stream
        return False


def session_settings(config: Config, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Every Spark setting a new session gets; kept separate so spark-submit can reuse it."""
    progress = show_progress
    if progress is None:
        # The bar redraws its line with carriage returns: a terminal clears it before the next
        # summary line, but in a log file (cron, CI, spark-submit's driver log, `| tee`) its
        # frames ran into those lines. The config's true means "on a terminal".
        progress = bool(config.get("spark.show_progress")) and stderr_is_terminal()
    time_travel_days = int(config.get("audit.time_travel_days"))
    settings: dict[str, Any] = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(config.get("spark.shuffle_partitions")),
        # Delta replays a table's log with this many tasks (its default, 50, is far too many
        # for a laptop's small tables; see spark.delta_log_partitions in conf/base.yaml).
        "spark.databricks.delta.snapshotPartitions": str(config.get("spark.delta_log_partitions")),
        # VACUUM lists a table's files with this many tasks. Spark's default, 10,000, made one
        # VACUUM of an xs table take 24 s on 2 cores (3 s with 8), and an erasure vacuums
        # every table it touched.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            config.get("spark.shuffle_partitions")
        ),
        "spark.sql.session.timeZone": "UTC",
        # Shuffle files, spills and blocks kept on local disk (silver's kept rows) are
        # encrypted with a key that exists only in this application's memory: a run killed
        # part-way leaves them in spark.local.dir, holding raw bronze lines and pseudonymised
        # rows that no erasure would reach; encrypted, they cannot be read. Scale m, an
        # incremental day, two sessions each, warm: silver 43.1 / 42.2 s instead of
        # 41.9 / 41.7 s, gold 31.4 / 32.9 s instead of 32.0 / 33.3 s. spark.conf may turn it off.
        "spark.io.encryption.enabled": "true",
        "spark.ui.showConsoleProgress": str(bool(progress)).lower(),
        "spark.log.structuredLogging.enabled": "false",
        "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.redaction.options.regex": REDACTION_REGEX,
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # The lake's table properties (catalog.lake_table_properties) as this session's
        # defaults too, for a table created outside the suite's writes (a notebook's SQL); the
        # suite's own writes set them on each table they create, whatever the session.
        **{
            f"spark.databricks.delta.properties.defaults.{key.removeprefix('delta.')}": value
            for key, value in lake_table_properties(time_travel_days).items()
        },
        "spark.driver.extraJavaOptions": " ".join(filter(None, (
            f"-Dlog4j2.configurationFile=file:{LOG4J_CONF}",
            f"-Dlakehouse.logLevel={config.get('spark.log_level')}",
            "-Dlakehouse.taskLogLevel=OFF" if _quiet_task_failures(config) else "",
            str(config.get("spark.driver_java_options")).strip(),
        ))),
    }
    jars = delta_jars(config)
    if jars:
        settings["spark.jars"] = ",".join(jars)
    settings.update(config.get("spark.conf"))
    return settings


def check_spark_settings(config: Config, settings: Mapping[str, Any]) -> None:
    """Refuse, before Spark starts, a master or memory size it would refuse once started; the
    line names the file that set the value."""
    masters = [("spark.master", "spark.master", config.get("spark.master")),
               ("spark.conf spark.master", "spark.conf.spark.master", settings.get("spark.master"))]
    for key, dotted, master in masters:
        if master and not _MASTER.fullmatch(str(master)):
            raise ConfigError(f"{key} {master!r} in {config.origin(dotted)} is not a Spark "
                              f"master: use {MASTER_FORMS}")
    if launches_jvm():
        # spark-submit refuses a heap size there once the JVM is launched, with its whole usage
        # text (96 lines). Under spark-submit or a running gateway none of them is applied.
        spark_conf = config.get("spark.conf")
        places = [("spark.driver_java_options", config.get("spark.driver_java_options"),
                   config.origin("spark.driver_java_options"))]
        places += [(f"spark.conf {k}", spark_conf[k], config.origin(f"spark.conf.{k}"))
                   for k in DRIVER_JAVA_KEYS if k in spark_conf]
        for key, value, origin in places:
            heap = [o for o in java_option_words(str(value)) if o.startswith("-Xmx")]
            if heap:
                raise ConfigError(
                    f"{key} {' '.join(heap)!r} in {origin}: Spark takes the driver's heap size "
                    f"only from spark.driver.memory; remove it and set spark.conf "
                    f"spark.driver.memory (as 6g) instead"
                )
    for key, value in settings.items():
        size = _JVM_MEMORY_SIZE if key == "spark.driver.memory" else _SPARK_MEMORY_SIZE
        if key.endswith((".memory", ".memoryOverhead")) and not size.fullmatch(str(value)):
            raise ConfigError(f"spark.conf {key} {value!r} in {config.origin(f'spark.conf.{key}')}"
                              f" is not a memory size: use a whole number and a unit, as 512m "
                              f"or 6g")


# Where a driver's java options can be given in spark.conf.
DRIVER_JAVA_KEYS = ("spark.driver.extraJavaOptions", "spark.driver.defaultJavaOptions")


def java_option_words(options: str) -> list[str]:
    """Java options as Spark splits them (quotes taken off); as written when unbalanced."""
    try:
        return shlex.split(options)
    except ValueError:
        return options.split()


def _config_files(config: Config) -> str:
    return " or ".join(str(path) for path in config.files) or "the configuration"


def _quiet_task_failures(config: Config) -> bool:
    """Whether the JVM launched for ``config`` leaves a failed task to the command's own line
    (conf/log4j2.properties): a local master, at warnings or fewer."""
    level = str(config.get("spark.log_level")).upper()
    # local, local[N], local[*]: a failed task is not retried, the command says it. Not
    # local[N,M] or local-cluster[...], whose retried tasks are worth a line each.
    local = re.fullmatch(r"local(\[(\d+|\*)\])?", str(config.get("spark.master") or ""))
    return bool(local) and level in ("OFF", "FATAL", "ERROR", "WARN")


def get_spark(
    config: Config, *, app_name: str | None = None, show_progress: bool | None = None
) -> SparkSession:
    """The active session if there is one, else a new Delta-enabled session built from config."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = session_settings(config, show_progress=show_progress)
    check_spark_settings(config, settings)
    builder = SparkSession.builder.appName(app_name or config.get("spark.app_name"))
    master = config.get("spark.master")
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    launching = launches_jvm()
    try:
        with jvm_stdout_on_stderr():
            session = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        if not launching or exc.getCondition() != "JAVA_GATEWAY_EXITED":
            raise
        # The JVM has said why on stderr (above this line); which settings reached it is ours.
        raise ConfigError(
            f"Spark did not start (its Java process exited, saying why above): check "
            f"spark.master {master!r}, spark.driver_java_options "
            f"{config.get('spark.driver_java_options')!r} and spark.conf in "
            f"{_config_files(config)}"
        ) from None
    if launching:
        # Spark starts the JVM with -XX:+IgnoreUnrecognizedVMOptions: a misspelt option is
        # dropped without a word, so the options are checked against the JVM that runs.
        not_applied = java_options_not_in_effect(session, config.get("spark.driver_java_options"))
        if not_applied:
            session.stop()
            raise ConfigError(
                f"spark.driver_java_options: {', '.join(not_applied)} not in effect in the JVM "
                f"(an option it does not know is ignored): correct or remove it"
            )
    return session


def launches_jvm() -> bool:
    """True when a session built now starts a JVM of its own (no gateway in this process and
    none handed over by spark-submit)."""
    from pyspark import SparkContext

    return SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ


def java_options_not_in_effect(spark: SparkSession, options: str) -> list[str]:
    """The ``-XX:`` options of ``options`` that the session's JVM does not have: unknown to it,
    or a ``+``/``-`` switch with the other value. Other options (``-D``, ``-X``) are not
    ignored by the JVM, which refuses to start on a wrong one."""
    jvm = spark.sparkContext._jvm
    diagnostics = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    not_applied = []
    for option in options.split():
        if not option.startswith("-XX:"):
            continue
        setting = option.removeprefix("-XX:")
        name = setting.lstrip("+-").split("=", 1)[0]
        try:
            value = diagnostics.getVMOption(name).getValue()
        except Exception:  # noqa: BLE001 - IllegalArgumentException: no such option
            not_applied.append(option)
            continue
        if setting[:1] in ("+", "-") and value != ("true" if setting[0] == "+" else "false"):
            not_applied.append(option)
    return not_applied


@contextlib.contextmanager
def jvm_stdout_on_stderr() -> Iterator[None]:
    """While a local JVM is launched: its standard output is this process's standard error.

    The JVM inherits the file descriptors it starts with, and Delta prints some of its own
    messages to the JVM's standard output (VACUUM's "Deleted N files and directories in a total
    of M directories.", one unlabelled line per table), which landed in the middle of a
    command's report (``lakehouse erase``, ``run retention``). A command's standard output
    stays its own lines; the engine's chatter joins its logs on standard error. Nothing changes
    when no JVM is launched here (spark-submit's driver, a running gateway) or when standard
    output or error is not a file descriptor (some notebook front ends).
    """
    launching = launches_jvm()
    try:
        os.fstat(2)
        saved = os.dup(1) if launching else None
    except OSError:
        saved = None
    if saved is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def query_error_logs_off() -> Iterator[None]:
    """While an analysis error is expected (and turned into one line by the caller): PySpark
    logs every error it raises with a query context as an ERROR record holding the Java stack
    trace, which printed above that line."""
    from pyspark.logger import PySparkLogger

    loggers = [PySparkLogger.getLogger(name)
               for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")]
    saved = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, saved, strict=True):
            logger.disabled = disabled
