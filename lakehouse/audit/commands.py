"""CLI commands of the audit layer: history, diff, restore, reproduce, audit verify."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from lakehouse.argtypes import column_list, count, version
from lakehouse.errors import LakehouseError

Handler = Callable[[argparse.Namespace], int]


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    hist = sub.add_parser("history", help="versions of a table (Delta history)")
    hist.add_argument("table", help="logical table name, e.g. gold.customer_360")
    hist.add_argument("--limit", type=count, default=20, help="newest N versions (default 20; 0 = all)")
    common(hist)

    diff = sub.add_parser("diff", help="rows added, removed and changed between two versions")
    diff.add_argument("table", help="logical table name, e.g. silver.orders")
    diff.add_argument("--from", dest="from_version", type=version, required=True, help="older version")
    diff.add_argument("--to", dest="to_version", type=version, required=True, help="newer version")
    diff.add_argument("--key", type=column_list, default=None,
                      help="key columns COL,... that pair a removed and an added row as changed "
                           "(default: the table's key from docs/tables.md, if it has one)")
    diff.add_argument("--sample", type=count, default=None, help="rows shown per kind (default audit.diff_sample)")
    common(diff)

    restore = sub.add_parser("restore", help="restore a table to an earlier version (asks first)")
    restore.add_argument("table", help="logical table name")
    restore.add_argument("--version", type=version, required=True, help="version to restore")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    common(restore)

    repro = sub.add_parser(
        "reproduce", help="rebuild a recorded run's output from its input versions and compare"
    )
    repro.add_argument("run_id", metavar="RUN_ID", help="pipeline run id (see audit.lineage)")
    common(repro)

    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(
        dest="audit_command", metavar="ACTION", parser_class=type(audit)
    )
    audit_sub.required = True
    verify = audit_sub.add_parser("verify", help="check the hash chain of the audit records")
    common(verify)
    return {
        "history": _cmd_history,
        "diff": _cmd_diff,
        "restore": _cmd_restore,
        "reproduce": _cmd_reproduce,
        "audit": _cmd_audit,
    }


def _context(args: argparse.Namespace):
    from lakehouse.catalog import Catalog
    from lakehouse.config import load_config
    from lakehouse.session import get_spark

    config = load_config(args.env, args.conf_dir)
    return config, get_spark(config), Catalog(config)


def _cmd_history(args: argparse.Namespace) -> int:
    from pyspark.sql import functions as F

    from lakehouse.audit.timetravel import require_table

    config, spark, catalog = _context(args)
    require_table(spark, catalog, args.table)
    history = catalog.delta_table(spark, args.table).history(args.limit or None)
    rows = history.select(
        "version",
        F.date_format("timestamp", "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("ts"),
        "operation",
        "operationMetrics",
        "userMetadata",
    ).orderBy(F.col("version").desc()).collect()
    print(f"{args.table}: {len(rows)} version(s) shown, newest first")
    print(f"{'version':>7}  {'timestamp (UTC)':<20}  {'operation':<18}  {'rows':<28}  run / note")
    for r in rows:
        metrics = r["operationMetrics"] or {}
        counts = " ".join(
            f"{label}={metrics[m]}"
            for label, m in (
                ("out", "numOutputRows"), ("ins", "numTargetRowsInserted"),
                ("upd", "numTargetRowsUpdated"), ("del", "numTargetRowsDeleted"),
                ("del", "numDeletedRows"), ("upd", "numUpdatedRows"),
            )
            if m in metrics
        )
        print(f"{r['version']:>7}  {r['ts']:<20}  {r['operation']:<18}  {counts:<28}  {r['userMetadata'] or ''}")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from lakehouse.audit.diff import diff_versions
    from lakehouse.audit.timetravel import require_table

    config, spark, catalog = _context(args)
    require_table(spark, catalog, args.table)
    sample = args.sample if args.sample is not None else config.get("audit.diff_sample")
    result = diff_versions(
        spark, catalog, args.table, args.from_version, args.to_version, key=args.key, sample=sample
    )
    for line in result.lines():
        print(line)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from lakehouse.audit.restore import check_restorable, confirm, restore_plan, restore_table
    from lakehouse.audit.timetravel import require_table

    check_restorable(args.table)  # before a Spark session is started
    config, spark, catalog = _context(args)
    require_table(spark, catalog, args.table)
    current = catalog.current_version(spark, args.table)
    if current == args.version:  # Delta would commit nothing; no new version to report
        print(f"nothing restored: {args.table} is at version {current} already")
        return 0
    plan = restore_plan(spark, catalog, args.table, args.version, config.get("audit.diff_sample"))
    print(f"restoring {args.table} to version {args.version} changes the current table by:")
    for line in plan.lines():
        print(f"  {line}")
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise LakehouseError(
                f"not restoring {args.table}: confirmation needed but stdin is not a terminal; "
                f"pass --yes to restore without asking"
            )
        if not confirm(f"restore {args.table} to version {args.version}?"):
            print("not restored")
            return 1
    from lakehouse.locks import pipeline_lock

    notes: list[str] = []
    # Not while a pipeline run writes: its progress write would undo the set-back of silver's
    # progress that restoring a silver table makes, and the rows taken out would not return.
    with pipeline_lock(config, f"restore of {args.table}"):
        new_version = restore_table(spark, catalog, args.table, args.version, echo=notes.append)
    print(f"restored {args.table} to version {args.version}: new version {new_version} (RESTORE in its history)")
    for note in notes:
        print(f"  {note}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from lakehouse.audit.reproduce import reproduce_run

    config, spark, _catalog = _context(args)
    checks = reproduce_run(spark, config, args.run_id, echo=print)
    if not checks:
        print(f"run {args.run_id}: nothing rebuilt (no gold, attribute or segment stage completed in it)")
        return 0
    different = [c for c in checks if not c.identical]
    print(
        f"run {args.run_id}: {len(checks) - len(different)}/{len(checks)} output table(s) "
        f"identical" + (f"; DIFFERENT: {', '.join(c.table for c in different)}" if different else "")
    )
    return 1 if different else 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from lakehouse.audit import CHAINED_TABLES
    from lakehouse.audit.chain import verify_chain

    _config, spark, catalog = _context(args)
    labels = {
        "audit.table_history": ("table", "version"),
        "audit.lineage": ("run_id", "stage", "direction", "dataset"),
        "audit.reconciliation": ("audit_run_id", "check", "subject"),
    }
    reports = [verify_chain(spark, catalog, name, labels.get(name, ())) for name in CHAINED_TABLES]
    for report in reports:
        print(report.line())
    broken = [r for r in reports if not r.intact]
    if broken:
        first = broken[0]
        sys.stderr.write(
            f"lakehouse: audit verify failed: {first.table} record {first.broken_at}"
            f"{f' ({first.record})' if first.record else ''}: {first.reason}\n"
        )
        return 1
    return 0
