"""Erased people stay erased: a source that delivers them again is not landed.

An erasure removes a person from every layer, but sources keep exporting: a CRM re-sends the
record, a late order file still holds their orders, a device keeps reporting. Without a
suppression list the next bronze run lands them again, raw line and all. So an erasure request
also records, in ``audit.erasure_suppression``, a keyed hash (the pseudonym HMAC, never the
value) of each identifier the person was resolved to: CRM customer id, email, social handle,
cookies, devices and order ids. Bronze computes the same hash of those fields of every incoming
row and does not land a row that matches; it removes the row's line from the raw file it came
from (local data roots) and counts it in its summary. The hashes are what the erasure log's
``subject_hash`` already is: without the secret key nobody can tell whose they are.

Phones are not matched: a CRM writes them in national or international form, which only
silver's country lookup can tell apart; a re-delivered CRM record carries its customer id and
email anyway. A line that does not parse (malformed) has no fields to match; its raw line lands
as bronze keeps every malformed line, and ``lakehouse erase`` again removes it.

Data expiry (retention) does not suppress: a customer whose record expired may come back as a
new customer with a new consent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.catalog import Catalog
from lakehouse.config import file_uri_path
from lakehouse.privacy.pseudonym import pseudonym

SUPPRESSION_TABLE = "audit.erasure_suppression"
SUPPRESSION_SCHEMA = T.StructType(
    [
        T.StructField("request_id", T.StringType()),
        T.StructField("id_kind", T.StringType()),
        T.StructField("id_hash", T.StringType()),
        T.StructField("recorded_at", T.TimestampType()),
    ]
)
# Source column -> pseudonym kind of its value (the same names erasure matches by value).
SUPPRESSED_COLUMNS = {
    "customer_id": "crm",
    "email": "email",
    "social_handle": "handle",
    "handle": "handle",
    "cookie_id": "cookie",
    "device_id": "device",
    "order_id": "order",
}


def identifier_hashes(key: bytes, subject) -> set[tuple[str, str]]:
    """(kind, hash) of every identifier of an erasure Subject that bronze can match."""
    from lakehouse.privacy.erasure import keyed_hash

    hashes = {("crm", k) for k in subject.customer_keys}
    hashes |= {("crm", keyed_hash(key, "crm", i)) for i in subject.customer_ids}
    hashes |= {("email", h) for h in subject.email_pseudonyms}
    hashes |= {("handle", h) for h in subject.handle_pseudonyms}
    for kind, values in (("cookie", subject.cookies), ("device", subject.devices),
                         ("order", subject.order_ids)):
        hashes |= {(kind, keyed_hash(key, kind, v)) for v in values}
    return hashes


def record_suppression(
    spark: SparkSession, catalog: Catalog, request_id: str, hashes: Iterable[tuple[str, str]]
) -> int:
    """Adds the hashes not listed yet (one MERGE; a re-run of the request adds nothing);
    returns how many were new."""
    from lakehouse.silver.io import ensure_table, merge_insert_only

    listed = set()
    if catalog.exists(spark, SUPPRESSION_TABLE):
        listed = {(r["id_kind"], r["id_hash"]) for r in
                  catalog.read(spark, SUPPRESSION_TABLE).select("id_kind", "id_hash").collect()}
    rows = sorted(set(hashes) - listed)
    if not rows:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    df = spark.createDataFrame([(request_id, k, h, now) for k, h in rows], SUPPRESSION_SCHEMA)
    ensure_table(spark, catalog, SUPPRESSION_TABLE, SUPPRESSION_SCHEMA)
    merge_insert_only(spark, catalog.path(SUPPRESSION_TABLE), df, ("id_kind", "id_hash"))
    return len(rows)


def listed_kinds(spark: SparkSession, catalog: Catalog) -> frozenset[str]:
    """The kinds of identifier the list holds (empty when nothing was ever erased)."""
    if not catalog.exists(spark, SUPPRESSION_TABLE):
        return frozenset()
    rows = catalog.read(spark, SUPPRESSION_TABLE).select("id_kind").distinct().collect()
    return frozenset(r["id_kind"] for r in rows)


def listing_of(spark: SparkSession, catalog: Catalog, kind: str, id_hash: str):
    """The suppression row (request_id, recorded_at) of one hashed identifier, or None."""
    if not catalog.exists(spark, SUPPRESSION_TABLE):
        return None
    return (catalog.read(spark, SUPPRESSION_TABLE)
            .where((F.col("id_kind") == kind) & (F.col("id_hash") == id_hash))
            .select("request_id", "recorded_at").first())


def with_suppressed_flag(
    df: DataFrame, columns: Iterable[str], listed_df: DataFrame, key: bytes,
    flag: str = "_suppressed",
) -> DataFrame:
    """``df`` plus boolean ``flag``: true when any of its identifier ``columns`` hashes to an
    entry of ``listed_df`` (id_kind, id_hash).

    Fields are hashed as silver would (trimmed; emails and handles normalised), so a
    re-delivery in other spacing or case still matches. The list is joined (broadcast), not
    written into the plan as an IN list: it only grows, and a literal list of many thousand
    hashes would be shipped with every task.
    """
    out, hits = df, []
    for i, column in enumerate(columns):
        kind = SUPPRESSED_COLUMNS[column]
        hashed, hit = f"_suppression_hash_{i}", f"_suppression_hit_{i}"
        listed = listed_df.where(F.col("id_kind") == kind).select(
            F.col("id_hash").alias(hashed), F.lit(True).alias(hit)).distinct()
        out = (out.withColumn(hashed, pseudonym(kind, F.col(column), key))
               .join(F.broadcast(listed), hashed, "left").drop(hashed))
        hits.append(F.coalesce(F.col(hit), F.lit(False)))
    return out.withColumn(flag, reduce(lambda a, b: a | b, hits, F.lit(False))).drop(
        *[f"_suppression_hit_{i}" for i in range(len(hits))])


def _without_ending(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape").removesuffix("\n").removesuffix("\r")


def remove_raw_lines(lines_by_file: Mapping[str, Iterable[str]]) -> tuple[int, list[str]]:
    """Removes each given line (as Spark's text reader returned it) from its local raw file.

    Returns (lines removed, files that could not be cleaned: object stores, or a line whose
    bytes Spark's decoding changed). Only whole lines equal to a suppressed one leave a file;
    every other byte stays (erasure's byte-level helpers).
    """
    from lakehouse.privacy.erasure import read_raw_lines, write_raw_lines

    removed, left = 0, []
    for uri, wanted in sorted(lines_by_file.items()):
        wanted = list(wanted)
        path = file_uri_path(uri)
        if path is None or not path.is_file():
            left.append(uri)
            continue
        targets = set(wanted)
        lines = read_raw_lines(path)
        kept = [b for b in lines if _without_ending(b) not in targets]
        if len(kept) < len(lines):
            write_raw_lines(path, kept)
            removed += len(lines) - len(kept)
        if len(lines) - len(kept) < len(wanted):
            left.append(uri)  # some line did not match byte for byte
    return removed, left


def suppressed_lines(df: DataFrame, condition: Column) -> dict[str, list[str]]:
    """The raw lines of the rows ``condition`` marks, per source file (few: collected)."""
    out: dict[str, list[str]] = {}
    for row in df.where(condition).select("_source_file", "_raw").collect():
        out.setdefault(row["_source_file"], []).append(row["_raw"])
    return out
