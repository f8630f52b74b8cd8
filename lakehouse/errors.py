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


def error_line(exc: BaseException) -> str:
    """An error in one line: a LakehouseError's own text; for Spark's errors the Java error's
    first line and, when it names only a wrapper (Spark 4 wraps a task's error in
    FAILED_READ_FILE and the like), the deepest cause it gives ("not a gzip file")."""
    if isinstance(exc, LakehouseError):
        return str(exc)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # A Py4JJavaError's own first line names only the call; the Java error follows ": ".
    java = [line.lstrip(": ") for line in lines if line.startswith(":")]
    first = (java or lines or [type(exc).__name__])[0]
    causes = [line.removeprefix("Caused by:").strip() for line in lines
              if line.startswith("Caused by:")]
    if causes and causes[-1] not in first:
        first = f"{first} (caused by {causes[-1]})"
    return first

