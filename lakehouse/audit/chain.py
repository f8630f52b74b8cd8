"""A hash chain over audit records: each record's hash covers its content and the previous
record's hash, so editing or removing any record breaks every link after it.

Each chained table has three extra columns: `record_seq` (1, 2, 3, ... in append order),
`prev_hash` and `record_hash` = SHA-256 hex of ``prev_hash + "\\n" + content``, where content is
the record's other columns as JSON (Spark's `to_json`, maps as sorted entry arrays so their
order cannot matter). Spark renders the content both when a record is written and when it is
verified, so the two sides use the same canonical text.

Limits: the chain proves that stored records were not altered and that none was removed from
the middle. Cutting records off the end leaves a shorter valid chain; an external copy of the
latest `record_hash` (printed by `lakehouse audit verify`) catches that. Writers append one at a
time (one pipeline process); two concurrent writers would fork the chain, which verify reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, MapType, StringType, StructField, StructType

from lakehouse.catalog import Catalog
from lakehouse.faults import crash_point

CHAIN_COLUMNS = ("record_seq", "prev_hash", "record_hash")
GENESIS = "0" * 64


def canonical_content(df: DataFrame) -> Column:
    """The JSON text a record's hash covers: every column except the chain's own."""
    parts = []
    for field in df.schema.fields:
        if field.name in CHAIN_COLUMNS:
            continue
        col = F.col(field.name)
        if isinstance(field.dataType, MapType):
            col = F.array_sort(F.map_entries(col))
        parts.append(col.alias(field.name))
    return F.to_json(F.struct(*parts), {"ignoreNullFields": "false"})


def link_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _chain_head(spark: SparkSession, catalog: Catalog, name: str) -> tuple[int, str]:
    if not catalog.exists(spark, name):
        return 0, GENESIS
    last = (
        catalog.read(spark, name)
        .orderBy(F.col("record_seq").desc())
        .select("record_seq", "record_hash")
        .first()
    )
    return (0, GENESIS) if last is None else (int(last["record_seq"]), last["record_hash"])


def append_chained(
    spark: SparkSession, catalog: Catalog, name: str, records_df: DataFrame, order: Sequence[str]
) -> int:
    """Append `records_df` to audit table `name`, chained after its last record, in `order`.

    The new records reach the driver to be chained one after another: call it with bounded
    batches (one audit run's history rows, one stage's lineage rows). Returns rows appended.
    """
    seq, prev = _chain_head(spark, catalog, name)
    rows = (
        records_df.withColumn("_content", canonical_content(records_df))
        .orderBy(*order)
        .collect()
    )
    if not rows:
        return 0
    chained = []
    for row in rows:
        seq += 1
        values = row.asDict(recursive=False)
        record_hash = link_hash(prev, values.pop("_content"))
        chained.append((*values.values(), seq, prev, record_hash))
        prev = record_hash
    schema = StructType(
        [
            *records_df.schema.fields,
            StructField("record_seq", LongType(), False),
            StructField("prev_hash", StringType(), False),
            StructField("record_hash", StringType(), False),
        ]
    )
    crash_point("audit.before_write")
    # A chain table made before the statistics policy keeps its own (lakehouse.privacy.stats).
    catalog.narrow_statistics(spark, name, schema=schema)
    spark.createDataFrame(chained, schema).write.format("delta").mode("append").options(
        **catalog.creation_options(schema)
    ).save(catalog.path(name))
    return len(chained)


@dataclass(frozen=True)
class ChainReport:
    table: str
    records: int
    broken_at: int | None = None  # record_seq of the first bad record
    reason: str = ""
    record: str = ""  # what the bad record is about (table/version, run/stage, ...)
    head_hash: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_at is None

    def line(self) -> str:
        if self.intact:
            return f"{self.table}: {self.records} records, chain intact (head {self.head_hash[:16]})"
        return (
            f"{self.table}: chain BROKEN at record {self.broken_at}"
            f"{f' ({self.record})' if self.record else ''}: {self.reason}"
        )


def verify_chain(
    spark: SparkSession, catalog: Catalog, name: str, describe: Sequence[str] = ()
) -> ChainReport:
    """Walk the chain of `name` in record_seq order; the first bad link ends the walk.

    Records stream to the driver one partition at a time (toLocalIterator), so memory stays
    bounded however long the audit trail is.
    """
    if not catalog.exists(spark, name):
        return ChainReport(name, 0)
    df = catalog.read(spark, name)
    label = F.concat_ws(" ", *[F.concat(F.lit(f"{c}="), F.col(c).cast("string")) for c in describe])
    walk = df.select(
        "record_seq", "prev_hash", "record_hash",
        canonical_content(df).alias("_content"), label.alias("_label"),
    ).orderBy("record_seq")
    expected_seq, prev, count = 1, GENESIS, 0
    for row in walk.toLocalIterator():
        count += 1
        seq = row["record_seq"]
        problem = ""
        if seq != expected_seq:
            problem = (
                f"record {expected_seq} is missing (next stored record is {seq})"
                if seq > expected_seq else f"record number {seq} appears twice"
            )
        elif row["prev_hash"] != prev:
            problem = "its prev_hash does not match the previous record's hash (record removed or reordered)"
        elif row["record_hash"] != link_hash(prev, row["_content"]):
            problem = "its content does not match its hash (record altered)"
        if problem:
            return ChainReport(name, count, broken_at=expected_seq if seq > expected_seq else seq,
                               reason=problem, record=row["_label"] or "")
        prev, expected_seq = row["record_hash"], expected_seq + 1
    return ChainReport(name, count, head_hash=prev)
