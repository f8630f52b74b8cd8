"""Which columns Delta may keep per-file statistics for (``delta.dataSkippingStatsColumns``).

Delta writes the min and max of indexed columns (first 32 characters of a string) into every
``add`` action of the ``_delta_log`` JSON commits and checkpoints. Those commits outlive a
DELETE and a VACUUM, so a person's email that happened to be a file's minimum would stay in the
log after erasure. Personal and identifying columns are therefore never indexed, from table
creation on. Keyed pseudonyms (customer_key, *_pseudonym) are left out too: their values are
uniformly spread hashes, so a file's min/max of them prunes nothing and would only keep an
erased person's key in the log.
"""

from __future__ import annotations

from pyspark.sql import types as T

# Personal data in clear, and the raw lines and free text that carry it, as named across bronze,
# silver and quarantine: never printed by operator commands (diff, restore's preview).
PERSONAL_COLUMNS = frozenset(
    {
        "_raw", "_rescued_data", "raw", "raw_record",
        "first_name", "last_name", "email", "phone", "social_handle", "handle", "text",
    }
)
# Raw lines, personal data and identifiers, as named across bronze, silver and gold.
NO_STATS_COLUMNS = PERSONAL_COLUMNS | frozenset(
    {
        "_malformed_reason", "reason",
        "customer_id", "cookie_id", "device_id", "natural_key", "id_value", "line_hmac",
        "customer_key", "email_pseudonym", "phone_pseudonym", "handle_pseudonym", "subject_hash",
        # An erasure resolves a person's orders (their payments carry no customer column) and
        # deletes by order id; a journey is named by a hash of customer_key and order id.
        "order_id", "journey_id",
    }
)
# Types Delta can keep min/max for (a boolean column is refused by name, so it is left out).
_INDEXABLE = (T.NumericType, T.DateType, T.TimestampType, T.TimestampNTZType, T.StringType)
STATS_PROPERTY = "delta.dataSkippingStatsColumns"


def stats_columns(schema: T.StructType, extra_excluded: frozenset[str] = frozenset()) -> list[str]:
    """Top-level columns Delta may index: atomic types, never personal or identifying ones."""
    excluded = NO_STATS_COLUMNS | extra_excluded
    return [
        f.name for f in schema.fields
        if f.name not in excluded and isinstance(f.dataType, _INDEXABLE)
    ]


def table_creation_options(
    schema: T.StructType, extra_excluded: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Writer options that set the stats columns when a write creates the table.

    Delta takes ``delta.*`` writer options as table properties only when the write creates the
    table and ignores them on later appends, so passing them on every write is harmless. With
    no indexable column left, no column is indexed at all (``numRecords`` is still kept).
    """
    columns = stats_columns(schema, extra_excluded)
    if not columns:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    return {STATS_PROPERTY: ",".join(columns)}
