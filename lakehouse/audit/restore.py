"""Restore a table to an earlier version, after showing what will change.

The restore is Delta's own RESTORE (`DeltaTable.restoreToVersion`): a new version whose content
equals the old one, so nothing is lost (the damaged version stays in the history) and the
restore itself appears in `lakehouse history` with operation RESTORE and its userMetadata.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable

from pyspark.sql import SparkSession

from lakehouse.audit.diff import TableDiff, diff_versions
from lakehouse.audit.lineage import USER_METADATA_CONF
from lakehouse.audit.timetravel import check_version
from lakehouse.catalog import Catalog, parse_table_name
from lakehouse.errors import RestoreRefusedError


def check_restorable(name: str) -> None:
    """Refuse a table of the audit layer: it is the lake's own record of what happened, and a
    restore would rewrite it. Restoring the privacy ledger gave back epsilon already spent
    (publish then released past `privacy.epsilon_total`), restoring the suppression list let
    an erased person's re-sent record land again, and the erasure log, lineage and the
    hash-chained reconciliation are evidence. Their history stays readable (`history`, `diff`).
    """
    if parse_table_name(name).layer == "audit":
        raise RestoreRefusedError(
            f"{name} is a table of the audit layer (the lake's record of runs, erasures and "
            f"privacy budget spent) and is not restored; its versions stay readable with "
            f"`lakehouse history` and `lakehouse diff`"
        )


def restore_plan(
    spark: SparkSession, catalog: Catalog, name: str, version: int, sample: int = 5
) -> TableDiff:
    """What restoring `name` to `version` changes: the diff from the current version to it."""
    check_restorable(name)
    check_version(spark, catalog, name, version)
    current = catalog.current_version(spark, name)
    return diff_versions(spark, catalog, name, current, version, sample=sample)


def restore_table(
    spark: SparkSession, catalog: Catalog, name: str, version: int, reason: str = "",
    echo: Callable[[str], None] = lambda line: None,
) -> int:
    """Restore and return the new version. The commit says who restored and from where.

    For a silver table, silver's progress is then set back to where the restore took rows out
    (lakehouse.silver.job.reread_after_restore; ``echo`` gets what was set back), so the
    next silver run brings back the rows the restored version lacks, with today's rules.
    A table of the audit layer is refused (check_restorable).
    """
    check_restorable(name)
    check_version(spark, catalog, name, version)
    before = catalog.current_version(spark, name)
    previous = spark.conf.get(USER_METADATA_CONF, None)
    who = _user()
    spark.conf.set(
        USER_METADATA_CONF,
        f"restore to version {version} by {who} via lakehouse restore{(': ' + reason) if reason else ''}",
    )
    try:
        catalog.delta_table(spark, name).restoreToVersion(version)
    finally:
        if previous is None:
            spark.conf.unset(USER_METADATA_CONF)
        else:
            spark.conf.set(USER_METADATA_CONF, previous)
    restored = catalog.current_version(spark, name)
    if name.startswith("silver."):
        from lakehouse.silver.job import reread_after_restore

        for line in reread_after_restore(spark, catalog.config, name, before, version):
            echo(line)
    return restored


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def confirm(question: str, ask: Callable[[str], str] = input) -> bool:
    return ask(f"{question} [y/N] ").strip().lower() in ("y", "yes")
