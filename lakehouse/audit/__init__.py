"""Audit layer: table history, time travel, diffs, restores, reconciliation, lineage,
reproducible runs and a tamper-evident hash chain over the audit records.

Modules (import from them directly):

* `timetravel`: which versions a table has, version / timestamp resolution with clear errors
* `history`: `DESCRIBE HISTORY` of every table into audit.table_history, incrementally
* `diff`: rows added, removed and changed between two versions of a table
* `restore`: restore a table to an earlier version after showing what changes
* `reconcile`: bronze = silver + quarantine + duplicates, gold vs silver figures
* `lineage`: what each pipeline stage read and wrote (audit.lineage + OpenLineage JSON)
* `reproduce`: rebuild a recorded run's output from the exact input versions it read
* `chain`: the hash chain over audit records and its verification
* `job`: the `audit` pipeline stage; `commands`: the CLI commands
"""

from __future__ import annotations

HISTORY_TABLE = "audit.table_history"
LINEAGE_TABLE = "audit.lineage"
RECONCILIATION_TABLE = "audit.reconciliation"
# Audit tables whose rows carry the hash chain (verified by `lakehouse audit verify`).
CHAINED_TABLES = (HISTORY_TABLE, LINEAGE_TABLE, RECONCILIATION_TABLE)
