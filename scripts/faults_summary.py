"""Summary table of a fault-suite run (`make faults`): cases tried and ended correct, per kind.

    .venv/bin/python scripts/faults_summary.py data/faults/report.jsonl [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"faults_summary: no report at {args.report}: did the suite run?", file=sys.stderr)
        return 2
    cases = [json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        by_kind[case["category"]].append(case)
    lines = ["| kind | tried | every table correct |", "|---|---:|---:|"]
    for kind, items in sorted(by_kind.items()):
        lines.append(f"| {kind} | {len(items)} | {sum(c['ok'] for c in items)} |")
    lines.append(f"| **all** | {len(cases)} | {sum(c['ok'] for c in cases)} |")
    failed = [c for c in cases if not c["ok"]]
    text = "\n".join(lines)
    if failed:
        text += "\n\nNot correct:\n" + "\n".join(
            f"- {c['category']} / {c['case']}: {c['detail']}" for c in failed)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
