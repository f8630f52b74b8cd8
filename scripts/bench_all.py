"""`make bench`: every benchmark of the project, then one summary table (Markdown and JSON).

Runs, each in its own process (a failure is recorded and the others still run):

* pipeline vs plain copy and incremental vs full rebuild (scripts/bench_pipeline.py)
* Markov attribution vs the reference package (scripts/bench_attribution.py; the reference is
  installed into /tmp/ca-venv by scripts/bench_attribution_setup.sh when missing)
* K-means: ours vs scikit-learn at 100k and 1M customers (scripts/bench_segmentation.py)
* the whole pipeline locally vs on a standalone cluster (scripts/bench_cluster.py)

and writes data/bench/summary.md and data/bench/summary.json with each figure, its goal, the
data size and the machine. Not part of make test. ``--quick`` runs small sizes (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "data" / "bench"
PY = str(REPO / ".venv" / "bin" / "python")


def _run(name: str, command: list[str], log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    seconds = time.perf_counter() - started
    print(f"  {name:<13} exit {code}  {seconds:7.1f}s  (log {log})", flush=True)
    return {"exit": code, "seconds": seconds, "log": str(log)}


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _row(figure: str, value: float | None, unit: str, measured: str, goal: str,
         reached: bool | None, data: str) -> dict[str, Any]:
    return {"figure": figure, "value": value, "unit": unit, "measured": measured, "goal": goal,
            "reached": reached, "data": data}


def _figures(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    pipeline = _load(BENCH / "pipeline.json")
    ratios = pipeline.get("ratios") or {}
    if ratios:
        seconds: dict[str, float] = {}
        copied_rows = 0
        for step in pipeline.get("steps", []):
            seconds[step["group"]] = seconds.get(step["group"], 0.0) + step["seconds"]
            if step["group"] == "copy 30d":
                copied_rows += step.get("rows") or 0
        copy, built = seconds.get("copy 30d", 0.0), seconds.get("pipeline 30d", 0.0)
        inc, full = seconds.get("incremental day 31", 0.0), seconds.get("full rebuild 31d", 0.0)
        size = (f"scale {pipeline.get('scale')}, {pipeline.get('days')} days, "
                f"{copied_rows:,} raw rows")
        value = ratios.get("pipeline_vs_copy")
        rows.append(_row("bronze -> silver -> gold / plain copy into Delta", value, "x",
                         f"{built:.0f} s vs {copy:.0f} s", "<= 3x",
                         None if value is None else value <= 3, size))
        value = ratios.get("incremental_vs_full")
        stages = ratios.get("incremental_vs_full_by_stage") or {}
        rows.append(_row("incremental day 31 / full 31-day rebuild", value, "ratio",
                         f"{inc:.0f} s vs {full:.0f} s ("
                         + ", ".join(f"{k} {v:.0%}" for k, v in stages.items()) + ")",
                         "<= 10%", None if value is None else value <= 0.10, size))
        floor = pipeline.get("commit_floor") or {}
        if floor.get("vs_full") is not None:
            commits = floor["commits"]
            rows.append(_row("incremental day 31: its Delta commits as if empty / full rebuild",
                             floor["vs_full"], "ratio",
                             f"{sum(commits.values())} commits ("
                             + ", ".join(f"{v} {k}" for k, v in commits.items())
                             + f"): {floor['seconds']:.0f} s vs {full:.0f} s", "-", None, size))
        plain = pipeline.get("plain_day") or {}
        if plain.get("with_gold_vs_full") is not None:
            rows.append(_row(
                "incremental day 31 with no logic (plain bronze and silver, the day's gold) / "
                "full rebuild", plain["with_gold_vs_full"], "ratio",
                f"{plain['bronze_seconds']:.0f} + {plain['silver_seconds']:.0f} + "
                f"{plain['gold_seconds']:.0f} s vs {full:.0f} s; without gold "
                f"{plain['vs_full']:.1%}", "-", None, size))
    attribution = _load(BENCH / "attribution.json")
    runs = attribution.get("path_file_runs") or []
    ours = {r["order"]: r["seconds"] for r in runs if r.get("tool", "").startswith("ours")}
    paths = attribution.get("path_file") or {}
    size = (f"{paths.get('distinct_paths', 0):,} distinct paths, {paths.get('journeys', 0):,} "
            f"journeys, {paths.get('channels', 0)} channels")
    for r in runs:
        if not r.get("tool", "").startswith("ours") and r.get("order") in ours and r.get("seconds"):
            value = r["seconds"] / ours[r["order"]]
            # The speed goal is against the reference at 1e7 simulations; at its defaults it is
            # fast and far off (its largest channel error is in the measured column).
            goal_applies = "1e7" in r.get("setting", "")
            rows.append(_row(
                f"Markov attribution: {r['tool']} ({r.get('setting', '')}) / ours, order "
                f"{r['order']}", value, "x",
                f"{r['seconds']:.1f} s vs {ours[r['order']]:.1f} s; its largest channel error "
                f"{r.get('max_rel_diff', float('nan')):.1%}, ours exact",
                ">= 4x" if goal_applies else "-", (value >= 4) if goal_applies else None, size))
    segmentation = _load(BENCH / "segmentation.json")
    for r in segmentation.get("results", []):
        data = (f"{r.get('customers'):,} customers, k={r.get('k')}, best of "
                f"{r.get('starts', 1)} starts on both sides")
        rows.append(_row(f"K-means time, Spark / scikit-learn ({r.get('customers'):,})",
                         r.get("time_ratio"), "x",
                         f"{r.get('spark_seconds', 0):.1f} s vs {r.get('sklearn_seconds', 0):.2f} s",
                         "as close as possible", None, data))
        value = r.get("inertia_rel_diff")
        rows.append(_row(f"K-means inertia, Spark vs scikit-learn ({r.get('customers'):,})",
                         value, "relative",
                         f"{r.get('spark_inertia', 0):,.0f} vs {r.get('sklearn_inertia', 0):,.0f}",
                         "within 1%", None if value is None else abs(value) <= 0.01, data))
    cluster = _load(BENCH / "cluster.json")
    if cluster:
        rows.append(_row("`run all`, standalone cluster / local[*]",
                         cluster.get("standalone_vs_local"), "x",
                         f"{cluster.get('standalone_seconds', 0):.0f} s vs "
                         f"{cluster.get('local_seconds', 0):.0f} s", "-", None,
                         f"scale {cluster.get('scale')}, one 2-core worker on the same machine"))
    return rows


def _markdown(figures: list[dict[str, Any]], machine: dict[str, Any],
              runs: dict[str, Any]) -> str:
    lines = ["| figure | ratio | measured | goal | reached | data |",
             "|---|---:|---|---|---|---|"]
    for f in figures:
        value = "n/a" if f["value"] is None else (
            f"{f['value']:+.2%}" if f["unit"] == "relative"
            else f"{f['value']:.1%}" if f["unit"] == "ratio" else f"{f['value']:.3g}x")
        reached = {True: "yes", False: "**no**", None: "-"}[f["reached"]]
        lines.append(f"| {f['figure']} | {value} | {f['measured']} | {f['goal']} | {reached} "
                     f"| {f['data']} |")
    lines.append("")
    lines.append(f"Machine: {machine['cores']} cores, {machine['platform']}, Python "
                 f"{machine['python']}; load average at the end "
                 f"{' '.join(f'{x:.1f}' for x in machine['load_average'])}. Benchmarks: "
                 + ", ".join(f"{name} {r['seconds']:.0f} s" for name, r in runs.items())
                 + f" ({sum(r['seconds'] for r in runs.values()) / 60:.0f} min in all).")
    failed = [name for name, r in runs.items() if r["exit"] != 0]
    if failed:
        lines.append(f"Failed benchmarks (see their logs): {', '.join(failed)}.")
    return "\n".join(lines)


def _write_summary(payload: dict[str, Any]) -> str:
    """summary.json (the payload) and summary.md (its table); returns the table."""
    (BENCH / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    text = _markdown(payload["figures"], payload["machine"], payload["runs"])
    (BENCH / "summary.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--summary-only", action="store_true",
                        help="run nothing: write the table again from the last run's JSON files")
    args = parser.parse_args(argv)
    BENCH.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        last = _load(BENCH / "summary.json")
        if not last.get("runs"):
            print(f"bench_all: no earlier run in {BENCH / 'summary.json'}: run `make bench` first",
                  file=sys.stderr)
            return 2
        print(_write_summary({**last, "figures": _figures(args.quick)}))
        return 0
    scale = "xs" if args.quick else os.environ.get("BENCH_SCALE", "m")
    customers = ["20000"] if args.quick else ["100000", "1000000"]
    ca_python = Path("/tmp/ca-venv/bin/python")
    if not ca_python.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "bench_attribution_setup.sh")], cwd=REPO)
    runs = {
        "pipeline": _run("pipeline", [PY, "scripts/bench_pipeline.py", "--scale", scale,
                                      "--driver-memory", "6g",
                                      "--output", str(BENCH / "pipeline.json")],
                         BENCH / "pipeline.log"),
        "attribution": _run("attribution", [PY, "scripts/bench_attribution.py",
                                            "--out", str(BENCH / "attribution.json"),
                                            *(["--journeys", "200000", "--distinct", "20000",
                                               "--skip-spark"] if args.quick else [])],
                            BENCH / "attribution.log"),
        "segmentation": _run("segmentation", [PY, "scripts/bench_segmentation.py",
                                              "--customers", *customers,
                                              "--out", str(BENCH / "segmentation.json")],
                             BENCH / "segmentation.log"),
        "cluster": _run("cluster", [PY, "scripts/bench_cluster.py",
                                    "--scale", "xs" if args.quick else "s",
                                    "--out", str(BENCH / "cluster.json")],
                        BENCH / "cluster.log"),
    }
    figures = _figures(args.quick)
    machine = {"cores": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "load_average": list(os.getloadavg())}
    payload = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": machine, "runs": runs, "figures": figures}
    print("\n" + _write_summary(payload))
    return 1 if any(r["exit"] != 0 for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
