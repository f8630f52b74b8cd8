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


def _figures(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    pipeline = _load(BENCH / "pipeline.json")
    ratios = pipeline.get("ratios") or {}
    if ratios:
        size = f"scale {pipeline.get('scale')}, {pipeline.get('days')} days"
        rows.append({"figure": "pipeline / plain copy", "value": ratios.get("pipeline_vs_copy"),
                     "unit": "x", "goal": "<= 3", "data": size})
        rows.append({"figure": "incremental day / full rebuild",
                     "value": ratios.get("incremental_vs_full"), "unit": "ratio",
                     "goal": "<= 0.10", "data": size})
    attribution = _load(BENCH / "attribution.json")
    runs = attribution.get("path_file_runs") or []
    ours = {r["order"]: r["seconds"] for r in runs if r.get("tool", "").startswith("ours")}
    for r in runs:
        if not r.get("tool", "").startswith("ours") and r.get("order") in ours and r.get("seconds"):
            rows.append({"figure": f"attribution: {r['tool']} {r.get('setting', '')} / ours "
                                   f"(order {r['order']})",
                         "value": r["seconds"] / ours[r["order"]], "unit": "x",
                         "goal": ">= 4", "data": f"{attribution.get('path_file', {})}"})
    segmentation = _load(BENCH / "segmentation.json")
    for r in segmentation.get("results", []):
        rows.append({"figure": f"K-means Spark / scikit-learn time ({r.get('customers'):,})",
                     "value": r.get("time_ratio"), "unit": "x", "goal": "as low as possible",
                     "data": f"{r.get('customers'):,} customers, k={r.get('k')}"})
        rows.append({"figure": f"K-means inertia difference ({r.get('customers'):,})",
                     "value": r.get("inertia_rel_diff"), "unit": "relative",
                     "goal": "<= 0.01", "data": f"{r.get('customers'):,} customers"})
    cluster = _load(BENCH / "cluster.json")
    if cluster:
        rows.append({"figure": "standalone cluster / local (run all)",
                     "value": cluster.get("standalone_vs_local"), "unit": "x", "goal": "-",
                     "data": f"scale {cluster.get('scale')}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    BENCH.mkdir(parents=True, exist_ok=True)
    scale = "xs" if args.quick else os.environ.get("BENCH_SCALE", "m")
    customers = ["20000"] if args.quick else ["100000", "1000000"]
    ca_python = Path("/tmp/ca-venv/bin/python")
    if not ca_python.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "bench_attribution_setup.sh")], cwd=REPO)
    runs = {
        "pipeline": _run("pipeline", [PY, "scripts/bench_pipeline.py", "--scale", scale,
                                      "--driver-memory", "4g",
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
    (BENCH / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    lines = ["| figure | value | goal | data |", "|---|---:|---|---|"]
    for f in figures:
        value = "n/a" if f["value"] is None else f"{f['value']:.3g} {f['unit']}"
        lines.append(f"| {f['figure']} | {value} | {f['goal']} | {f['data']} |")
    lines.append("")
    lines.append(f"Machine: {machine['cores']} cores, {machine['platform']}, load average at "
                 f"the end {' '.join(f'{x:.1f}' for x in machine['load_average'])}.")
    failed = [name for name, r in runs.items() if r["exit"] != 0]
    if failed:
        lines.append(f"Failed benchmarks (see their logs): {', '.join(failed)}.")
    text = "\n".join(lines)
    (BENCH / "summary.md").write_text(text + "\n")
    print("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
