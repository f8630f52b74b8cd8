"""Where a pipeline stage's wall time goes: Spark jobs at work, or the driver alone.

Runs stages (``lakehouse run`` order) on one lake in one Spark session with Spark's event log
on, then splits each stage's wall time into

* seconds during which at least one Spark job was running (the data work, on the cores), and
* driver-only seconds: planning and analysing queries, Delta log reads and commits, py4j
  calls, waiting between jobs. This part does not shrink with the data: on an incremental day
  it is most of what a stage costs.

and lists the call sites (the Python line, or Delta's description of its own work) that held
jobs the longest, and the JVM's CPU seconds next to the wall time (a JVM using less CPU than
wall time on 2 cores waits for something: the disk, a lock, the other process on the machine).

It writes to the lake it is given: point it at a scratch copy. Each round runs the stages
again on the same lake (round 1 on: an incremental run that finds nothing new, i.e. the
stage's fixed cost), after round 0 warmed the JVM. Local mode only (the driver's JVM is the
one whose CPU is read). Not part of make test.

    .venv/bin/lakehouse generate --scale xs   # or a copy of a bigger lake
    LAKEHOUSE_DATA_DIR=/tmp/prof/data .venv/bin/python scripts/profile_stages.py \\
        --stages bronze,silver,gold --rounds 2

Measured with it on xs (3 days, alone on the 2 cores, 2026-12-07): the first load (round 0, cold
JVM) bronze / silver / gold 27.3 / 32.2 / 14.2 s of wall time, of which a Spark job ran 14.9 /
16.7 / 7.3 s; round 1, nothing new to read: 2.8 / 2.8 / 12.1 s (gold rebuilds its snapshot
whatever is new; 5.6 s of it driver only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lakehouse.config import load_config  # noqa: E402
from lakehouse.errors import LakehouseError  # noqa: E402
from lakehouse.pipeline import STAGE_ORDER, RunContext, run_stages  # noqa: E402
from lakehouse.session import get_spark  # noqa: E402


@dataclass(frozen=True)
class Job:
    """One Spark job of the event log: when it ran (epoch ms) and what started it."""

    start_ms: int
    end_ms: int
    site: str


def jobs_from_event_log(lines) -> list[Job]:
    """Finished jobs of a Spark event log (JSON lines). The site is the job's description
    (Delta names its own work there), else its short call site, else its first stage's name
    (a write started through py4j has neither)."""
    started: dict[int, tuple[int, str]] = {}
    jobs = []
    for line in lines:
        event = json.loads(line)
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            props = event.get("Properties") or {}
            stage_names = [s.get("Stage Name") for s in event.get("Stage Infos") or []]
            site = (props.get("spark.job.description") or props.get("callSite.short")
                    or next((n for n in stage_names if n), "?"))
            started[event["Job ID"]] = (event["Submission Time"], site.splitlines()[0][:90])
        elif kind == "SparkListenerJobEnd" and event["Job ID"] in started:
            start, site = started.pop(event["Job ID"])
            jobs.append(Job(start, event["Completion Time"], site))
    return jobs


def event_log_files(event_dir: Path) -> list[Path]:
    """The event log's files in write order: a rolling log (Spark 4's default) is a folder of
    events_<n>_<app> files; a plain one is a single file."""
    rolled = list(event_dir.rglob("events_*"))
    if rolled:
        return sorted(rolled, key=lambda p: int(p.name.split("_")[1]))
    return [p for p in event_dir.iterdir() if p.is_file()]


def busy_ms(jobs: list[Job], start_ms: int, end_ms: int) -> int:
    """Milliseconds of [start_ms, end_ms] during which at least one of ``jobs`` ran (jobs of
    parallel threads overlap: their union, not their sum)."""
    spans = sorted((max(j.start_ms, start_ms), min(j.end_ms, end_ms)) for j in jobs)
    total, reach = 0, start_ms
    for lo, hi in spans:
        if hi <= reach:
            continue
        total += hi - max(lo, reach)
        reach = hi
    return total


def breakdown(jobs: list[Job], start_ms: int, end_ms: int, top: int) -> dict:
    """A stage's window: jobs, their summed seconds, the seconds with a job running and the
    ``top`` call sites by job seconds."""
    inside = [j for j in jobs if start_ms <= j.start_ms <= end_ms]
    by_site: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for job in inside:
        by_site[job.site][0] += 1
        by_site[job.site][1] += (job.end_ms - job.start_ms) / 1000
    busy = busy_ms(inside, start_ms, end_ms) / 1000
    wall = (end_ms - start_ms) / 1000
    return {
        "wall_s": round(wall, 2),
        "jobs": len(inside),
        "job_seconds": round(sum(j.end_ms - j.start_ms for j in inside) / 1000, 2),
        "job_running_s": round(busy, 2),
        "driver_only_s": round(wall - busy, 2),
        "top_sites": [
            {"site": site, "jobs": n, "seconds": round(s, 2)}
            for site, (n, s) in sorted(by_site.items(), key=lambda kv: -kv[1][1])[:top]
        ],
    }


def jvm_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="bronze,silver,gold",
                        help="comma-separated stages, run in this order each round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times the stages run (round 0 warms the JVM)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=None)
    parser.add_argument("--env", default="local")
    parser.add_argument("--top", type=int, default=8, help="call sites listed per stage")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGE_ORDER]
    if unknown or not args.stages:
        parser.error(f"--stages: unknown {unknown}; known: {', '.join(STAGE_ORDER)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def profile(args: argparse.Namespace, config, event_dir: Path) -> tuple[list[tuple], list[Job]]:
    """Run the stages with the event log in ``event_dir``: each stage's window (round, stage,
    start and end in epoch ms, JVM CPU seconds, load after) and the log's jobs."""
    config = config.with_overrides({
        "spark.conf.spark.eventLog.enabled": "true",
        "spark.conf.spark.eventLog.dir": event_dir.as_uri(),
        "spark.conf.spark.eventLog.compress": "false",
    })
    spark = get_spark(config, app_name="profile-stages")
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    windows = []
    try:
        for round_no in range(args.rounds):
            ctx = RunContext(run_id=f"profile-{round_no}", as_of=args.as_of)
            for stage in args.stages:
                cpu, start_ms = jvm_cpu_seconds(pid), int(time.time() * 1000)
                run_stages(spark, config, stage, ctx, echo=lambda line: None)
                windows.append((round_no, stage, start_ms, int(time.time() * 1000),
                                jvm_cpu_seconds(pid) - cpu, os.getloadavg()[0]))
    finally:
        spark.stop()
    jobs = jobs_from_event_log(line for path in event_log_files(event_dir) for line in path.open())
    return windows, jobs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.env)
    if not str(config.get("spark.master") or "").startswith("local"):
        print(f"profile_stages: error: --env {args.env} has spark.master "
              f"{config.get('spark.master')!r}; the profile works in local mode only (the "
              f"driver's JVM is where the jobs run): pass --env local", file=sys.stderr)
        return 2
    event_dir = Path(tempfile.mkdtemp(prefix="profile_stages_"))
    try:
        windows, jobs = profile(args, config, event_dir)
    except LakehouseError as exc:
        # A user's mistake (no lake at LAKEHOUSE_DATA_DIR, a stage whose input is missing):
        # one line, as the lakehouse command says it.
        print(f"profile_stages: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(event_dir, ignore_errors=True)
    results = []
    for round_no, stage, start_ms, end_ms, cpu, load in windows:
        figures = breakdown(jobs, start_ms, end_ms, args.top)
        results.append({"round": round_no, "stage": stage, "jvm_cpu_s": round(cpu, 1),
                        "load_after": load, **figures})
        print(f"round {round_no} {stage:<9} wall {figures['wall_s']:6.1f}s  job running "
              f"{figures['job_running_s']:6.1f}s  driver only {figures['driver_only_s']:6.1f}s  "
              f"jobs {figures['jobs']:4d}  JVM CPU {cpu:6.1f}s  load {load:.1f}")
        for site in figures["top_sites"]:
            print(f"      {site['seconds']:7.2f}s {site['jobs']:4d} jobs  {site['site']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
