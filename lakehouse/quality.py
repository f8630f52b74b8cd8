"""Data-quality rules as data (conf/quality.yaml): evaluation, quarantine rows, dq metrics.

Rules are evaluated as built-in column expressions over a whole batch: each rule becomes one
``reason or null`` column, and the failures of a row are gathered into ``_failures`` (an array
of rule, severity, reason). Nothing is collected per rule: the counts of every rule, the
completeness of every column and the batch's uniqueness come out of one aggregation
(``quality_figures``), a single bounded row per source.

Severities: ``warn`` keeps the row and counts it; ``drop`` sends it to silver.quarantine (one
quarantine row per record, under the first failed drop rule, with every failed reason);
``fail`` stops the run before anything is committed (``check_fail_rules``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.config import Config, load_yaml_file
from lakehouse.errors import ConfigError, QualityRuleError
from lakehouse.privacy.pseudonym import trim_whitespace
from lakehouse.privacy.redact import redact_contact_data
from lakehouse.sources import SourceSpec

QUALITY_FILE = "quality.yaml"
SEVERITIES = ("warn", "drop", "fail")
KINDS = (
    "not_null", "unique", "range", "regex", "allowed_values", "referential", "castable",
    "not_after_arrival",
)
_NEEDS = {
    "not_null": ("column",),
    "unique": ("columns",),
    "range": ("column",),
    "regex": ("column", "pattern"),
    "allowed_values": ("column", "values"),
    "referential": ("column", "ref_table", "ref_column"),
    "castable": (),
    "not_after_arrival": ("column",),
}
# Slack of a not_after_arrival rule: clocks and time zones of the systems that deliver.
DEFAULT_ARRIVAL_TOLERANCE_HOURS = 24
DEFAULT_COMPLETENESS = 0.95
# Array of the failed rules of one row.
FAILURE_TYPE = T.ArrayType(
    T.StructType(
        [
            T.StructField("rule", T.StringType()),
            T.StructField("severity", T.StringType()),
            T.StructField("reason", T.StringType()),
        ]
    )
)
QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType()),
        T.StructField("natural_key", T.StringType()),
        T.StructField("rule", T.StringType()),
        T.StructField("severity", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("raw", T.StringType()),
        T.StructField("source_file", T.StringType()),
        T.StructField("bronze_batch_id", T.LongType()),
        T.StructField("bronze_version", T.LongType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("quarantined_at", T.TimestampType()),
    ]
)
DQ_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("table", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("column", T.StringType()),
        T.StructField("rule", T.StringType()),
        T.StructField("metric", T.StringType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("threshold", T.DoubleType()),
        T.StructField("passed", T.BooleanType()),
        T.StructField("rows", T.LongType()),
        T.StructField("bronze_from_version", T.LongType()),
        T.StructField("bronze_to_version", T.LongType()),
        T.StructField("measured_at", T.TimestampType()),
    ]
)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    severity: str
    columns: tuple[str, ...]
    threshold: float
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str:
        return self.columns[0]


@dataclass(frozen=True)
class SourceRules:
    source: str
    rules: tuple[Rule, ...]
    completeness: Mapping[str, float]
    default_completeness: float = DEFAULT_COMPLETENESS

    def completeness_threshold(self, column: str) -> float:
        return float(self.completeness.get(column, self.default_completeness))


# -- loading ---------------------------------------------------------------------------------


def load_quality(
    config: Config,
    sources: Mapping[str, SourceSpec],
    derived: Mapping[str, Iterable[str]] | None = None,
    produced: Mapping[str, str] | None = None,
) -> dict[str, SourceRules]:
    """Rules of every declared source from conf/quality.yaml, validated (names key and file).

    ``derived`` lists, per source, the columns silver adds that rules may name
    (customer_key, amount_eur, ...); ``produced``: see parse_quality.
    """
    path = Path(config.conf_dir) / QUALITY_FILE
    doc = load_yaml_file(path, "data-quality rules")
    return parse_quality(doc, sources, derived or {}, str(path), produced)


def check_patterns(spark: SparkSession, rules: Mapping[str, SourceRules], where: str) -> None:
    """Every regex rule's pattern compiles as Spark's (Java) regular expression, else one
    ConfigError naming the rule: a bad pattern would otherwise fail inside the silver run with
    the JVM's message and no rule named. One constant expression per pattern (no data read),
    all in one Spark job; only when that fails, one job per pattern finds the rule to name."""
    regex_rules = [(source, rule) for source, source_rules in rules.items()
                   for rule in source_rules.rules if rule.kind == "regex"]

    def compiles(*patterns: str) -> bool:
        try:
            spark.range(1).select(*[F.lit("").rlike(whole_match(p)) for p in patterns]).collect()
        except Exception:  # noqa: BLE001 - Spark's error for a bad pattern varies
            return False
        return True

    if not regex_rules or compiles(*[rule.params["pattern"] for _, rule in regex_rules]):
        return
    for source, rule in regex_rules:
        pattern = rule.params["pattern"]
        if not compiles(pattern):
            raise ConfigError(
                f"{where}: {source} rule '{rule.name}': pattern '{pattern}' is not a valid "
                f"Java regular expression{_python_regex_hint(pattern)}"
            )


def _python_regex_hint(pattern: str) -> str:
    """What Python's re says is wrong with a pattern (the JVM's message does not say)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f" ({exc})"
    return ""


def parse_quality(
    doc: Mapping[str, Any],
    sources: Mapping[str, SourceSpec],
    derived: Mapping[str, Iterable[str]],
    where: str = "quality rules",
    produced: Mapping[str, str] | None = None,
) -> dict[str, SourceRules]:
    """Rules of every source, every value checked here: a mistake in the file is one
    ConfigError naming the file, the source and the rule, before any stage reads data.

    ``produced`` maps each silver table a source writes to that source
    (``{"silver.customers": "crm_customers"}``); when given, a referential rule must name one
    of them and a column that table can hold.
    """
    _mapping(doc, where, ("defaults", "sources"))
    defaults = _mapping(doc.get("defaults"), f"{where}: defaults",
                        ("castable_severity", "completeness_threshold"))
    cast_severity = defaults.get("castable_severity", "drop")
    if cast_severity not in SEVERITIES:
        raise ConfigError(f"{where}: defaults.castable_severity must be one of {SEVERITIES}")
    default_completeness = _number_in_unit(
        defaults.get("completeness_threshold", DEFAULT_COMPLETENESS),
        f"{where}: defaults.completeness_threshold",
    )
    declared = doc.get("sources") or {}
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{where}: 'sources' must be a mapping of source name to rules")
    unknown = sorted(set(declared) - set(sources))
    if unknown:
        raise ConfigError(f"{where}: rules for undeclared source(s) {', '.join(unknown)}")
    referable = None
    if produced is not None:
        referable = {
            table: {c for c in sources[name].columns if c not in sources[name].pii}
            | set(derived.get(name, ()))
            for table, name in produced.items()
        }
    result: dict[str, SourceRules] = {}
    for name, spec in sources.items():
        entry = _mapping(declared.get(name), f"{where}: sources.{name}",
                         ("rules", "completeness"))
        known_columns = set(spec.columns) | set(derived.get(name, ()))
        rules = [
            Rule(f"not_null:{k}", "not_null", "drop", (k,), DEFAULT_COMPLETENESS)
            for k in spec.natural_key
        ]
        rules.append(Rule("castable", "castable", cast_severity, (), DEFAULT_COMPLETENESS))
        listed = entry.get("rules") or []
        if not isinstance(listed, list):
            raise ConfigError(f"{where}: {name}.rules must be a list of rules")
        for i, raw_rule in enumerate(listed):
            rule = _parse_rule(raw_rule, spec, known_columns, referable,
                               f"{where}: {name}.rules[{i}]")
            rules.append(rule)
        names = [r.name for r in rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"{where}: source {name} has repeated rule name(s) {', '.join(repeated)}: "
                f"give them distinct 'name's"
            )
        completeness = dict(_mapping(entry.get("completeness"), f"{where}: {name}.completeness",
                                     spec.columns))
        for column, share in completeness.items():
            completeness[column] = _number_in_unit(share, f"{where}: {name}.completeness.{column}")
        result[name] = SourceRules(name, tuple(rules), completeness, default_completeness)
    return result


_COMMON_KEYS = ("kind", "severity", "name", "threshold")
_OPTIONAL = {"range": ("min", "max"), "not_after_arrival": ("tolerance_hours",)}
_NUMERIC_TYPES = ("int", "long", "double")
_SCALAR = (str, int, float, bool)


def _parse_rule(
    raw: Any, source: SourceSpec, known_columns: set[str],
    referable: Mapping[str, set[str]] | None, where: str,
) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with kind and severity")
    kind, severity = raw.get("kind"), raw.get("severity")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    _mapping(raw, f"{where} ({kind})", (*_COMMON_KEYS, *_NEEDS[kind], *_OPTIONAL.get(kind, ())))
    missing = [k for k in _NEEDS[kind] if k not in raw]
    if missing:
        raise ConfigError(f"{where}: a {kind} rule needs {', '.join(missing)}")
    if kind == "unique":
        listed = raw["columns"]
        if (not isinstance(listed, list) or not listed
                or not all(isinstance(c, str) for c in listed) or len(set(listed)) != len(listed)):
            raise ConfigError(f"{where}: columns must be a non-empty list of distinct column names")
        columns = tuple(listed)
    elif "column" in raw:
        if not isinstance(raw["column"], str):
            raise ConfigError(f"{where}: column must be a column name, not {raw['column']!r}")
        columns = (raw["column"],)
    else:
        columns = ()
    undeclared = [c for c in columns if c not in known_columns]
    if undeclared:
        raise ConfigError(f"{where}: unknown column(s) {', '.join(undeclared)}")
    col_type = source.columns.get(columns[0]) if columns else None
    if kind == "range":
        _check_range(raw, col_type, where)
    if kind == "regex" and (not isinstance(raw["pattern"], str) or not raw["pattern"]):
        raise ConfigError(f"{where}: pattern must be a non-empty (Java) regular expression")
    if kind == "allowed_values":
        values = raw["values"]
        if not isinstance(values, list) or not values or not all(
            isinstance(v, _SCALAR) for v in values
        ):
            raise ConfigError(f"{where}: values must be a non-empty list of plain values")
    if kind == "referential":
        _check_reference(raw, referable, where)
    if kind == "not_after_arrival" and col_type != "timestamp":
        raise ConfigError(
            f"{where}: not_after_arrival needs a timestamp column; "
            f"{columns[0]} is declared {col_type or 'by silver'}"
        )
    tolerance = raw.get("tolerance_hours", DEFAULT_ARRIVAL_TOLERANCE_HOURS)
    if kind == "not_after_arrival" and (
        isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0
    ):
        raise ConfigError(f"{where}: tolerance_hours must be a number of hours >= 0")
    default_name = f"{kind}:{','.join(columns)}" if columns else kind
    name = raw.get("name") or default_name
    if not isinstance(name, str) or not name.strip() or any(ch in name for ch in "`\n\r\t"):
        raise ConfigError(f"{where}: name must be one line of text without backticks")
    threshold = _number_in_unit(raw.get("threshold", DEFAULT_COMPLETENESS), f"{where}: threshold")
    params = {k: v for k, v in raw.items() if k not in _COMMON_KEYS}
    return Rule(name, kind, severity, columns, threshold, params)


def _check_range(raw: Mapping[str, Any], col_type: str | None, where: str) -> None:
    """min / max: numbers, or for a date or timestamp column dates; min not above max."""
    bounds = {k: raw[k] for k in ("min", "max") if raw.get(k) is not None}
    if not bounds:
        raise ConfigError(f"{where}: a range rule needs min and/or max")
    if col_type in ("string", "boolean"):
        # Compared with a number, a text value would fail inside Spark on the first row.
        raise ConfigError(
            f"{where}: a range rule needs a numeric, date or timestamp column, and this one is "
            f"declared {col_type} in sources.yaml"
        )
    temporal = col_type in ("date", "timestamp")
    for key, value in bounds.items():
        if temporal:
            ok = isinstance(value, date) or (
                isinstance(value, str) and _parses_as_datetime(value))
            what = "a date such as 2026-01-31 (or an ISO timestamp)"
        else:
            ok = not isinstance(value, bool) and isinstance(value, int | float)
            what = "a number"
        if not ok:
            raise ConfigError(f"{where}: {key} must be {what}, not {value!r}")
    if len(bounds) == 2 and not temporal and bounds["min"] > bounds["max"]:
        raise ConfigError(f"{where}: min {bounds['min']} is above max {bounds['max']}")


def _parses_as_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_reference(
    raw: Mapping[str, Any], referable: Mapping[str, set[str]] | None, where: str
) -> None:
    table, column = raw["ref_table"], raw["ref_column"]
    if not isinstance(table, str) or not isinstance(column, str):
        raise ConfigError(f"{where}: ref_table and ref_column must be names")
    if referable is None:
        return
    if table not in referable:
        raise ConfigError(
            f"{where}: ref_table {table} is not a silver table a source writes "
            f"(one of {', '.join(sorted(referable))})"
        )
    if column not in referable[table]:
        raise ConfigError(
            f"{where}: ref_column {column} is not a column of {table} "
            f"(one of {', '.join(sorted(referable[table]))})"
        )


def _number_in_unit(value: Any, where: str) -> float:
    """A share between 0 and 1 (thresholds): a clear error for text, booleans or percentages."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{where} must be a number between 0 and 1 (e.g. 0.95), not {value!r}")
    return float(value)


def _mapping(value: Any, where: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    """``value`` as a mapping (None: empty) whose keys are all in ``allowed``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, not {type(value).__name__}")
    allowed = tuple(allowed)
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return value


# -- evaluation (pure) -----------------------------------------------------------------------


def _shown(column: str, value: Column, pii: Iterable[str]) -> Column:
    """The value as it may appear in a reason: personal data is never written out."""
    if column in set(pii):
        return F.lit("<personal data withheld>")
    # Redacted too: a value in the wrong column, or a free text, may hold an email or phone.
    return F.concat(F.lit("'"), redact_contact_data(value.cast("string")), F.lit("'"))


def whole_match(pattern: str) -> str:
    """A regex rule's pattern anchored at both ends: rlike finds a match anywhere, the rule
    says the whole value must match (a 5-digit pattern must not accept 'abc123456789')."""
    return f"^(?:{pattern})$"


def _yaml_text(value: Any) -> str:
    """An allowed value as Spark writes it (YAML's True is Spark's 'true')."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _reason(
    rule: Rule, pii: Iterable[str], ref_flag: str | None, helper: str, col_type: str | None,
) -> Column:
    """Column: the readable reason this rule fails for the row, or null when it passes.

    ``helper``: the column with_rule_results computed for it (unique: distinct keys);
    ``col_type``: the Spark type of the rule's column."""
    kind = rule.kind
    if kind == "castable":
        return F.when(F.size("_cast_errors") > 0, F.array_join("_cast_errors", "; "))
    if kind == "unique":
        cols = ", ".join(rule.columns)
        return F.when(
            F.col(helper) > 1,
            F.format_string(f"{cols} shared by %d records with different keys", F.col(helper)),
        )
    column = F.col(rule.column)
    shown = _shown(rule.column, column, pii)
    if kind == "not_null":
        return F.when(column.isNull(), F.lit(f"{rule.column} is missing"))
    if kind == "range":
        lo, hi = rule.params.get("min"), rule.params.get("max")
        outside = F.lit(False)
        if lo is not None:
            outside = outside | (column < F.lit(lo))
        if hi is not None:
            outside = outside | (column > F.lit(hi))
        bounds = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
        return F.when(
            column.isNotNull() & outside,
            F.concat(F.lit(f"{rule.column} = "), shown, F.lit(f" is outside {bounds}")),
        )
    if kind == "not_after_arrival":
        # Bronze's _ingested_at is data, recorded once at landing: the same bronze rows give
        # the same verdict on every silver run or rebuild, whatever the clock says then.
        hours = float(rule.params.get("tolerance_hours", DEFAULT_ARRIVAL_TOLERANCE_HOURS))
        latest = F.col("_ingested_at") + F.make_dt_interval(secs=F.lit(hours * 3600.0))
        return F.when(
            column.isNotNull() & (column > latest),
            F.concat(F.lit(f"{rule.column} = "), shown,
                     F.lit(" is later than the record's arrival ("),
                     F.date_format("_ingested_at", "yyyy-MM-dd HH:mm:ss"),
                     F.lit(f" UTC) by more than {hours:g} h")),
        )
    if kind == "regex":
        return F.when(
            column.isNotNull() & ~column.cast("string").rlike(whole_match(rule.params["pattern"])),
            F.concat(F.lit(f"{rule.column} "), shown, F.lit(" does not match the pattern")),
        )
    if kind == "allowed_values":
        values = rule.params["values"]
        # Compared as the column's type: as text, a boolean column's 'true' never equals
        # YAML's True and a double's '1.0' never equals 1. A value that is not of that type
        # (try_cast: null) matches nothing.
        allowed = [F.lit(_yaml_text(v)).try_cast(col_type or "string") for v in values]
        return F.when(
            column.isNotNull() & ~column.isin(*allowed),
            F.concat(F.lit(f"{rule.column} = "), shown,
                     F.lit(f" is not one of {', '.join(_yaml_text(v) for v in values)}")),
        )
    if kind == "referential":
        target = f"{rule.params['ref_table']}.{rule.params['ref_column']}"
        return F.when(
            column.isNotNull() & F.col(ref_flag).isNull(),
            F.concat(F.lit(f"{rule.column} = "), shown, F.lit(f" not found in {target}")),
        )
    raise ValueError(f"unknown rule kind {kind}")


def with_rule_results(
    df: DataFrame,
    rules: SourceRules,
    natural_key: Iterable[str],
    pii: Iterable[str] = (),
    ref_keys: Mapping[str, DataFrame] | None = None,
) -> DataFrame:
    """Adds ``_failures`` (array of rule, severity, reason) and ``_drop_rule``/``_drop_reason``.

    ``df`` holds typed columns and ``_cast_errors`` (array of strings). ``ref_keys`` maps a
    referenced table name to a one-column DataFrame of the keys that exist there.
    """
    key_cols = list(natural_key)
    pii = tuple(pii)
    out = df
    ref_flags: dict[str, str] = {}
    for i, rule in enumerate(rules.rules):
        if rule.kind == "unique":
            window = Window.partitionBy(*rule.columns).rowsBetween(
                Window.unboundedPreceding, Window.unboundedFollowing
            )
            has_key = F.lit(True)
            for k in key_cols:
                has_key = has_key & F.col(k).isNotNull()
            keyed = F.when(has_key, F.concat_ws("|", *key_cols))
            distinct_keys = F.size(F.collect_set(keyed).over(window))
            is_complete = F.lit(True)
            for c in rule.columns:
                is_complete = is_complete & F.col(c).isNotNull()
            # Helper columns are named by position: a rule's name is free text.
            out = out.withColumn(f"_uniq_{i}", F.when(is_complete, distinct_keys))
        elif rule.kind == "referential":
            table = str(rule.params["ref_table"])
            if ref_keys is None or table not in ref_keys:
                raise ValueError(f"rule {rule.name} needs the keys of {table}")
            flag = f"_ref_ok_{i}"
            keys = (
                ref_keys[table]
                .select(F.col(ref_keys[table].columns[0]).alias(f"_ref_key_{i}"))
                .where(F.col(f"_ref_key_{i}").isNotNull())
                .distinct()
                .withColumn(flag, F.lit(True))
            )
            out = out.join(keys, out[rule.column] == keys[f"_ref_key_{i}"], how="left").drop(
                f"_ref_key_{i}"
            )
            ref_flags[rule.name] = flag
    # Each reason is computed once into its own column, then gathered: the plan stays small.
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    reasons = {
        f"_reason_{i}": _reason(r, pii, ref_flags.get(r.name), f"_uniq_{i}",
                                types.get(r.columns[0]) if r.columns else None)
        for i, r in enumerate(rules.rules)
    }
    out = out.withColumns(reasons)
    failures = F.array(
        *[
            F.when(
                F.col(f"_reason_{i}").isNotNull(),
                F.struct(
                    F.lit(r.name).alias("rule"),
                    F.lit(r.severity).alias("severity"),
                    F.col(f"_reason_{i}").alias("reason"),
                ),
            )
            for i, r in enumerate(rules.rules)
        ]
    )
    # No lambda functions on this per-row path (array_compact, and the drop rules' reasons
    # gathered directly): a lambda keeps Spark from compiling the whole projection.
    failures = F.array_compact(failures).cast(FAILURE_TYPE)
    drops = [(F.col(f"_reason_{i}"), r.name) for i, r in enumerate(rules.rules)
             if r.severity == "drop"]
    drop_reasons = [reason for reason, _ in drops]
    # The first failing drop rule in the order of the rules, and every failing one's reason.
    drop_rule = F.coalesce(*[F.when(reason.isNotNull(), F.lit(name)) for reason, name in drops],
                           F.lit(None).cast("string"))
    drop_reason = (F.array_join(F.array_compact(F.array(*drop_reasons)), "; ") if drop_reasons
                   else F.lit(None).cast("string"))
    helpers = [c for c in out.columns if c.startswith(("_uniq_", "_ref_ok_", "_reason_"))]
    return (
        out.withColumns(
            {
                "_failures": failures,
                "_drop_rule": drop_rule,
                "_drop_reason": F.when(drop_rule.isNotNull(), drop_reason),
            }
        )
        .drop(*helpers)
    )


def failed_rule(name: str) -> Column:
    """Whether the row's ``_failures`` hold rule ``name`` (no lambda: see with_rule_results)."""
    return F.array_contains(F.col("_failures.rule"), name)


def failed_rule_reason(name: str) -> Column:
    """The reason rule ``name`` gave in the row's ``_failures`` (null where it did not fail)."""
    position = F.array_position(F.col("_failures.rule"), name).cast("int")
    return F.element_at(F.col("_failures.reason"), position)


def quality_figures(
    evaluated_df: DataFrame, rules: SourceRules, columns: Iterable[str], natural_key: Iterable[str]
) -> DataFrame:
    """One row: rows, non-null count per column, failures per rule, distinct keys.

    Only rows that parsed (not malformed) are measured; malformed lines are counted apart.
    """
    parsed = F.col("_is_malformed") == F.lit(False)
    key_cols = list(natural_key)
    has_key = F.lit(True)
    for k in key_cols:
        has_key = has_key & F.col(k).isNotNull()
    # concat_ws skips nulls: a record without its key must not count as the key ''.
    key = F.when(has_key, F.concat_ws("|", *key_cols))
    aggs = [
        F.count(F.lit(1)).alias("rows_in"),
        F.sum(F.when(~parsed, 1).otherwise(0)).alias("malformed"),
        F.sum(F.when(parsed, 1).otherwise(0)).alias("parsed"),
        F.sum(F.when(parsed & F.col("_drop_rule").isNotNull(), 1).otherwise(0)).alias("dropped"),
        F.sum(
            F.when(
                parsed & F.col("_drop_rule").isNull()
                & F.array_contains(F.col("_failures.severity"), "warn"), 1,
            ).otherwise(0)
        ).alias("warned"),
        F.sum(F.when(parsed & F.col("_rescued_data").isNotNull(), 1).otherwise(0)).alias(
            "rescued"
        ),
        F.count_distinct(F.when(parsed, key)).alias("distinct_keys"),
    ]
    aggs += [
        F.sum(F.when(parsed & F.col(c).isNotNull(), 1).otherwise(0)).alias(f"nn__{c}")
        for c in columns
    ]
    aggs += [
        F.sum(
            F.when(parsed & failed_rule(r.name), 1)
            .otherwise(0)
        ).alias(f"fail__{r.name}")
        for r in rules.rules
    ]
    return evaluated_df.agg(*aggs)


def check_fail_rules(figures: Mapping[str, Any], rules: SourceRules, evaluated_df: DataFrame,
                     natural_key: Iterable[str]) -> None:
    """Raise QualityRuleError naming the first violated fail-severity rule (nothing written)."""
    for rule in rules.rules:
        failed = int(figures.get(f"fail__{rule.name}") or 0)
        if rule.severity == "fail" and failed:
            example = (
                evaluated_df.where(failed_rule(rule.name))
                .select(
                    F.concat_ws("|", *natural_key).alias("k"),
                    failed_rule_reason(rule.name).alias("reason"),
                )
                .first()
            )
            detail = f" (e.g. key {example['k']!r}: {example['reason']})" if example else ""
            raise QualityRuleError(
                f"quality rule '{rule.name}' (severity fail) of source {rules.source} failed "
                f"for {failed} row(s){detail}; nothing was committed: fix the input or the rule "
                f"in conf/quality.yaml"
            )


def metric_rows(
    figures: Mapping[str, Any],
    rules: SourceRules,
    columns: Iterable[str],
    *,
    run_id: str,
    table: str,
    extra_counts: Mapping[str, int],
    versions: tuple[int | None, int | None],
    measured_at: datetime,
) -> list[tuple]:
    """Rows of audit.dq_metrics for one source and run (a bounded list: columns + rules)."""
    parsed = int(figures["parsed"] or 0)
    source = rules.source
    lo, hi = versions

    def row(column, rule, metric, value, threshold=None):
        passed = None if threshold is None or value is None else bool(value >= threshold)
        return (run_id, table, source, column, rule, metric,
                None if value is None else float(value),
                None if threshold is None else float(threshold), passed, parsed, lo, hi,
                measured_at)

    out = []
    for c in columns:
        value = (int(figures[f"nn__{c}"] or 0) / parsed) if parsed else None
        out.append(row(c, None, "completeness", value, rules.completeness_threshold(c)))
    for r in rules.rules:
        failed = int(figures[f"fail__{r.name}"] or 0)
        value = (1.0 - failed / parsed) if parsed else None
        out.append(row(",".join(r.columns) or None, r.name, "validity", value, r.threshold))
        out.append(row(",".join(r.columns) or None, r.name, "failed_rows", failed))
    uniq = (int(figures["distinct_keys"] or 0) / parsed) if parsed else None
    out.append(row(None, None, "uniqueness", uniq))
    for name in ("malformed", "dropped", "warned", "rescued"):
        out.append(row(None, None, name, int(figures[name] or 0)))
    for name, value in extra_counts.items():
        out.append(row(None, None, name, int(value)))
    return out


def failing_metrics(rows: Iterable[tuple]) -> list[str]:
    """Readable lines for metrics below their threshold."""
    lines = []
    for r in rows:
        _run, table, _src, column, rule, metric, value, threshold, passed = r[:9]
        if passed is False:
            what = f"{table}.{column}" if column else table
            what += f" [{rule}]" if rule else ""
            lines.append(f"  dq FAILING: {what} {metric} {value:.3f} < {threshold:.3f}")
    return lines


# -- quarantine rows (pure) ------------------------------------------------------------------


def is_quarantined() -> Column:
    """An evaluated row that goes to silver.quarantine: malformed, or dropped by a rule."""
    return F.col("_is_malformed") | F.col("_drop_rule").isNotNull()


def to_quarantine_rows(
    df: DataFrame, source: str, natural_key: Iterable[str], run_id: str, raw: Column
) -> DataFrame:
    """Rows of silver.quarantine: malformed lines (bronze's reason) and dropped records.

    ``df`` holds bronze metadata plus ``_drop_rule``/``_drop_reason``; ``raw`` is the raw
    record as it may be stored (see silver: personal data is withheld for PII sources).
    """
    key = F.concat_ws("|", *[trim_whitespace(k) for k in natural_key])
    malformed = F.col("_is_malformed")
    return (
        df.where(is_quarantined())
        .select(
            F.lit(source).alias("source"),
            F.when(key != "", key).alias("natural_key"),
            F.when(malformed, F.lit("malformed")).otherwise(F.col("_drop_rule")).alias("rule"),
            F.lit("drop").alias("severity"),
            F.when(malformed, F.coalesce(F.col("_malformed_reason"), F.lit("malformed line")))
            .otherwise(F.col("_drop_reason"))
            .alias("reason"),
            raw.alias("raw"),
            F.col("_source_file").alias("source_file"),
            F.col("_batch_id").cast("long").alias("bronze_batch_id"),
            F.col("_commit_version").cast("long").alias("bronze_version"),
            F.lit(run_id).alias("run_id"),
            F.current_timestamp().alias("quarantined_at"),
        )
    )
