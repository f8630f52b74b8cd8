"""Generic cleanse over a source declaration: typed columns, conversion errors, dedup.

Bronze keeps every declared field as the string it arrived as. Here each becomes its declared
type. A value that does not convert is not turned into a silent null: the row gets a readable
entry in ``_cast_errors`` (the ``castable`` quality rule then warns, drops or fails on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.privacy.pseudonym import pseudonym, trim_whitespace
from lakehouse.privacy.redact import redact_contact_data
from lakehouse.sources import SourceSpec

# Spark's string casts are lenient in ways that would hide defects: '2026' casts to a date,
# 'NaN' and 'Infinity' to doubles, and (for foldable values) 'yesterday' to a date. A value
# must look like its type before it is cast.
_SHAPES = {
    "int": r"^[+-]?[0-9]+$",
    "long": r"^[+-]?[0-9]+$",
    "double": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    # ISO date and time, optional fraction and offset ('Z', '+01:00', '+0100', '+01'); 'T'
    # and 'Z' in either case (RFC 3339 allows 't' and 'z').
    "timestamp": (
        r"(?i)^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
    ),
    "boolean": r"^(?i)(true|false|t|f|yes|no|y|n|1|0)$",
}
# Bronze metadata carried through silver's transforms (CDF adds _commit_version).
CARRIED = (
    "_raw",
    "_is_malformed",
    "_malformed_reason",
    "_rescued_data",
    "_source_file",
    "_batch_id",
    "_ingested_at",
    "_commit_version",
    "_quarantine_raw",
    "_landed_fields",
)


def clean_string(value: Column) -> Column:
    """Trimmed of whitespace (a tab, a no-break space: trim_whitespace); empty (a blank CSV
    field) is null."""
    trimmed = trim_whitespace(value)
    return F.when(trimmed != "", trimmed)


def typed_value(text: Column, col_type: str) -> Column:
    """A cleaned string converted to ``col_type``; null when it does not convert."""
    if col_type == "string":
        return text
    if col_type == "timestamp":
        # Offsets are honoured by the cast; the instant is stored (UTC view). Spark's cast
        # takes 'T' and 'Z' in upper case only.
        return F.when(text.rlike(_SHAPES["timestamp"]), F.upper(text).try_cast("timestamp"))
    value = text.try_cast(col_type)
    if col_type == "double":
        # A number too large for a double (1e400) casts to Infinity without an error.
        value = F.when(F.abs(value) < F.lit(float("inf")), value)
    return F.when(text.rlike(_SHAPES[col_type]), value)


def cast_error(column: str, text: Column, typed: Column, col_type: str, pii: bool) -> Column:
    """Reason when a present value did not convert, else null."""
    # Redacted: a value in the wrong column (an email slipped into 'country') is still PII.
    shown = (F.lit("<personal data withheld>") if pii
             else F.concat(F.lit("'"), redact_contact_data(text), F.lit("'")))
    return F.when(
        text.isNotNull() & typed.isNull(),
        F.concat(F.lit(f"{column} "), shown, F.lit(f" is not a valid {col_type}")),
    )


def with_typed_columns(bronze_df: DataFrame, source: SourceSpec) -> DataFrame:
    """Declared columns typed and trimmed, ``_cast_errors`` (array), bronze metadata kept."""
    carried = [c for c in CARRIED if c in bronze_df.columns]
    # Cleaned in a projection of its own: each cleaned value is used four or five times below
    # (shape, cast, error), and inlined it was computed that often (typing a 1.5M-row source:
    # 4.0 s in two steps, 4.7 s in one, with Spark's space-only trim).
    cleaned = bronze_df.select(
        *[clean_string(F.col(c)).alias(c) for c in source.columns], *carried
    )
    # Typed next to the cleaned text, so the errors below compare two columns instead of
    # converting every value again; their array is built only for the rare row where a value
    # did not convert (scale m's 2.5M IoT readings: 3.1 s instead of 6.2 s, the same rows).
    converted = [(c, t) for c, t in source.columns.items() if t != "string"]
    typed = cleaned.select(
        *[F.col(c).alias(f"_text_{c}") for c, _ in converted],
        *[typed_value(F.col(c), t).alias(c) for c, t in source.columns.items()],
        *carried,
    )
    errors = [cast_error(c, F.col(f"_text_{c}"), F.col(c), t, c in source.pii)
              for c, t in converted]
    # array_compact, not a filter with a lambda: a lambda keeps Spark from compiling the
    # projection.
    no_errors = F.array().cast("array<string>")
    cast_errors = (
        F.when(F.coalesce(*errors).isNotNull(), F.array_compact(F.array(*errors)))
        .otherwise(no_errors)
        if errors else no_errors
    )
    return typed.select(*source.columns, cast_errors.alias("_cast_errors"), *carried)


def with_cast_error(df: DataFrame, failed: Column, reason: Column) -> DataFrame:
    """Appends a source-specific conversion error (unknown country, currency) to the row."""
    return df.withColumn(
        "_cast_errors",
        F.when(failed, F.concat(F.col("_cast_errors"), F.array(reason))).otherwise(
            F.col("_cast_errors")
        ),
    )


def with_mapped_code(
    df: DataFrame, column: str, codes: Iterable[str], names: Mapping[str, str], what: str
) -> DataFrame:
    """``column`` as a reference code: a known code in any case, or a known name (any case).

    A present value that maps to nothing becomes null *and* a conversion error naming it.
    """
    code_set = sorted({c.upper() for c in codes})
    name_map = F.create_map(*[x for k, v in sorted(names.items()) for x in (F.lit(k), F.lit(v))])
    text = F.col(column)
    upper = F.upper(text)
    mapped = F.when(upper.isin(code_set), upper).otherwise(name_map[F.lower(text)])
    return with_cast_error(
        df.withColumn(f"_orig_{column}", text).withColumn(column, mapped),
        F.col(f"_orig_{column}").isNotNull() & F.col(column).isNull(),
        F.concat(F.lit(f"{column} '"), redact_contact_data(F.col(f"_orig_{column}")),
                 F.lit(f"' is not a known {what}")),
    ).drop(f"_orig_{column}")


def quarantine_record(
    source: SourceSpec, key: bytes, field: Callable[[str], Column]
) -> Column:
    """The raw record as silver.quarantine may hold it, from the row's bronze fields as landed
    (``field(name)``) and its raw line.

    For a source without personal data that is the raw line. For a source with PII columns
    the raw line would put names, emails and phones into a non-restricted table, so the record
    is kept as JSON of its fields with the PII fields withheld, plus a keyed fingerprint of the
    whole line (``line_hmac``) that finds it again in bronze (where the raw line stays).
    """
    if not source.pii:
        return F.col("_raw")
    # The other fields with contact data redacted: a line whose fields slipped holds an
    # email or phone in a column not declared PII, and a free text may quote one.
    fields = [
        (F.when(field(c).isNotNull(), F.lit("<withheld>")) if c in source.pii
         else redact_contact_data(field(c))).alias(c)
        for c in source.columns
    ]
    line_hmac = pseudonym("raw", F.col("_raw"), key, normalised=True).alias("line_hmac")
    masked = F.to_json(F.struct(*fields, line_hmac))
    malformed = F.to_json(F.struct(F.lit(True).alias("malformed"), line_hmac))
    return F.when(F.col("_is_malformed"), malformed).otherwise(masked)


def with_quarantine_raw(bronze_df: DataFrame, source: SourceSpec, key: bytes) -> DataFrame:
    """Adds ``_quarantine_raw`` (quarantine_record) to every row of bronze rows as landed."""
    return bronze_df.withColumn("_quarantine_raw", quarantine_record(source, key, F.col))


# Bronze fields kept as landed, for quarantine records built after typing (PII sources only).
LANDED_FIELDS = "_landed_fields"


def with_landed_fields(bronze_df: DataFrame, source: SourceSpec) -> DataFrame:
    """Adds ``_landed_fields`` (a struct) holding what quarantine_record reads of the bronze
    fields, before typing replaces them: each non-PII field as landed, and for a PII field
    only whether it was there (null or not). Nothing for a source without PII."""
    if not source.pii:
        return bronze_df
    fields = [
        (F.when(F.col(c).isNotNull(), F.lit(True)) if c in source.pii else F.col(c)).alias(c)
        for c in source.columns
    ]
    return bronze_df.withColumn(LANDED_FIELDS, F.struct(*fields))


def with_quarantine_raw_where(
    df: DataFrame, source: SourceSpec, key: bytes, where: Column
) -> DataFrame:
    """Adds ``_quarantine_raw`` (quarantine_record, from ``_landed_fields``, which it drops)
    on the rows where ``where`` holds, null elsewhere.

    Only where silver.quarantine reads it: built for every row, the redaction and the line's
    fingerprint were a quarter to a third of a CRM row's preparation (scale l: 1.02M records,
    7,708 quarantined), and a source without PII kept a second copy of every raw line.
    """
    landed = F.col(LANDED_FIELDS)
    record = quarantine_record(source, key, lambda c: landed[c])
    return df.withColumn("_quarantine_raw", F.when(where, record)).drop(LANDED_FIELDS)


def latest_first(event_time: str) -> list[Column]:
    """Order of versions of one key, newest first: the latest event time; among versions with
    the same event time (or none), the first delivered (earliest bronze commit, ingestion and
    source file), then the raw line itself so that even identical timestamps break the same
    way on every run.

    The first delivery, because that is what a later run keeps: its MERGE replaces a row only
    by a strictly newer event time (merge_newer), so a re-delivered file changes nothing. With
    the same rule inside a batch, a full rebuild and day-by-day runs keep the same version of a
    key whose deliveries share an event time but differ in content (before, the batch kept the
    last delivery and the day-by-day runs the first)."""
    return [
        F.col(event_time).desc_nulls_last(),
        F.col("_commit_version").asc_nulls_last(),
        F.col("_ingested_at").asc_nulls_last(),
        # One bronze commit can hold several days' files (a backlog, a rebuild from raw/):
        # the file name (dated by the feeds) stands for the order of delivery within it.
        F.col("_source_file").asc_nulls_last(),
        F.col("_raw").desc_nulls_last(),
    ]


def filter_latest_per_key(df: DataFrame, natural_key: Iterable[str], event_time: str) -> DataFrame:
    """One row per natural key: its latest version (see ``latest_first``)."""
    window = Window.partitionBy(*natural_key).orderBy(*latest_first(event_time))
    return (
        df.withColumn("_version_rank", F.row_number().over(window))
        .where(F.col("_version_rank") == 1)
        .drop("_version_rank")
    )
