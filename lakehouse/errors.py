"""Domain errors. The CLI turns any LakehouseError into one clear line and a non-zero exit."""

from __future__ import annotations


class LakehouseError(Exception):
    """A problem the user can fix: bad input, bad config, missing prerequisite."""

    exit_code = 2


class ConfigError(LakehouseError):
    """The configuration is missing, unreadable or invalid."""


class TableNotFoundError(LakehouseError):
    """A logical table name is unknown or the table was never written."""


class InvalidTableNameError(LakehouseError, ValueError):
    """A logical table name does not have the form layer.table."""


class DeltaJarsMissingError(LakehouseError):
    """Delta's JVM jars are not available to Spark."""


class DataDirError(LakehouseError):
    """The data directory cannot be read or written."""


class InputDataError(LakehouseError, ValueError):
    """An input file (raw data, path file) cannot be used; the message names the file and row."""


class SchemaChangeError(LakehouseError):
    """A schema change cannot be applied safely (a column changing type)."""


class QualityRuleError(LakehouseError):
    """A quality rule of severity 'fail' was violated."""


class VersionNotAvailableError(LakehouseError):
    """A table version or timestamp asked for does not exist, or its files were vacuumed."""


class ReconciliationError(LakehouseError):
    """A reconciliation check of the audit job failed; the message names the check."""

    exit_code = 1


class RestoreRefusedError(LakehouseError):
    """A restore the suite does not make (a table of the audit layer)."""


class SubjectNotFoundError(LakehouseError):
    """An erasure or subject report names a person the lakehouse holds nothing about."""


class PrivacyBudgetError(LakehouseError):
    """A differentially private release would exceed its privacy budget; nothing was written."""


class AccessDeniedError(LakehouseError):
    """A role asked for a table (or a column) the access matrix does not grant it."""


class MlflowStoreError(LakehouseError):
    """The MLflow tracking store or model registry cannot be reached or used."""
