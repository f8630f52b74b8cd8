"""Erased people stay erased: a source that delivers them again is not landed.

An erasure removes a person from every layer, but sources keep exporting: a CRM re-sends the
record, a late order file still holds their orders, a device keeps reporting. Without a
suppression list the next bronze run lands them again, raw line and all. So an erasure request
also records, in ``audit.erasure_suppression``, a keyed hash (the pseudonym HMAC, never the
value) of each identifier the person was resolved to: CRM customer id, email, social handle,
cookies, devices and order ids. Bronze computes the same hash of those fields of every incoming
row and does not land a row that matches (one found by a cookie or device only that names a
customer silver knows, not erased, is that customer's, on a shared browser or device, and
lands); it removes the row's line from the raw file it came
from (local data roots) and counts it in its summary. The hashes are what the erasure log's
``subject_hash`` already is: without the secret key nobody can tell whose they are.

The person's identifiers in a free text (another customer's page holding their email) have no
hash to match without keeping the value: such a row lands, on a shared browser as anywhere
else. The lines erasure removed for that reason are listed whole (``line``: the keyed hash of
the line), so the same line delivered again stays out. Cookies and devices listed by a request
made before the shared-device rule (kinds ``cookie`` and ``device``) refuse every row, as they
did then; later requests list them as ``cookie_shared`` and ``device_shared``.

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
# Kinds a browser or a device shares between people (erasure's SHARED_DEVICE_COLUMNS): the kind
# their hashes are listed under, where another customer's row on them is not refused.
SHARED_KINDS = {"cookie": "cookie_shared", "device": "device_shared"}
# The person's customer ids in lower case (keyed like "crm"): a row naming them in another
# case is not another customer's (erasure compares the ids without case as well).
CRM_NOCASE_KIND = "crm_nocase"
# Keyed hash of a whole raw line (pseudonym "raw") that erasure removed from bronze.
LINE_KIND = "line"


def identifier_hashes(key: bytes, subject) -> set[tuple[str, str]]:
    """(kind, hash) of every identifier of an erasure Subject that bronze can match."""
    from lakehouse.privacy.erasure import keyed_hash

    hashes = {("crm", k) for k in subject.customer_keys}
    hashes |= {("crm", keyed_hash(key, "crm", i)) for i in subject.customer_ids}
    hashes |= {(CRM_NOCASE_KIND, keyed_hash(key, "crm", i.lower())) for i in subject.customer_ids}
    hashes |= {("email", h) for h in subject.email_pseudonyms}
    hashes |= {("handle", h) for h in subject.handle_pseudonyms}
    for kind, values in (("cookie", subject.cookies), ("device", subject.devices),
                         ("order", subject.order_ids)):
        hashes |= {(SHARED_KINDS.get(kind, kind), keyed_hash(key, kind, v)) for v in values}
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


def suppressed_columns(columns: Iterable[str], kinds: Iterable[str]) -> list[str]:
    """Those of ``columns`` whose kind of identifier the list holds (shared kinds included)."""
    kinds = set(kinds)
    return [c for c in columns if c in SUPPRESSED_COLUMNS
            and {SUPPRESSED_COLUMNS[c], SHARED_KINDS.get(SUPPRESSED_COLUMNS[c])} & kinds]


def with_suppressed_flag(
    df: DataFrame, columns: Iterable[str], listed_df: DataFrame, key: bytes,
    flag: str = "_suppressed", kinds: Iterable[str] | None = None,
    known_customers: DataFrame | None = None,
) -> DataFrame:
    """``df`` plus boolean ``flag``: true when any of its identifier ``columns`` hashes to an
    entry of ``listed_df`` (id_kind, id_hash), or its ``_raw`` line does (kind ``line``).

    A row found only by a cookie or device listed as shared is not suppressed when its
    customer_id (cleaned as silver does) is one of ``known_customers`` (customer_key: silver's
    customers), not listed, in any case: another customer on an erased person's shared browser
    or device. Without ``known_customers`` every such row is. ``kinds``: the kinds listed,
    when known (the line is hashed only when lines are listed).

    Fields are hashed as silver would (trimmed; emails and handles normalised), so a
    re-delivery in other spacing or case still matches. The list is joined (broadcast), not
    written into the plan as an IN list: it only grows, and a literal list of many thousand
    hashes would be shipped with every task.
    """
    from lakehouse.silver.cleanse import clean_string

    columns = list(columns)
    kinds = None if kinds is None else frozenset(kinds)
    out, own, device, joined = df, [], [], []

    def join_hit(frame: DataFrame, kind: str, value: Column) -> tuple[DataFrame, Column]:
        i = len(joined)
        hashed, hit = f"_suppression_hash_{i}", f"_suppression_hit_{i}"
        joined.append(hit)
        listed = listed_df.where(F.col("id_kind") == kind).select(
            F.col("id_hash").alias(hashed), F.lit(True).alias(hit)).distinct()
        frame = (frame.withColumn(hashed, value)
                 .join(F.broadcast(listed), hashed, "left").drop(hashed))
        return frame, F.coalesce(F.col(hit), F.lit(False))

    crm_hit = None
    for column in columns:
        kind = SUPPRESSED_COLUMNS[column]
        value = pseudonym(kind, F.col(column), key)
        out, hit = join_hit(out, kind, value)
        own.append(hit)
        if kind in SHARED_KINDS:
            out, hit = join_hit(out, SHARED_KINDS[kind], value)
            device.append(hit)
        if column == "customer_id":
            crm_hit = hit
    if "_raw" in df.columns and (kinds is None or LINE_KIND in kinds):
        out, hit = join_hit(out, LINE_KIND, pseudonym("raw", F.col("_raw"), key, normalised=True))
        own.append(hit)
    suppressed = reduce(lambda a, b: a | b, own, F.lit(False))
    if device:
        on_device = reduce(lambda a, b: a | b, device)
        if crm_hit is not None and known_customers is not None:
            named = clean_string(F.col("customer_id"))
            out, same_in_other_case = join_hit(
                out, CRM_NOCASE_KIND, F.when(
                    named.isNotNull(), pseudonym("crm", F.lower(named), key, normalised=True)))
            i = len(joined)
            known_key, known = f"_suppression_hash_{i}", f"_suppression_hit_{i}"
            joined.append(known)
            out = (out.withColumn(known_key, F.when(on_device & named.isNotNull(), pseudonym(
                       "crm", named, key, normalised=True)))
                   .join(F.broadcast(known_customers.select(
                       F.col("customer_key").alias(known_key), F.lit(True).alias(known))
                       .distinct()), known_key, "left").drop(known_key))
            names_another = (F.coalesce(F.col(known), F.lit(False)) & ~crm_hit
                             & ~same_in_other_case)
            on_device = on_device & ~names_another
        suppressed = suppressed | on_device
    return out.withColumn(flag, suppressed).drop(*joined)


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
