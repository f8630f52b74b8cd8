"""Benchmark: the whole pipeline (`all`) run locally vs submitted to a Spark standalone cluster
on this machine (one master, one worker with all cores), on the same generated raw files.

Both sides are separate processes started cold (JVM start-up included, as a user sees it):
`lakehouse run all` (local[*]) and `scripts/submit.sh --env standalone all`. Writes JSON to
data/bench/cluster.json and prints a Markdown table. Not part of make test.

    .venv/bin/python scripts/bench_cluster.py --scale s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lakehouse.standalone import standalone_cluster  # noqa: E402


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bench_cluster: {' '.join(command[:3])} failed:\n{result.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="s", choices=("xs", "s", "m"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "bench" / "cluster")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "cluster.json")
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    raw = work / "raw_master"
    py = str(REPO / ".venv" / "bin" / "python")
    subprocess.run([py, "-m", "lakehouse", "generate", "--scale", args.scale, "--seed",
                    str(args.seed), "--no-progress"], check=True, capture_output=True,
                   env={**os.environ, "LAKEHOUSE_DATA_DIR": str(work / "gen")})
    shutil.move(str(work / "gen" / "raw"), raw)
    results = {}
    for side in ("local", "standalone"):
        root = work / side
        shutil.copytree(raw, root / "raw")
        env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(root)}
        if side == "local":
            results[side] = _timed([py, "-m", "lakehouse", "run", "all"], env)
        else:
            with standalone_cluster(work / "daemons", cores=os.cpu_count() or 2,
                                    memory="6g") as url:
                env["SPARK_SUBMIT_OPTS_EXTRA"] = "--executor-memory 4g --driver-memory 4g"
                results[side] = _timed([str(REPO / "scripts" / "submit.sh"), "--master", url,
                                        "--env", "standalone", "all"], env)
        print(f"  {side:<10} {results[side]:8.1f}s", flush=True)
    payload = {
        "benchmark": "cluster", "scale": args.scale, "seed": args.seed,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
        "local_seconds": results["local"], "standalone_seconds": results["standalone"],
        "standalone_vs_local": results["standalone"] / results["local"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n| scale | local | standalone cluster | ratio |\n|---|---|---|---|\n"
          f"| {args.scale} | {results['local']:.1f}s | {results['standalone']:.1f}s | "
          f"{payload['standalone_vs_local']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
