"""Role-based access: a role's view of a table, from the matrix in conf/access.yaml.

Deny by default: an unknown role, a table the role is not granted, and a column the matrix
does not list are all refused or removed. A granted table gives its listed columns, ``clear``
as stored, ``masked`` with strings cut to their first character plus ``***`` (other types
null), ``hidden`` removed; rows are filtered by ``where`` (a condition over the table's own
columns) and ``consent`` (only customers with marketing_consent in silver.customers).

This is enforced by the job suite, not by the storage: see conf/access.yaml for how it maps
onto Unity Catalog or Ranger grants in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.catalog import Catalog, parse_table_name
from lakehouse.config import Config, load_yaml_file, shown, string_value
from lakehouse.errors import AccessDeniedError, ConfigError
from lakehouse.gold import consenting_customers, read_silver_input
from lakehouse.session import query_error_logs_off

MODES = ("clear", "masked", "hidden")
# The silver input (lakehouse.gold.SILVER_INPUTS) whose latest profile says who consents.
CONSENT_INPUT = "customers"
CONSENT_TABLE = f"silver.{CONSENT_INPUT}"


@dataclass(frozen=True)
class TableGrant:
    columns: dict[str, str]
    where: str | None = None
    consent: bool = False


@dataclass(frozen=True)
class AccessMatrix:
    roles: dict[str, dict[str, TableGrant]] = field(default_factory=dict)

    def grant(self, role: str, table: str) -> TableGrant:
        if role not in self.roles:
            raise AccessDeniedError(
                f"unknown role '{role}' (roles: {', '.join(sorted(self.roles))}; see "
                f"conf/access.yaml)"
            )
        tables = self.roles[role]
        known = sorted({t for granted in self.roles.values() for t in granted})
        if table not in known:
            # Denied all the same (deny by default), but named for what it most likely is.
            raise AccessDeniedError(
                f"no role may read {table}: conf/access.yaml grants it to no role (check the "
                f"name; the tables it grants: {', '.join(known)})"
            )
        if table not in tables:
            raise AccessDeniedError(
                f"role '{role}' may not read {table} (conf/access.yaml grants it: "
                f"{', '.join(sorted(tables)) or 'nothing'})"
            )
        return tables[table]


def parse_matrix(raw: dict[str, Any], where: str = "access.yaml") -> AccessMatrix:
    """Validate the YAML mapping (one clear line naming the entry on a mistake)."""
    roles_raw = raw.get("roles")
    if not isinstance(roles_raw, dict):
        raise ConfigError(f"{where}: top-level 'roles' mapping is missing")
    roles: dict[str, dict[str, TableGrant]] = {}
    for role, tables in roles_raw.items():
        if not isinstance(tables or {}, dict):
            raise ConfigError(
                f"{where}: roles.{role} must be a mapping of table: grant, got {shown(tables)}"
            )
        grants: dict[str, TableGrant] = {}
        for table, entry in (tables or {}).items():
            parse_table_name(table)
            place = f"{where}: roles.{role}.{table}"
            if not isinstance(entry, dict) or not isinstance(entry.get("columns"), dict):
                raise ConfigError(f"{place} needs a 'columns' mapping")
            columns = {str(c): str(m) for c, m in entry["columns"].items()}
            bad = {c: m for c, m in columns.items() if m not in MODES}
            if bad:
                c, m = next(iter(bad.items()))
                raise ConfigError(
                    f"{place}.columns.{c} is '{m}' (use one of {', '.join(MODES)})"
                )
            condition = entry.get("where")
            if condition is not None:
                string_value(condition, f"{place}.where", "Spark SQL condition")
            consent = entry.get("consent") or False  # left empty (null): no consent filter
            if not isinstance(consent, bool):
                raise ConfigError(f"{place}.consent must be true or false, got {shown(consent)}")
            grants[table] = TableGrant(columns, condition, consent)
        roles[str(role)] = grants
    return AccessMatrix(roles)


def access_file(config: Config) -> Path:
    return config.conf_dir / config.get("privacy.access_file")


def load_matrix(config: Config) -> AccessMatrix:
    path = access_file(config)
    return parse_matrix(load_yaml_file(path, "the access matrix"), str(path))


def row_filter(condition: str) -> Column:
    """A grant's ``where`` as one condition. In parentheses: Spark reads an expression followed
    by a name as that expression under an alias, so an unfinished `country = 'DE' AND` would
    filter on `country = 'DE'` alone, without a word. The closing one on a line of its own: a
    condition may end in a `--` comment."""
    return F.expr(f"({condition}\n)")


def check_where(df: DataFrame, condition: str, place: str) -> None:
    """A row filter Spark cannot apply to the table (a column it does not have, bad syntax, not
    a boolean) is a mistake of the matrix: named there, not as a Spark error of the command."""
    try:
        with query_error_logs_off():
            _ = df.where(row_filter(condition)).schema  # analysed now, on Spark Connect too
    except AnalysisException as exc:
        # Spark's own sentence, without its error class and SQLSTATE.
        reason = re.sub(r"^\[[\w.]+\] | SQLSTATE: \w+$", "", exc.getMessage().strip())
        raise ConfigError(
            f"{place} {condition!r} is not a condition over the table's columns: {reason}"
        ) from None


GRANTED_ALIAS = "granted"


def masked(column: str, data_type: T.DataType) -> Column:
    """First character and '***' for strings (null stays null); null for any other type."""
    if isinstance(data_type, T.StringType):
        return F.when(
            F.col(column).isNotNull(), F.concat(F.substring(F.col(column), 1, 1), F.lit("***"))
        ).alias(column)
    return F.lit(None).cast(data_type).alias(column)


def apply_grant(df: DataFrame, grant: TableGrant, consenting_df: DataFrame | None) -> DataFrame:
    """Rows filtered, then columns kept, masked or removed as the grant says (pure)."""
    columns = df.columns
    if grant.where:
        df = df.where(row_filter(grant.where))
    if grant.consent:
        if consenting_df is None or "customer_key" not in df.columns:
            # No way to prove consent: nothing is shown rather than everything.
            df = df.where(F.lit(False))
        else:
            df = df.join(consenting_df.select("customer_key").distinct(), "customer_key",
                         how="left_semi").select(*columns)
    types = {f.name: f.dataType for f in df.schema.fields}
    selected = []
    for name in columns:
        mode = grant.columns.get(name, "hidden")
        if mode == "clear":
            selected.append(F.col(name))
        elif mode == "masked":
            selected.append(masked(name, types[name]))
    # The alias is a barrier: Spark resolves a filter or sort on a column the projection left
    # out against the plan below it, so `view(...).where("marketing_consent")` read a hidden
    # column (value by value, through repeated filters). Through an alias it cannot.
    return df.select(*selected).alias(GRANTED_ALIAS)


def view(spark: SparkSession, config: Config, role: str, table: str) -> DataFrame:
    """What ``role`` may see of ``table``; AccessDeniedError when the matrix does not allow it."""
    grant = load_matrix(config).grant(role, table)
    catalog = Catalog(config)
    df = catalog.read(spark, table) if catalog.exists(spark, table) else None
    if df is None:
        from lakehouse.errors import TableNotFoundError

        raise TableNotFoundError(f"table {table} does not exist yet at {catalog.path(table)}")
    if grant.where:
        check_where(df, grant.where, f"{access_file(config)}: roles.{role}.{table}.where")
    consenting = None
    if grant.consent and catalog.exists(spark, CONSENT_TABLE):
        # Read as gold reads it: a customer delivered twice with the same version is the
        # same row here as in gold's tables (see read_silver_input).
        consenting = consenting_customers(read_silver_input(spark, catalog, CONSENT_INPUT))
    return apply_grant(df, grant, consenting)
