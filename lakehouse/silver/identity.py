"""silver.identity_map: every known identifier of a person linked to one customer_key.

Identifiers and where they come from:
- crm_id, email, phone, handle: the CRM record (email, phone, handle as pseudonyms);
- cookie: a clickstream event that carries a customer_id (a logged-in session) links its cookie;
- device: an IoT reading that carries a customer_id links its device.

Deterministic rule: an identifier belongs to the customer it was seen with first (earliest
``first_seen``; on a tie the smaller customer_key). min over time and max over time are
associative, so the map is the same whether the sightings arrive in one run or many, in any
order. Anonymous events of a cookie are attributed to the cookie's customer, also when the
cookie logs in only later (``rows_to_reresolve`` fills in the rows already in silver), and follow
it when a late, earlier sighting gives the cookie another first owner (``rows_to_reattribute``:
only rows whose key was looked up, KEY_LOOKED_UP; a logged-in event keeps the customer it names).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.silver.transforms import ANONYMITY_PARTITION, KEY_LOOKED_UP

ID_TYPES = ("crm_id", "email", "phone", "cookie", "device", "handle")
# Per source: the identifiers its clean rows link to their customer_key, as
# (id_type, id column, time column). Only rows that name their customer (customer_key set)
# link: a clickstream event does when its session is logged in.
LINKED_IDENTIFIERS = {
    "crm_customers": (
        ("crm_id", "customer_id", "updated_at"),
        ("email", "email_pseudonym", "updated_at"),
        ("phone", "phone_pseudonym", "updated_at"),
        ("handle", "handle_pseudonym", "updated_at"),
    ),
    "clickstream": (("cookie", "cookie_id", "event_ts"),),
    "iot_readings": (("device", "device_id", "reading_ts"),),
}
# The sources the map is built from (their progress is set back when a restore of the map
# takes links out).
IDENTITY_SOURCES = tuple(LINKED_IDENTIFIERS)
IDENTITY_SCHEMA = T.StructType(
    [
        T.StructField("customer_key", T.StringType()),
        T.StructField("id_type", T.StringType()),
        T.StructField("id_value", T.StringType()),
        T.StructField("first_seen", T.TimestampType()),
        T.StructField("last_seen", T.TimestampType()),
    ]
)
_LINK_COLUMNS = ("customer_key", "id_type", "id_value", "seen")


def _links(df: DataFrame, id_type: str, id_col: str, seen_col: str) -> DataFrame:
    return df.select(
        F.col("customer_key"),
        F.lit(id_type).alias("id_type"),
        F.col(id_col).cast("string").alias("id_value"),
        F.col(seen_col).alias("seen"),
    )


def identity_links(clean: Mapping[str, DataFrame]) -> DataFrame | None:
    """(customer_key, id_type, id_value, seen) sightings in this run's clean rows.

    ``clean`` maps a source name to its clean (typed, extras applied) rows.
    """
    parts = [
        _links(clean[source], id_type, id_col, seen_col)
        for source, identifiers in LINKED_IDENTIFIERS.items() if source in clean
        for id_type, id_col, seen_col in identifiers
    ]
    if not parts:
        return None
    links = reduce(DataFrame.unionByName, parts)
    return links.where(
        F.col("customer_key").isNotNull()
        & F.col("id_value").isNotNull()
        & F.col("seen").isNotNull()
    )


# resolve_identity(keep_previous=True): the customer_key the map held for the id before the run.
PREVIOUS_KEY = "_previous_key"


def resolve_identity(
    links_df: DataFrame, existing_map_df: DataFrame | None, keep_previous: bool = False,
) -> DataFrame:
    """Rows of the identity map for every identifier sighted in ``links_df``, combined with
    what the map already holds for them (see the module docstring for the rule); with
    ``keep_previous``, also the key the map held (PREVIOUS_KEY, null for a new id)."""
    sighted = links_df.groupBy("id_type", "id_value", "customer_key").agg(
        F.min("seen").alias("first_seen"), F.max("seen").alias("last_seen")
    ).withColumn("_from_map", F.lit(False))
    candidates = sighted
    if existing_map_df is not None:
        known = existing_map_df.join(
            sighted.select("id_type", "id_value").distinct(), ["id_type", "id_value"], how="inner"
        ).withColumn("_from_map", F.lit(True))
        candidates = sighted.unionByName(known.select(*sighted.columns))
    return candidates.groupBy("id_type", "id_value").agg(
        F.min_by("customer_key", F.struct("first_seen", "customer_key")).alias("customer_key"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
        F.max(F.when(F.col("_from_map"), F.col("customer_key"))).alias(PREVIOUS_KEY),
    ).select(*IDENTITY_SCHEMA.fieldNames(), *([PREVIOUS_KEY] if keep_previous else []))


def identity_view(touched_df: DataFrame, existing_map_df: DataFrame | None) -> DataFrame:
    """The whole map as it will be after this run's MERGE (for lookups before it commits)."""
    if existing_map_df is None:
        return touched_df
    untouched = existing_map_df.join(
        touched_df.select("id_type", "id_value"), ["id_type", "id_value"], how="left_anti"
    )
    return untouched.select(*IDENTITY_SCHEMA.fieldNames()).unionByName(touched_df)


def map_rows_matching(identity_df: DataFrame, ids_df: DataFrame) -> DataFrame:
    """The rows of ``identity_df`` whose (id_type, id_value) is among ``ids_df``'s: the only
    ones a lookup of those ids can match (with_resolved_customer gives the same rows with
    either)."""
    wanted = ids_df.where(F.col("id_value").isNotNull()).distinct()
    return identity_df.join(wanted, ["id_type", "id_value"], how="left_semi").select(
        *identity_df.columns
    )


def with_resolved_customer(
    df: DataFrame, identity_df: DataFrame, column: str, id_type: str
) -> DataFrame:
    """customer_key kept where the record names its customer, else looked up by ``column``
    (and ``KEY_LOOKED_UP`` says which of the two it is)."""
    lookup = identity_df.where(F.col("id_type") == id_type).select(
        F.col("id_value").alias("_lookup_value"), F.col("customer_key").alias("_lookup_key")
    )
    return (
        df.withColumn(KEY_LOOKED_UP, F.col("customer_key").isNull())
        .join(lookup, df[column] == lookup["_lookup_value"], how="left")
        .withColumn("customer_key", F.coalesce(F.col("customer_key"), F.col("_lookup_key")))
        .drop("_lookup_value", "_lookup_key")
    )


def merge_identity(spark: SparkSession, path: str, touched_df: DataFrame) -> None:
    """MERGE the touched rows; an unchanged row is not rewritten (a re-run changes nothing)."""
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, path)
    (
        target.alias("t")
        .merge(touched_df.alias("s"), "t.id_type = s.id_type AND t.id_value = s.id_value")
        .whenMatchedUpdateAll(
            condition="NOT (t.customer_key <=> s.customer_key) "
            "OR NOT (t.first_seen <=> s.first_seen) OR NOT (t.last_seen <=> s.last_seen)"
        )
        .whenNotMatchedInsertAll()
        .execute()
    )


def rows_to_reresolve(
    table_df: DataFrame, touched_df: DataFrame, column: str, id_type: str,
    incoming_df: DataFrame | None, key: tuple[str, ...],
) -> DataFrame:
    """Rows already in a silver table, still without customer_key, whose ``column`` became
    known in this run (e.g. the anonymous events of a cookie that has now logged in), with
    customer_key filled; rows this run delivers anew (``incoming_df``, if any) are left to the
    incoming batch."""
    newly = touched_df.where(F.col("id_type") == id_type).select(
        F.col("id_value").alias("_newly_value"), F.col("customer_key").alias("_newly_key")
    )
    waiting = table_df.where(F.col("customer_key").isNull())
    filled = {"customer_key": F.col("_newly_key")}
    if ANONYMITY_PARTITION in table_df.columns:
        # The same rows, said in a way that reads only the anonymous partition's files.
        waiting = waiting.where(F.col(ANONYMITY_PARTITION))
        filled[ANONYMITY_PARTITION] = F.lit(False)
    if KEY_LOOKED_UP in table_df.columns:
        # Null in a table that gained the column after the row was written (io.add_boolean_column).
        filled[KEY_LOOKED_UP] = F.lit(True)
    filled_rows = (
        waiting.join(newly, waiting[column] == newly["_newly_value"], how="inner")
        .withColumns(filled)
        .select(*table_df.columns)
    )
    if incoming_df is None:
        return filled_rows
    return filled_rows.join(incoming_df.select(*key), list(key), how="left_anti").select(
        *table_df.columns
    )


def owner_changes(resolved_df: DataFrame) -> DataFrame:
    """(id_type, id_value, customer_key) of the ids this run gives another customer than the
    map held (``resolved_df``: resolve_identity with keep_previous): a late sighting earlier
    than the first one (first seen wins)."""
    return resolved_df.where(
        F.col(PREVIOUS_KEY).isNotNull() & (F.col("customer_key") != F.col(PREVIOUS_KEY))
    ).select("id_type", "id_value", "customer_key")


def rows_to_reattribute(
    table_df: DataFrame, changes_df: DataFrame, column: str, id_type: str, key: tuple[str, ...],
) -> DataFrame:
    """(key..., customer_key) of rows whose customer_key was looked up by ``column`` and whose
    id now belongs to another customer (``changes_df``: owner_changes): a full run over the
    same files would have looked these rows up with that owner. Rows that name their customer
    are not moved."""
    owners = changes_df.where(F.col("id_type") == id_type).select(
        F.col("id_value").alias("_owned_value"), F.col("customer_key").alias("_owner")
    )
    # Filled-in and looked-up rows are in the known partition; the anonymous one holds none.
    looked_up = table_df.where(
        F.col(KEY_LOOKED_UP) & F.col("customer_key").isNotNull()
        & ~F.col(ANONYMITY_PARTITION)
    )
    return (
        looked_up.join(owners, looked_up[column] == owners["_owned_value"], how="inner")
        .where(F.col("customer_key") != F.col("_owner"))
        .select(*key, F.col("_owner").alias("customer_key"))
    )
