"""Privacy sub-commands of `lakehouse`: erase, publish, show, subject-report."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lakehouse.argtypes import (
    as_of_date,
    non_blank,
    output_file,
    positive_float,
    positive_int,
)


def _session(args: argparse.Namespace, *, writes: bool):
    """The session and config of a command; one that ``writes`` refuses an unwritable data
    root first. show and subject-report only read (tables, raw files): a read-only lake is
    theirs to read, as history's and audit verify's."""
    from lakehouse.catalog import ensure_data_dir_writable
    from lakehouse.config import load_config
    from lakehouse.session import get_spark

    config = load_config(args.env, args.conf_dir)
    if writes:
        ensure_data_dir_writable(config)
    return get_spark(config, show_progress=False), config


def _cmd_erase(args: argparse.Namespace) -> int:
    from lakehouse.errors import LakehouseError
    from lakehouse.privacy.erasure import erase_subject

    if not args.yes:
        raise LakehouseError(
            "erase deletes the person from every table and raw file and cannot be undone: "
            "repeat the command with --yes"
        )
    from lakehouse.locks import pipeline_lock

    spark, config = _session(args, writes=True)
    # Not while a pipeline run writes the same tables (it would re-land the person's rows).
    with pipeline_lock(config, "erase"):
        print("erase: removing the person from every layer (identifiers are not printed)")
        erase_subject(spark, config, customer_id=args.customer_id, email=args.email, echo=print)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from lakehouse.locks import pipeline_lock
    from lakehouse.privacy.publish import publish

    spark, config = _session(args, writes=True)
    # One at a time: two publishes side by side each found the budget unspent by the other
    # (both read the ledger, then both appended) and together released past epsilon_total.
    with pipeline_lock(config, "publish"):
        for line in publish(spark, config, as_of=args.as_of, epsilon=args.epsilon,
                            reports=args.report or None):
            print(line)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from lakehouse.config import load_config
    from lakehouse.privacy.access import load_matrix, view

    # A denied role is refused before Spark starts: one line, nothing else printed.
    load_matrix(load_config(args.env, args.conf_dir)).grant(args.role, args.table)
    spark, config = _session(args, writes=False)
    df = view(spark, config, args.role, args.table)
    # Bounded by --limit: only that many rows reach the driver.
    print(df.limit(args.limit).toPandas().to_string(index=False))
    return 0


def _cmd_subject_report(args: argparse.Namespace) -> int:
    from lakehouse.privacy.subject_report import format_report, subject_report, write_report_json

    spark, config = _session(args, writes=False)
    report = subject_report(spark, config, args.customer_id)
    for line in format_report(report):
        print(line)
    if args.json:
        write_report_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def add_commands(sub, common: Callable[[argparse.ArgumentParser], None]) -> dict:
    """Register the privacy commands; returns {name: handler}."""
    from lakehouse.privacy.publish import REPORTS

    erase = sub.add_parser("erase", help="erase one person from every layer (physically)")
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-id", type=non_blank, default=None, help="the person's CRM customer id")
    who.add_argument("--email", type=non_blank, default=None, help="the person's email address")
    erase.add_argument("--yes", action="store_true", help="confirm: the erasure cannot be undone")
    common(erase)

    pub = sub.add_parser("publish", help="release differentially private reports (publish layer)")
    # Required: gold's own date may come from the data (its latest event or order day), which
    # one customer can move; the date a release is for must not depend on anyone's records.
    pub.add_argument("--as-of", type=as_of_date, required=True,
                     help="the date the reports are for (gold must hold it)")
    pub.add_argument("--epsilon", type=positive_float, default=None,
                     help="epsilon per report (default privacy.epsilon_per_report)")
    pub.add_argument("--report", action="append", choices=REPORTS, default=None,
                     help="only this report (repeatable; default all)")
    common(pub)

    show = sub.add_parser("show", help="show a table as a role may see it (conf/access.yaml)")
    show.add_argument("table", help="logical table name, e.g. gold.customer_360")
    show.add_argument("--role", required=True, help="analyst, marketing, sales, ...")
    show.add_argument("--limit", type=positive_int, default=20, help="rows to show (default 20)")
    common(show)

    rep = sub.add_parser("subject-report", help="everything held about one person")
    rep.add_argument("--customer-id", type=non_blank, required=True, help="the person's CRM customer id")
    rep.add_argument("--json", type=output_file, default=None, metavar="FILE", help="also write the report as JSON")
    common(rep)

    return {"erase": _cmd_erase, "publish": _cmd_publish, "show": _cmd_show,
            "subject-report": _cmd_subject_report}
