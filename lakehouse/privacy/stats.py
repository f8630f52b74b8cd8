"""Which columns Delta may keep per-file statistics for (``delta.dataSkippingStatsColumns``).

Delta writes the min and max of indexed columns (first 32 characters of a string) into every
``add`` action of the ``_delta_log`` JSON commits and checkpoints. Those commits outlive a
DELETE and a VACUUM, so a person's email that happened to be a file's minimum would stay in the
log after erasure (a commit's ``remove`` actions keep only the row count, its ``add`` actions
stay until the log's retention has passed). So no column that may hold a person's data is
indexed, from table creation on:
- no string column, except the run ids the lake writes itself and a silver table's record id
  that its MERGE is scoped by (silver.io.KeyScope: the min/max of event ids keeps a day's MERGE
  out of earlier days' files): a delivered bronze field may hold anything (a CSV line with one
  field too many moves an email into the next column), and so may a page's URL, a campaign
  tag, a file name or a message;
- no personal or identifying column by name, whatever its type. Keyed pseudonyms
  (customer_key, *_pseudonym) are left out too: their values are uniformly spread hashes, so a
  file's min/max of them prunes nothing and would only keep an erased person's key in the log.
Numbers, dates and timestamps keep their statistics, which is what the lake's reads prune by.
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
_INDEXABLE = (T.NumericType, T.DateType, T.TimestampType, T.TimestampNTZType)
# The only strings indexed: identifiers of the lake's own runs, never delivered or derived from
# what a source delivered.
LAKE_WRITTEN_STRINGS = frozenset({"_ingest_run_id", "_run_id", "run_id", "stage_run_uuid"})
STATS_PROPERTY = "delta.dataSkippingStatsColumns"


def stats_columns(
    schema: T.StructType, extra_excluded: frozenset[str] = frozenset(),
    indexed_strings: frozenset[str] = frozenset(),
) -> list[str]:
    """Top-level columns Delta may index: numbers, dates, timestamps, the lake's run ids and
    the ``indexed_strings`` a table's reads prune by, never personal or identifying ones."""
    excluded = NO_STATS_COLUMNS | extra_excluded

    def indexable(field: T.StructField) -> bool:
        if isinstance(field.dataType, T.StringType):
            return field.name in LAKE_WRITTEN_STRINGS | indexed_strings
        return isinstance(field.dataType, _INDEXABLE)

    return [f.name for f in schema.fields if f.name not in excluded and indexable(f)]


def table_creation_options(
    schema: T.StructType, extra_excluded: frozenset[str] = frozenset(),
    indexed_strings: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Writer options that set the stats columns when a write creates the table.

    Delta takes ``delta.*`` writer options as table properties only when the write creates the
    table and ignores them on later appends, so passing them on every write is harmless. With
    no indexable column left, no column is indexed at all (``numRecords`` is still kept).
    """
    columns = stats_columns(schema, extra_excluded, indexed_strings)
    if not columns:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    return {STATS_PROPERTY: ",".join(columns)}


# Delta's default when a table sets neither property: the first 32 columns are indexed.
_DEFAULT_INDEXED = 32


def statistics_not_allowed(
    properties: dict[str, str], schema: T.StructType,
    extra_excluded: frozenset[str] = frozenset(), indexed_strings: frozenset[str] = frozenset(),
    allowed_in: T.StructType | None = None,
) -> list[str]:
    """Columns an existing table (its ``properties`` and ``schema``) keeps statistics of that
    stats_columns no longer allows (among ``allowed_in``'s columns, by default the table's):
    a table created before a column was excluded keeps its property, since Delta reads the
    writer options only when a write creates the table."""
    allowed = set(stats_columns(allowed_in or schema, extra_excluded, indexed_strings))
    if STATS_PROPERTY in properties:
        indexed = [c.strip() for c in properties[STATS_PROPERTY].split(",") if c.strip()]
    else:
        count = int(properties.get("delta.dataSkippingNumIndexedCols", _DEFAULT_INDEXED))
        indexed = schema.fieldNames()[:count] if count >= 0 else schema.fieldNames()
    return [c for c in indexed if c not in allowed]
