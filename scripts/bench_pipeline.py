"""Benchmark: bronze -> silver -> gold against a plain Spark copy, and an incremental day
against a full rebuild (issue 3, "Tests and figures").

1. Generates the raw files once: ``days + 1`` days at ``--scale`` (seeded). The generator is
   prefix-stable (days 1..N of a ``days=N+1`` run are byte-identical to a ``days=N`` run), so
   the first ``days`` days are "the data loaded so far" and the last day is "the next day".
2. Full pipeline vs plain copy, on the same ``days`` days of raw files:
   (a) bronze, silver and gold through the library (``run_stages``, as ``lakehouse run``);
   (b) each source folder read with ``spark.read.text`` and written to Delta, no logic.
   Goal: (a) / (b) <= 3.
3. Incremental vs full rebuild: the next day's files are added to the root of (a) and the
   pipeline runs again (each stage picks up one day); then all ``days + 1`` days are built into
   a fresh root. Goal: incremental / full <= 10%. Row counts of every silver and gold table
   of the two roots are compared as a consistency check.
4. The incremental day's floor: the Delta commits it made (read from the logs), each costed as
   a commit of the same kind that carries almost no data (a MERGE of one row into 100 rows,
   an overwrite of 100 rows, an append of one row; medians of 7, same session), as a share of
   the full rebuild. Whatever the work inside them, the day cannot cost less than its commits.
5. The incremental day with no logic at all (time_plain_day): the day's raw files appended as
   lines to the plain copy's tables, and one plain MERGE per silver table of exactly the rows
   the day inserted or changed there (found by comparing the table's versions before and after
   the day, outside the timing), into a copy of the table as it was before the day. Sources and
   tables run side by side as the stages run them. With gold as the day rebuilt it, a share of
   the full rebuild that no bronze and silver, however lean, could go below.

Every timed step runs in ONE shared Spark session, built by ``lakehouse.session.get_spark``
from the config (the same settings the CLI uses), after a small warm-up: the timings measure
the work, not JVM start-up, and both sides of each ratio see the same JVM. Raw files reach each
data root as hard links (a copy where linking fails), outside the timings.

Prints a Markdown table and writes JSON (with machine info and load averages) to
data/bench/pipeline.json; the JSON is rewritten after every step, so a long run that is
stopped still leaves its figures. Not part of make test.

    .venv/bin/python scripts/bench_pipeline.py --scale xs --output /tmp/xs.json  # smoke
    .venv/bin/python scripts/bench_pipeline.py --driver-memory 6g              # scale m

On 2 busy cores the xs smoke check takes about 5-10 minutes (Spark's fixed cost per job,
three pipeline runs) and scale m about 12-15 minutes alone on the machine.

At scale m the silver stage needs more than Spark's default 1g driver heap (it caches each
source's new rows): the session takes the config's (conf/local.yaml: 6g, enough for scale m;
with 4g one run of this benchmark failed with an OutOfMemoryError); --driver-memory overrides it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import pkgutil
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402

from lakehouse.config import DATA_DIR_ENV, Config, load_config  # noqa: E402
from lakehouse.generate import SCALES, generate  # noqa: E402
from lakehouse.pipeline import RunContext, new_run_id, run_stages  # noqa: E402
from lakehouse.session import get_spark  # noqa: E402
from lakehouse.sources import SourceSpec, load_sources  # noqa: E402

PIPELINE = ("bronze", "silver", "gold")
FLOOR_KINDS = ("merge", "overwrite", "append")  # commit_kind
FLOOR_REPEATS = 7
GOALS = {"pipeline_vs_copy": 3.0, "incremental_vs_full": 0.10}
DEFAULT_WORK_DIR = Path("/tmp/bench_pipeline")
DEFAULT_OUTPUT = REPO / "data" / "bench" / "pipeline.json"
RAW_FILE = re.compile(r"^[a-z0-9_]+_(\d{4}-\d{2}-\d{2})\.(csv|jsonl)$")
LOG_FILE = re.compile(r"^(\d{20})\.json$")


@dataclass
class Step:
    """One timed step: what ran, on which data root, how long, how many rows it wrote."""

    group: str
    name: str
    seconds: float
    rows: int
    load_after: float
    detail: list[str]


# -- raw files ---------------------------------------------------------------------------


def ensure_raw(raw_all: Path, scale: str, days: int, seed: int, start_date: str) -> float:
    """Generate ``days`` days into raw_all unless an identical generation is already there.

    Returns the seconds spent generating (0.0 when reused)."""
    manifest = raw_all / "_manifest.json"
    if manifest.is_file():
        known = json.loads(manifest.read_text(encoding="utf-8"))
        wanted = {"scale": scale, "days": days, "seed": seed, "start_date": start_date}
        if all(known.get(k) == v for k, v in wanted.items()):
            return 0.0
    started = time.perf_counter()
    generate(raw_all, scale, seed=seed, days=days, start_date=start_date, progress=False)
    return time.perf_counter() - started


def raw_files_by_day(raw_all: Path, sources: dict[str, SourceSpec]) -> dict[date, list[Path]]:
    """The generated files of the declared sources, grouped by the day in their name."""
    by_day: dict[date, list[Path]] = {}
    for source in sources.values():
        for path in sorted((raw_all / source.raw_dir).glob("*")):
            match = RAW_FILE.match(path.name)
            if match:
                by_day.setdefault(date.fromisoformat(match.group(1)), []).append(path)
    return by_day


def link_files(files: list[Path], raw_all: Path, root: Path) -> int:
    """Hard-link (or copy) raw files into ``root/raw`` keeping their folders; bytes placed."""
    placed = 0
    for src in files:
        dst = root / "raw" / src.relative_to(raw_all)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        placed += src.stat().st_size
    return placed


def prepare_roots(
    work: Path, config: Config, sources: dict[str, SourceSpec], args: argparse.Namespace
) -> tuple[dict[str, Path], list[Path], dict[str, Any]]:
    """Raw files generated once, linked into fresh roots: ``copy`` and ``incremental`` get
    the first ``days`` days, ``full`` all of them. Returns the roots, the next day's files
    (linked into ``incremental`` later) and what was placed."""
    raw_all = work / "raw_all"
    start_date = config.get("generate.start_date")
    gen_seconds = ensure_raw(raw_all, args.scale, args.days + 1, args.seed, start_date)
    by_day = raw_files_by_day(raw_all, sources)
    new_day = date.fromisoformat(start_date) + timedelta(days=args.days)
    loaded = [f for d, files in sorted(by_day.items()) if d < new_day for f in files]
    incoming = by_day.get(new_day, [])
    if not loaded or not incoming:
        raise SystemExit(f"bench_pipeline: no raw files for days before/at {new_day} in {raw_all}")
    roots = {name: fresh_root(work / name) for name in ("copy", "incremental", "full")}
    link_files(loaded, raw_all, roots["copy"])
    raw_bytes = link_files(loaded, raw_all, roots["incremental"])
    link_files(loaded + incoming, raw_all, roots["full"])
    info = {
        "incremental_day": new_day.isoformat(),
        "files_loaded": len(loaded),
        "bytes_loaded": raw_bytes,
        "generate_seconds": round(gen_seconds, 2),
    }
    return roots, incoming, info


def fresh_root(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# -- Delta commit metrics (read from the log files: no Spark job, outside the timings) ----


def delta_tables(layer_dir: Path) -> list[Path]:
    if not layer_dir.is_dir():
        return []
    return [p for p in sorted(layer_dir.iterdir()) if (p / "_delta_log").is_dir()]


def log_versions(table: Path) -> list[int]:
    return sorted(
        int(m.group(1))
        for m in (LOG_FILE.match(p.name) for p in (table / "_delta_log").iterdir())
        if m
    )


def layer_versions(layer_dir: Path) -> dict[Path, int]:
    """Latest committed version of every Delta table under layer_dir."""
    return {t: max(log_versions(t), default=-1) for t in delta_tables(layer_dir)}


def commit_rows(commit_info: dict[str, Any]) -> int:
    """Rows a commit inserted or updated (a MERGE's copied, unchanged rows do not count)."""
    metrics = commit_info.get("operationMetrics") or {}
    if commit_info.get("operation") == "MERGE":
        return int(metrics.get("numTargetRowsInserted", 0)) + int(
            metrics.get("numTargetRowsUpdated", 0)
        )
    if "numUpdatedRows" in metrics:
        return int(metrics["numUpdatedRows"])
    return int(metrics.get("numOutputRows", 0))


def commit_infos(table: Path, before: int) -> Iterator[dict[str, Any]]:
    """The commitInfo of each commit of one Delta table after version ``before``."""
    for version in log_versions(table):
        if version <= before:
            continue
        log = table / "_delta_log" / f"{version:020d}.json"
        for line in log.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                yield action["commitInfo"]


def table_rows_written(table: Path, before: int) -> int:
    """Rows written to one Delta table by its commits after version ``before``."""
    return sum(commit_rows(info) for info in commit_infos(table, before))


def lake_versions(root: Path) -> dict[Path, int]:
    """Latest version of every Delta table of root's lake, every layer (audit included)."""
    lake = root / "lake"
    layers = sorted(p for p in lake.iterdir() if p.is_dir()) if lake.is_dir() else []
    return {t: v for layer in layers for t, v in layer_versions(layer).items()}


def commit_kind(commit_info: dict[str, Any]) -> str:
    """merge (reads the target and rewrites what matches: MERGE, UPDATE, DELETE), overwrite,
    or append (adds files only; metadata-only commits cost no more)."""
    if commit_info.get("operation") in ("MERGE", "UPDATE", "DELETE"):
        return "merge"
    mode = str((commit_info.get("operationParameters") or {}).get("mode", ""))
    return "overwrite" if "overwrite" in mode.lower() else "append"


def commits_since(root: Path, before: dict[Path, int]) -> dict[str, int]:
    """Commits of each kind (commit_kind) to root's lake after the ``before`` versions."""
    kinds = dict.fromkeys(FLOOR_KINDS, 0)
    for table in lake_versions(root):
        for info in commit_infos(table, before.get(table, -1)):
            kinds[commit_kind(info)] += 1
    return kinds


def rows_written(layer_dir: Path, before: dict[Path, int]) -> int:
    """Rows written to the tables of layer_dir by the commits after the ``before`` versions."""
    return sum(table_rows_written(t, before.get(t, -1)) for t in delta_tables(layer_dir))


# -- timed work --------------------------------------------------------------------------


@contextmanager
def data_root(root: Path) -> Iterator[None]:
    """LAKEHOUSE_DATA_DIR set to root while a step runs (the config passed in says the same)."""
    previous = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = previous


def run_pipeline(
    spark: SparkSession, config: Config, root: Path, group: str, record: Callable[[Step], None]
) -> None:
    """bronze, silver and gold of one run (one RunContext, as `run all`), each timed."""
    ctx = RunContext(run_id=new_run_id())
    for stage in PIPELINE:
        layer_dir = root / "lake" / stage
        before = layer_versions(layer_dir)
        lines: list[str] = []
        with data_root(root):
            started = time.perf_counter()
            run_stages(spark, config, stage, ctx, lines.append)
            seconds = time.perf_counter() - started
        record(Step(group, stage, seconds, rows_written(layer_dir, before),
                    os.getloadavg()[0], lines))


def copy_source(spark: SparkSession, raw_dir: Path, source: SourceSpec, target: Path) -> None:
    """The baseline: every line of a source folder into a Delta table, no parsing, no logic."""
    (
        spark.read.format("text")
        .option("pathGlobFilter", source.file_glob)
        .load(str(raw_dir))
        .write.format("delta")
        .mode("overwrite")
        .save(str(target))
    )


def run_copy(
    spark: SparkSession, sources: dict[str, SourceSpec], root: Path, group: str,
    record: Callable[[Step], None],
) -> None:
    """Plain copy of every source folder of root/raw into root/lake/copy, timed per source."""
    layer_dir = root / "lake" / "copy"
    seconds, rows, detail = 0.0, 0, []
    for source in sources.values():
        raw_dir = root / "raw" / source.raw_dir
        if not raw_dir.is_dir():
            continue
        target = layer_dir / source.name
        started = time.perf_counter()
        copy_source(spark, raw_dir, source, target)
        took = time.perf_counter() - started
        copied = table_rows_written(target, -1)
        seconds, rows = seconds + took, rows + copied
        detail.append(f"copy.{source.name:<14} {copied:>12,} rows  {took:6.1f}s")
    record(Step(group, "plain copy", seconds, rows, os.getloadavg()[0], detail))


def preload_library() -> int:
    """Import every lakehouse module now: the stages import theirs lazily, and a file edited
    while a long run is under way must not mix two versions of the code in one run."""
    import lakehouse

    names = [
        m.name for m in pkgutil.walk_packages(lakehouse.__path__, "lakehouse.")
        if not m.name.endswith(".__main__")
    ]
    for name in names:
        importlib.import_module(name)
    return len(names)


def warm_up(spark: SparkSession, work_dir: Path) -> None:
    """Load Delta's and Spark's classes once, so the first timed step does not pay for it."""
    path = fresh_root(work_dir / "warmup")
    spark.range(1000).write.format("delta").save(str(path / "t"))
    spark.read.format("delta").load(str(path / "t")).count()
    shutil.rmtree(path)


def time_empty_commits(spark: SparkSession, work_dir: Path) -> dict[str, float]:
    """Median seconds of a Delta commit that carries almost no data, per commit_kind: a MERGE
    of one row into 100, an overwrite of 100 rows, an append of one row. What a commit costs
    whatever its size (planning, the log, the job), on this machine and in this session."""
    from delta.tables import DeltaTable

    path = fresh_root(work_dir / "empty_commits")
    tables = {kind: str(path / kind) for kind in FLOOR_KINDS}

    def rows(count: int, tag: int) -> DataFrame:
        return spark.range(count).selectExpr(f"concat(cast(id AS string), '-{tag}') AS k",
                                             "id AS v")

    rows(100, -1).write.format("delta").save(tables["merge"])
    operations = {
        "merge": lambda i: DeltaTable.forPath(spark, tables["merge"]).alias("t")
        .merge(rows(1, i).alias("s"), "t.k = s.k")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(),
        "overwrite": lambda i: rows(100, i).write.format("delta").mode("overwrite")
        .save(tables["overwrite"]),
        "append": lambda i: rows(1, i).write.format("delta").mode("append")
        .save(tables["append"]),
    }
    medians = {}
    for kind, operation in operations.items():
        operation(-1)  # the first one also creates the table
        seconds = []
        for i in range(FLOOR_REPEATS):
            started = time.perf_counter()
            operation(i)
            seconds.append(time.perf_counter() - started)
        medians[kind] = statistics.median(seconds)
    shutil.rmtree(path)
    return medians


def commit_floor(commits: dict[str, int], medians: dict[str, float],
                 full_seconds: float) -> dict[str, Any]:
    """What the incremental day's commits would cost if none carried any data, and that as a
    share of the full rebuild: a floor that only fewer commits can lower."""
    seconds = sum(commits[k] * medians[k] for k in FLOOR_KINDS)
    return {"commits": commits, "empty_commit_seconds": medians, "seconds": seconds,
            "vs_full": ratio(seconds, full_seconds)}


def silver_merge_keys() -> dict[str, tuple[str, ...]]:
    """The key a plain MERGE matches each silver table's rows on (the natural keys silver
    itself MERGEs on)."""
    from lakehouse.silver.job import QUARANTINE_KEY
    from lakehouse.silver.transforms import TABLES

    return {**{spec.table: tuple(spec.key) for spec in TABLES.values()},
            "customer_pii": ("customer_key",), "identity_map": ("id_type", "id_value"),
            "quarantine": tuple(QUARANTINE_KEY)}


def time_plain_day(
    spark: SparkSession, config: Config, sources: dict[str, SourceSpec], roots: dict[str, Path],
    incoming: list[Path], before: dict[Path, int], work: Path,
) -> dict[str, Any]:
    """The incremental day with no logic (module docstring, point 5): seconds of the day's
    lines appended to the plain copy's tables, and of one plain MERGE per silver table of the
    rows the day inserted or changed there, with those row counts."""
    from delta.tables import DeltaTable
    from pyspark import StorageLevel

    from lakehouse.parallel import side_by_side
    from lakehouse.silver.io import merge_upsert

    def append_lines(source: SourceSpec) -> None:
        files = [str(f) for f in incoming if f.parent.name == source.raw_dir]
        if files:
            (spark.read.format("text").load(files).write.format("delta").mode("append")
             .save(str(roots["copy"] / "lake" / "copy" / source.name)))

    started = time.perf_counter()
    side_by_side(append_lines, list(sources.values()),
                 int(config.get("bronze.parallel_sources")), "plain-bronze")
    bronze_seconds = time.perf_counter() - started

    keys = silver_merge_keys()
    scratch = fresh_root(work / "plain_day")
    changes: dict[str, tuple[str, DataFrame]] = {}
    rows: dict[str, int] = {}
    for table in delta_tables(roots["incremental"] / "lake" / "silver"):
        old = before.get(table)
        if table.name not in keys or old is None or old == max(log_versions(table)):
            continue
        after = spark.read.format("delta").load(str(table))
        earlier = spark.read.format("delta").option("versionAsOf", old).load(str(table))
        changed = after.exceptAll(earlier.select(*after.columns)).persist(
            StorageLevel.MEMORY_AND_DISK)
        count = changed.count()
        if count:
            target = scratch / table.name
            shutil.copytree(table, target)
            DeltaTable.forPath(spark, str(target)).restoreToVersion(old)
            changes[table.name], rows[table.name] = (str(target), changed), count

    def plain_merge(name: str) -> None:
        target, changed = changes[name]
        merge_upsert(spark, target, changed, keys[name], null_safe=True)

    started = time.perf_counter()
    side_by_side(plain_merge, list(changes), int(config.get("silver.parallel_tables")),
                 "plain-silver")
    silver_seconds = time.perf_counter() - started
    # The plain MERGEs must have made exactly the day's silver tables, or they measured less.
    differing = []
    for name, (target, _) in changes.items():
        made = spark.read.format("delta").load(target)
        real = spark.read.format("delta").load(str(roots["incremental"] / "lake" / "silver"
                                                   / name)).select(*made.columns)
        if not (made.exceptAll(real).isEmpty() and real.exceptAll(made).isEmpty()):
            differing.append(name)
    for _, changed in changes.values():
        changed.unpersist()
    shutil.rmtree(scratch)
    return {"bronze_seconds": bronze_seconds, "silver_seconds": silver_seconds,
            "silver_rows": rows, "tables_differing_from_the_day": differing}


def plain_day_figures(plain: dict[str, Any], steps: list[Step], days: int) -> dict[str, Any]:
    """The plain day as shares of the full rebuild: bronze and silver alone, and with gold as
    the incremental day rebuilt it."""
    full = group_seconds(steps, f"full rebuild {days + 1}d")
    gold = sum(s.seconds for s in steps
               if s.group == f"incremental day {days + 1}" and s.name == "gold")
    seconds = plain["bronze_seconds"] + plain["silver_seconds"]
    return {**plain, "gold_seconds": gold, "vs_full": ratio(seconds, full),
            "with_gold_vs_full": ratio(seconds + gold, full)}


def table_counts(spark: SparkSession, root: Path) -> dict[str, int]:
    """Rows of every silver and gold table under root (for the consistency check)."""
    return {
        f"{layer}.{t.name}": spark.read.format("delta").load(str(t)).count()
        for layer in ("silver", "gold")
        for t in delta_tables(root / "lake" / layer)
    }


# -- report ------------------------------------------------------------------------------


def machine_info(spark: SparkSession | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyspark": importlib.metadata.version("pyspark"),
        "delta_spark_python": importlib.metadata.version("delta-spark"),
    }
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        info["memory_gb"] = round(total_kb / 1024 / 1024, 1)
    if spark is not None:
        conf = spark.sparkContext.getConf()
        info["spark"] = spark.version
        info["spark_master"] = conf.get("spark.master", "")
        info["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
        info["driver_memory"] = conf.get("spark.driver.memory", "1g (default)")
    return info


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None while either side has not been measured."""
    return numerator / denominator if numerator > 0 and denominator > 0 else None


def group_seconds(steps: list[Step], group: str) -> float:
    """Seconds of a group of steps; 0.0 (no ratio) until every step of the group has run."""
    names = {s.name for s in steps if s.group == group}
    if not group.startswith("copy") and names != set(PIPELINE):
        return 0.0
    return sum(s.seconds for s in steps if s.group == group)


def ratios(steps: list[Step], days: int) -> dict[str, Any]:
    load, copy = f"pipeline {days}d", f"copy {days}d"
    inc, full = f"incremental day {days + 1}", f"full rebuild {days + 1}d"
    out: dict[str, Any] = {
        "pipeline_vs_copy": ratio(group_seconds(steps, load), group_seconds(steps, copy)),
        "incremental_vs_full": ratio(group_seconds(steps, inc), group_seconds(steps, full)),
        "incremental_vs_full_by_stage": {},
    }
    for stage in PIPELINE:
        a = sum(s.seconds for s in steps if s.group == inc and s.name == stage)
        b = sum(s.seconds for s in steps if s.group == full and s.name == stage)
        out["incremental_vs_full_by_stage"][stage] = ratio(a, b)
    for key, goal in GOALS.items():
        value = out[key]
        out[f"{key}_goal"] = goal
        out[f"{key}_reached"] = None if value is None else value <= goal
    return out


def markdown(steps: list[Step], figures: dict[str, Any]) -> str:
    lines = [
        "| step | seconds | rows written | load (1 min) after |",
        "| --- | ---: | ---: | ---: |",
    ]
    for group in dict.fromkeys(s.group for s in steps):
        members = [s for s in steps if s.group == group]
        lines.extend(
            f"| {group}: {s.name} | {s.seconds:.1f} | {s.rows:,} | {s.load_after:.2f} |"
            for s in members
        )
        if len(members) > 1:
            total = sum(s.seconds for s in members)
            rows = sum(s.rows for s in members)
            lines.append(f"| **{group}: total** | **{total:.1f}** | {rows:,} | |")
    lines.append("")
    for key, label in (("pipeline_vs_copy", "full pipeline / plain copy"),
                       ("incremental_vs_full", "incremental day / full rebuild")):
        value, goal = figures.get(key), GOALS[key]
        if value is None:
            lines.append(f"- {label}: not measured")
            continue
        shown = f"{value:.2f}x" if key == "pipeline_vs_copy" else f"{value:.1%}"
        limit = f"{goal:.0f}x" if key == "pipeline_vs_copy" else f"{goal:.0%}"
        verdict = "reached" if value <= goal else "NOT reached"
        lines.append(f"- {label}: **{shown}** (goal <= {limit}: {verdict})")
    by_stage = figures.get("incremental_vs_full_by_stage") or {}
    if any(v is not None for v in by_stage.values()):
        parts = ", ".join(f"{k} {v:.1%}" for k, v in by_stage.items() if v is not None)
        lines.append(f"- incremental / full by stage: {parts}")
    return "\n".join(lines)


def floor_line(floor: dict[str, Any]) -> str:
    commits, medians = floor["commits"], floor["empty_commit_seconds"]
    parts = ", ".join(f"{commits[k]} {k} x {medians[k]:.2f} s" for k in FLOOR_KINDS)
    share = "" if floor["vs_full"] is None else f" = {floor['vs_full']:.1%} of the full rebuild"
    return (f"- the incremental day's {sum(commits.values())} Delta commits, each as if empty "
            f"({parts}): {floor['seconds']:.1f} s{share}")


def plain_day_line(plain: dict[str, Any]) -> str:
    shares = "" if plain["vs_full"] is None else (
        f" = {plain['vs_full']:.1%} of the full rebuild, {plain['with_gold_vs_full']:.1%} with "
        f"the day's gold ({plain['gold_seconds']:.1f} s)")
    return (f"- the incremental day with no logic: the day's lines appended to the plain "
            f"copy {plain['bronze_seconds']:.1f} s, a plain MERGE of the "
            f"{sum(plain['silver_rows'].values()):,} rows it changed in "
            f"{len(plain['silver_rows'])} silver tables {plain['silver_seconds']:.1f} s{shares}"
            + ("; the tables it made equal the day's silver"
               if not plain["tables_differing_from_the_day"]
               else f"; DIFFER from the day's silver: {plain['tables_differing_from_the_day']}"))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


# -- entry point -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time bronze -> silver -> gold against a plain Spark copy into Delta, and "
        "an incremental day against a full rebuild (one shared Spark session).",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="m",
                        help="generator scale (default m; xs is the smoke check)")
    parser.add_argument("--days", type=int, default=30,
                        help="days loaded before the incremental day (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default config)")
    parser.add_argument("--env", default="local", help="config overlay conf/ENV.yaml")
    parser.add_argument("--driver-memory", default=None,
                        help="spark.driver.memory of the session, e.g. 8g (default: as "
                        "configured: 6g in conf/local.yaml)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help=f"folder of the data roots (default {DEFAULT_WORK_DIR}/<scale>)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results (default data/bench/pipeline.json)")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preload_library()
    load_start = os.getloadavg()
    work = (args.work_dir / args.scale).resolve()
    overrides = {"data_dir": str(work)}
    if args.driver_memory:
        overrides["spark.conf.spark.driver.memory"] = args.driver_memory
    base = load_config(args.env, overrides=overrides)
    args.seed = args.seed if args.seed is not None else base.get("generate.seed")
    sources = load_sources(base)
    print(f"bench_pipeline: scale {args.scale}, {args.days} + 1 days, seed {args.seed}, "
          f"work {work}; load average {' '.join(f'{x:.2f}' for x in load_start)}", flush=True)

    roots, incoming, raw_info = prepare_roots(work, base, sources, args)
    print(f"raw: {raw_info['files_loaded']} files ({raw_info['bytes_loaded'] / 1e6:,.1f} MB) "
          f"for days 1-{args.days}, {len(incoming)} files for {raw_info['incremental_day']}; "
          f"generation {raw_info['generate_seconds']:.1f}s (0 = reused)", flush=True)

    config = base.with_overrides({"data_dir": str(roots["incremental"])})
    spark = get_spark(config, app_name="bench_pipeline", show_progress=False)
    warm_up(spark, work)

    steps: list[Step] = []
    payload: dict[str, Any] = {
        "benchmark": "pipeline",
        "argv": sys.argv[1:],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "scale": args.scale, "days": args.days, "seed": args.seed, **raw_info,
        "copy_reader": "spark.read.text",
        "session": "one shared Spark session for every timed step (lakehouse.session.get_spark)",
        "machine": machine_info(spark),
        "load_average_start": list(load_start),
    }

    def record(step: Step) -> None:
        steps.append(step)
        print(f"  {step.group}: {step.name:<11} {step.seconds:8.1f}s  {step.rows:>12,} rows  "
              f"(load {step.load_after:.2f})", flush=True)
        for line in step.detail:
            print(f"      {line}", flush=True)
        payload["steps"] = [asdict(s) for s in steps]
        payload["ratios"] = ratios(steps, args.days)
        write_json(args.output, payload)

    try:
        with data_root(roots["copy"]):
            run_copy(spark, sources, roots["copy"], f"copy {args.days}d", record)
        run_pipeline(spark, config, roots["incremental"], f"pipeline {args.days}d", record)
        link_files(incoming, work / "raw_all", roots["incremental"])
        before = lake_versions(roots["incremental"])
        run_pipeline(spark, config, roots["incremental"], f"incremental day {args.days + 1}",
                     record)
        day_commits = commits_since(roots["incremental"], before)
        full_config = base.with_overrides({"data_dir": str(roots["full"])})
        run_pipeline(spark, full_config, roots["full"], f"full rebuild {args.days + 1}d", record)
        payload["commit_floor"] = commit_floor(
            day_commits, time_empty_commits(spark, work),
            group_seconds(steps, f"full rebuild {args.days + 1}d"),
        )
        write_json(args.output, payload)
        payload["plain_day"] = plain_day_figures(
            time_plain_day(spark, config, sources, roots, incoming, before, work), steps,
            args.days)
        write_json(args.output, payload)
    except Exception as exc:  # noqa: BLE001 - a failed step still leaves the figures so far
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        payload.update(status="failed", error=first, load_average_end=list(os.getloadavg()))
        write_json(args.output, payload)
        print(f"\nbench_pipeline: FAILED after {len(steps)} steps: {first}")
        if "OutOfMemoryError" in str(exc):
            print("bench_pipeline: the Spark driver ran out of heap: try --driver-memory 6g")
        print(markdown(steps, payload.get("ratios") or {}))
        return 1

    inc_counts, full_counts = table_counts(spark, roots["incremental"]), table_counts(
        spark, roots["full"]
    )
    mismatches = {
        t: {"incremental": inc_counts.get(t), "full": full_counts.get(t)}
        for t in sorted(set(inc_counts) | set(full_counts))
        if inc_counts.get(t) != full_counts.get(t)
    }
    payload.update(
        status="done",
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        load_average_end=list(os.getloadavg()),
        table_rows={"incremental": inc_counts, "full": full_counts},
        incremental_equals_full_row_counts=not mismatches,
        row_count_mismatches=mismatches,
    )
    write_json(args.output, payload)
    spark.stop()

    load_end = payload["load_average_end"]
    print()
    print(markdown(steps, payload["ratios"]))
    print(floor_line(payload["commit_floor"]))
    print(plain_day_line(payload["plain_day"]))
    print(f"- load average (1/5/15 min): start {' '.join(f'{x:.2f}' for x in load_start)}, "
          f"end {' '.join(f'{x:.2f}' for x in load_end)}; {os.cpu_count()} cores")
    check = "equal" if not mismatches else f"DIFFER: {mismatches}"
    print(f"- silver/gold row counts, incremental root vs full rebuild: {check}")
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
