"""Bronze: land every declared source in its Delta table exactly as it arrived.

How, and why this way:
- Files are read by Structured Streaming's file source with ``trigger(availableNow=True)`` and a
  checkpoint per source: the checkpoint records which files were taken, so a re-run takes only
  new files and a run killed half-way resumes where it stopped.
- Each micro-batch is appended with Delta's idempotent-write options (``txnAppId`` and
  ``txnVersion`` = the batch id): when a killed run's last batch is replayed, Delta skips the
  commit it already has. Together: exactly-once, no lost and no duplicated rows.
- Files are read as *text*: every line is kept whole in ``_raw``. A line that does not parse is
  flagged (``_is_malformed`` with a reason) and still landed, never dropped and never turned into
  an all-null row. Fields are kept as the strings they arrived as (types are silver's job), and
  fields the declaration does not know (schema drift) are kept as JSON in ``_rescued_data``.
  Open-source Spark has no rescued-data column of its own, and a fixed-schema JSON reader
  would silently drop unknown fields.
- CSV files are parsed with their *own* header line, so a column appended on a later day is
  rescued rather than misaligned. A CSV header is recognised by its first field being the
  source's first natural-key column (the contract of conf/sources.yaml).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.catalog import BRONZE_TABLE_PROPERTIES, Catalog
from lakehouse.config import Config, file_uri_path, is_local_location, local_path
from lakehouse.errors import InputDataError
from lakehouse.faults import crash_point
from lakehouse.parallel import side_by_side
from lakehouse.privacy.keycheck import lake_pseudonym_key
from lakehouse.privacy.suppression import (
    SUPPRESSED_COLUMNS,
    SUPPRESSION_TABLE,
    listed_kinds,
    remove_raw_lines,
    suppressed_lines,
    with_suppressed_flag,
)
from lakehouse.raw_files import check_raw_files
from lakehouse.sources import SOURCES_FILE, SourceSpec

META_COLUMNS = (
    "_rescued_data",
    "_raw",
    "_is_malformed",
    "_malformed_reason",
    "_source_file",
    "_ingested_at",
    "_batch_id",
    "_ingest_run_id",
)


@dataclass(frozen=True)
class BronzeResult:
    source: str
    rows_added: int
    malformed_added: int
    rows_total: int
    version: int | None
    seconds: float
    skipped_reason: str | None = None
    # Files in the source's folder that bronze does not read (another ending, e.g. '.CSV').
    ignored_files: tuple[str, ...] = ()
    # Files named as a delivery that cannot be read (a link to a file that is not there).
    unreadable_files: tuple[str, ...] = ()
    # Files this run landed of which no line parsed (another format or other columns, most
    # likely): kept whole like every malformed line, and silver quarantines them all.
    unparsed_files: tuple[str, ...] = ()
    # Rows of erased people (audit.erasure_suppression) not landed, and the raw files whose
    # lines could not be removed (an object store; a line Spark decoded differently).
    suppressed_rows: int = 0
    suppressed_left_in: tuple[str, ...] = ()


# -- pure transforms -------------------------------------------------------------------------


def _first_csv_field(raw: Column) -> Column:
    """First field of a CSV line, without quotes or a leading byte-order mark.

    Plain string functions, not a regular expression: this runs on every line, three times per
    batch (scale m's 2.5M IoT lines: the CSV step 5.5 s instead of 8.8 s).
    """
    first = F.substring_index(raw, ",", 1)
    without_bom = F.when(first.startswith("\ufeff"), F.substr(first, F.lit(2))).otherwise(first)
    return F.lower(F.trim(F.replace(without_bom, F.lit('"'), F.lit(""))))


def with_csv_header_flag(lines_df: DataFrame, source: SourceSpec) -> DataFrame:
    """Marks the header line(s) of each CSV file."""
    return lines_df.withColumn(
        "_is_header", _first_csv_field(F.col("_raw")) == F.lit(source.natural_key[0])
    )


def file_headers(lines_df: DataFrame) -> DataFrame:
    """One row per file: its header line, or null when it has none or several different ones."""
    return (
        lines_df.where("_is_header")
        .groupBy("_source_file")
        .agg(F.collect_set("_raw").alias("_headers"))
        .select(
            "_source_file",
            F.when(F.size("_headers") == 1, F.col("_headers")[0]).alias("_header"),
            F.when(F.size("_headers") > 1, F.lit("file has conflicting header lines")).alias(
                "_header_problem"
            ),
        )
    )


def header_names(header: str) -> list[str]:
    """Column names of a CSV header line, trimmed and lower-cased."""
    row = next(csv.reader([header.lstrip("\ufeff")]))
    return [name.strip().lower() for name in row]


# Widest CSV header parsed into fields. The sources declare about ten columns, the rest are
# rescued as JSON; beyond a thousand the file is not one of ours, and the CSV parser has a hard
# limit (univocity's 20,480 columns: a 30,000-column file made the whole stream fail without
# naming the file). Such a file's lines stay in bronze, flagged, and silver quarantines them.
MAX_CSV_COLUMNS = 1_000


def _unparsed(data_df: DataFrame, declared: list[str], reason: str) -> DataFrame:
    """Every line kept as it is, flagged with ``reason`` (bronze never drops a line)."""
    return data_df.withColumns(
        {
            "_declared": _null_declared(declared),
            "_rescued_data": F.lit(None).cast("string"),
            "_has_declared": F.lit(False),
            "_parse_error": F.lit(reason),
        }
    )


def _null_declared(declared: list[str]) -> Column:
    return F.lit(None).cast("struct<" + ",".join(f"`{c}`:string" for c in declared) + ">")


def parse_csv_with_header(data_df: DataFrame, header: str, declared: list[str]) -> DataFrame:
    """Fields of the data lines of files whose header is ``header``.

    The header is known when the plan is built, so declared columns and rescued extras are
    plain struct fields: no per-row map building or lambda functions, which made this step
    ~15x slower than reading the text.
    """
    names = header_names(header)
    if len(names) > MAX_CSV_COLUMNS:
        return _unparsed(data_df, declared, f"header has {len(names):,} columns, more than the "
                                            f"{MAX_CSV_COLUMNS:,} a source file may have")
    if len(set(names)) != len(names) or any(not n for n in names):
        return _unparsed(data_df, declared, "header has empty or repeated column names")
    schema = ", ".join(f"`c{i}` STRING" for i in range(len(names))) + ", `_corrupt` STRING"
    position = {name: i for i, name in enumerate(names)}
    extras = [n for n in names if n not in declared]

    def field(name: str) -> Column:
        return F.col(f"_parsed.c{position[name]}")

    is_whole = F.col("_parsed._corrupt").isNull()
    declared_struct = F.struct(
        *[(field(c) if c in position else F.lit(None).cast("string")).alias(c) for c in declared]
    )
    rescued = (
        F.to_json(F.struct(*[field(n).alias(n) for n in extras]), {"ignoreNullFields": "false"})
        if extras
        else F.lit(None).cast("string")
    )
    parsed = F.from_csv(
        F.col("_raw"), schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
    )
    return data_df.withColumn("_parsed", parsed).withColumns(
        {
            "_declared": F.when(is_whole, declared_struct),
            "_rescued_data": F.when(is_whole, rescued),
            "_has_declared": F.lit(bool(set(names) & set(declared))),
            "_parse_error": F.when(
                ~is_whole, F.lit(f"CSV line does not have the {len(names)} fields of its header")
            ),
        }
    ).drop("_parsed")


def parse_csv_lines(spark: SparkSession, lines_df: DataFrame, source: SourceSpec) -> DataFrame:
    """CSV lines -> data lines with ``_declared``, ``_rescued_data``, ``_parse_error``."""
    declared = list(source.columns)
    flagged = with_csv_header_flag(lines_df, source)
    data_df = flagged.where(~F.col("_is_header")).join(
        F.broadcast(file_headers(flagged)), on="_source_file", how="left"
    )
    # A header whose bytes are not UTF-8 (a latin-1 'straße'): collected to Python below, it
    # came back with U+FFFD and matched no line of its file, whose lines then went nowhere.
    bad_header = F.col("_header").isNotNull() & ~F.is_valid_utf8("_header")
    data_df = data_df.withColumns({
        "_header_problem": F.when(bad_header, F.lit(NOT_UTF8_HEADER_REASON))
        .otherwise(F.col("_header_problem")),
        "_header": F.when(~bad_header, F.col("_header")),
    })
    # One parse per distinct header: a handful (schema drift), never proportional to rows.
    headers = [r["_header"] for r in data_df.select("_header").distinct().collect()]
    parts = [
        parse_csv_with_header(data_df.where(F.col("_header") == h), h, declared)
        for h in headers
        if h
    ]
    headerless = data_df.where(F.col("_header").isNull()).withColumns(
        {
            "_declared": _null_declared(declared),
            "_rescued_data": F.lit(None).cast("string"),
            "_has_declared": F.lit(False),
            "_parse_error": F.coalesce(
                F.col("_header_problem"), F.lit("file has no header line")
            ),
        }
    )
    combined = reduce(lambda a, b: a.unionByName(b), parts, headerless)
    return combined.drop("_is_header", "_header", "_header_problem")


def parse_json_lines(lines_df: DataFrame, source: SourceSpec) -> DataFrame:
    """JSON lines -> declared fields, unknown fields rescued as JSON (nested values as text).

    Written without lambda functions or per-row sets: a lambda (``map_filter``) keeps Spark
    from compiling the step, and ``array_except``/``array_intersect`` build a hash set per
    line. Scale m's clickstream, where half the lines carry a field added later: 7.1 s instead
    of 12.0 s for 2.1M lines, the same rows.
    """
    declared = list(source.columns)
    fields = F.col("_fields")
    # A parsed map has each key once: the keys beyond the declared ones present are unknown.
    present = reduce(
        lambda a, b: a + b, [F.map_contains_key(fields, c).cast("int") for c in declared]
    )
    # The (key, value) entries of the declared keys; an absent key's (key, null) matches no
    # entry of the line, so removing them all from the line's entries leaves the unknown ones,
    # in the order they came.
    declared_entries = F.map_entries(
        F.map_from_arrays(F.array(*[F.lit(c) for c in declared]),
                          F.array(*[fields[c] for c in declared]))
    )
    rescued = F.when(
        F.size(fields) > F.col("_present"),
        F.to_json(F.map_from_entries(F.array_except(F.map_entries(fields), declared_entries))),
    )
    return (
        lines_df.withColumn("_fields", F.from_json(F.col("_raw"), "map<string,string>"))
        .withColumn("_present", present)
        .withColumns(
            {
                "_declared": F.when(
                    fields.isNotNull(), F.struct(*[fields[c].alias(c) for c in declared])
                ),
                "_rescued_data": rescued,
                "_has_declared": F.col("_present") > 0,
                "_parse_error": F.when(
                    fields.isNull(), F.lit("line is not a valid JSON object")
                ),
            }
        )
        .drop("_fields", "_present")
    )


# Why a line holding bytes that are not UTF-8 is malformed, and every line of a CSV file
# whose header line is so.
NOT_UTF8_HEADER_REASON = ("the file's header line is not UTF-8 text (as in a latin-1 file): "
                          "deliver the file in UTF-8")
NOT_UTF8_REASON = ("line is not UTF-8 text (bytes no UTF-8 character is made of, as in a "
                   "latin-1 file): deliver the file in UTF-8")


def with_declared_columns(parsed_df: DataFrame, source: SourceSpec) -> DataFrame:
    """Declared columns as strings, unknown fields rescued as JSON, malformed lines flagged."""
    is_blank = F.trim(F.col("_raw")) == ""
    reason = (
        F.when(is_blank, F.lit("blank line"))
        # Spark's text reader keeps a line's bytes as they are, UTF-8 or not: a file delivered
        # in latin-1 landed 'Jürgen' parsed and clean, read back as 'J\ufffdrgen', without a
        # word.
        .when(~F.is_valid_utf8("_raw"), F.lit(NOT_UTF8_REASON))
        .when(F.col("_parse_error").isNotNull(), F.col("_parse_error"))
        .when(~F.coalesce("_has_declared", F.lit(False)), F.lit("no declared field present"))
    )
    return parsed_df.select(
        *[F.col(f"_declared.{c}").alias(c) for c in source.columns],
        "_rescued_data",
        "_raw",
        reason.isNotNull().alias("_is_malformed"),
        reason.alias("_malformed_reason"),
        "_source_file",
    )


def to_bronze_rows(
    spark: SparkSession, lines_df: DataFrame, source: SourceSpec, batch_id: int, run_id: str
) -> DataFrame:
    """Raw lines (``_raw``, ``_source_file``) -> rows of the bronze table of ``source``."""
    if source.format == "csv":
        parsed = parse_csv_lines(spark, lines_df, source)
    else:
        parsed = parse_json_lines(lines_df, source)
    return with_declared_columns(parsed, source).withColumns(
        {
            "_ingested_at": F.current_timestamp(),
            "_batch_id": F.lit(batch_id).cast("long"),
            "_ingest_run_id": F.lit(run_id),
        }
    )


# -- I/O edge --------------------------------------------------------------------------------


# maxFileAge longer than any file's life (Spark takes a duration string; 2^63 ms overflows).
FILE_AGE_UNBOUNDED = "100000d"


def _read_raw_lines(spark: SparkSession, path: str, source: SourceSpec, config: Config):
    return (
        spark.readStream.format("text")
        .option("pathGlobFilter", source.file_glob)
        .option("maxFilesPerTrigger", config.get("bronze.max_files_per_trigger"))
        # A file is taken once by its name, however old: with Spark's default (7 days before
        # the newest file) a late file keeping an old modification time (cp -p, rsync -t,
        # tar x) was never read, without a word, and a name taken over 7 days before was
        # read again when re-delivered (lakehouse.raw_files relies on "taken once").
        .option("maxFileAge", FILE_AGE_UNBOUNDED)
        .load(path)
        .select(
            F.col("value").alias("_raw"),
            F.col("_metadata.file_path").alias("_source_file"),
        )
    )


@dataclass(frozen=True)
class Suppression:
    """Where the suppression list is (audit.erasure_suppression), its kinds, and the key."""

    path: str
    kinds: frozenset[str]
    key: bytes

    def marked(self, rows: DataFrame, source: SourceSpec) -> DataFrame | None:
        """``rows`` with ``_suppressed`` (names an erased person); None: nothing to match."""
        columns = [c for c in source.columns if SUPPRESSED_COLUMNS.get(c) in self.kinds]
        if not columns:
            return None
        # Read in the micro-batch's own session (a stream runs in a clone of the session).
        listed = rows.sparkSession.read.format("delta").load(self.path)
        return with_suppressed_flag(rows, columns, listed, self.key)


def load_bronze_suppression(
    spark: SparkSession, config: Config, catalog: Catalog
) -> Suppression | None:
    """The suppression list, or None when nobody was ever erased (no key needed then)."""
    kinds = listed_kinds(spark, catalog)
    if not kinds:
        return None
    return Suppression(
        catalog.path(SUPPRESSION_TABLE), kinds, lake_pseudonym_key(spark, config, catalog)
    )


def ingest_source(
    spark: SparkSession, catalog: Catalog, source: SourceSpec, run_id: str,
    suppression: Suppression | None = None,
) -> BronzeResult:
    """Land the files of ``source`` not yet ingested; returns what this run added.

    With ``suppression``, rows naming an erased person are not landed and their lines leave
    the local raw file (lakehouse.privacy.suppression)."""
    started = time.monotonic()
    raw_path = catalog.raw_dir(source.raw_dir)
    table_path = catalog.path(source.bronze_table)
    before = catalog.current_version(spark, source.bronze_table)
    if before is not None:
        catalog.narrow_statistics(spark, source.bronze_table, frozenset(source.pii))
    # Stable per table: a replayed batch id is recognised by Delta and skipped.
    txn_app_id = f"lakehouse-bronze-{source.name}"
    held_back: dict[int, int] = {}  # per batch id: a replayed batch is counted once
    left_in: set[str] = set()

    def write_batch(batch_df: DataFrame, batch_id: int) -> None:
        batch_df.persist()
        try:
            rows = to_bronze_rows(batch_df.sparkSession, batch_df, source, batch_id, run_id)
            marked = suppression.marked(rows, source) if suppression else None
            lines = suppressed_lines(marked, F.col("_suppressed")) if marked is not None else {}
            if lines:
                rows = marked.where(~F.col("_suppressed")).drop("_suppressed")
            crash_point("bronze.before_commit")
            (
                rows.write.format("delta")
                .mode("append")
                # The lake's table properties; PII and raw lines never get min/max stats in the
                # _delta_log (erasure).
                .options(**catalog.creation_options(rows.schema, frozenset(source.pii)))
                # Silver reads what each version added even after an erasure rewrote it.
                .options(**BRONZE_TABLE_PROPERTIES)
                .option("txnAppId", txn_app_id)
                .option("txnVersion", batch_id)
                .option("userMetadata", f"run_id={run_id} stage=bronze")
                .save(table_path)
            )
            crash_point("bronze.after_commit")
            if lines:
                # After the commit: a replayed batch (a crash in between) reads the lines
                # again, its append is skipped by Delta, and this removal runs again.
                _, left = remove_raw_lines(lines)
                held_back[batch_id] = sum(len(v) for v in lines.values())
                left_in.update(left)
        finally:
            batch_df.unpersist()

    query = (
        _read_raw_lines(spark, raw_path, source, catalog.config)
        .writeStream.queryName(f"bronze_{source.name}")
        .foreachBatch(write_batch)
        .option("checkpointLocation", catalog.checkpoint_dir(source.bronze_table))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    result = summarize(spark, catalog, source, before, 0.0)
    return replace(result, seconds=time.monotonic() - started,
                   suppressed_rows=sum(held_back.values()),
                   suppressed_left_in=tuple(sorted(left_in)))


def summarize(
    spark: SparkSession, catalog: Catalog, source: SourceSpec, before: int | None, seconds: float
) -> BronzeResult:
    """Rows and malformed rows added since version ``before``, read from the table itself.

    Only the versions this run committed are scanned (bronze is append-only, so its change
    feed between those versions is exactly the rows added); the total uses Delta's file
    statistics and reads no data.
    """
    name = source.bronze_table
    after = catalog.current_version(spark, name)
    if after is None:
        return BronzeResult(source.name, 0, 0, 0, None, seconds)
    per_file: list = []
    first_new = 0 if before is None else before + 1
    if first_new <= after:
        # Per file (a run lands a few files): the totals, and the files of which no line parsed.
        per_file = catalog.read_inserts(spark, name, first_new, after).groupBy(
            "_source_file"
        ).agg(
            F.count(F.lit(1)).alias("rows"),
            F.coalesce(F.sum(F.col("_is_malformed").cast("long")), F.lit(0)).alias("bad"),
        ).collect()
    total = catalog.read(spark, name).count()
    unparsed = tuple(sorted(
        Path(file_uri_path(r["_source_file"]) or r["_source_file"]).name
        for r in per_file if r["_source_file"] is not None and r["bad"] == r["rows"]
    ))
    return BronzeResult(source.name, sum(r["rows"] for r in per_file),
                        sum(r["bad"] for r in per_file), total, after, seconds,
                        unparsed_files=unparsed)


def unread_files(raw_path: str, source: SourceSpec) -> dict[str, tuple[str, ...]]:
    """Files of a local raw folder that Spark's file source would skip without a word, by
    BronzeResult field, names sorted: ``ignored_files``, those bronze does not read (a delivery
    named '.CSV' or '.txt'), and ``unreadable_files``, deliveries that cannot be read (a
    symbolic link whose file is gone). Object-store folders are not listed (the file source
    alone decides there)."""
    folder = local_path(raw_path)
    if not is_local_location(raw_path) or not folder.is_dir():
        return {}
    files = list(folder.iterdir())
    return {
        "ignored_files": tuple(sorted(
            p.name for p in files
            if p.is_file() and not p.name.startswith((".", "_")) and not source.takes_file(p.name)
        )),
        "unreadable_files": tuple(sorted(
            p.name for p in files
            if source.takes_file(p.name) and p.is_symlink() and not p.exists()
        )),
    }


def raw_folder_exists(raw_path: str) -> bool:
    """Local folders are checked; on object stores a prefix exists once a file is there."""
    if not is_local_location(raw_path):
        return True
    return local_path(raw_path).is_dir()


def moved_checkpoint_problem(checkpoint_dir: str, raw_path: str, table: str) -> str | None:
    """Why a source's stream checkpoint does not fit this data root, or None.

    A stream checkpoint records the absolute path of every raw file it took. A data root moved
    or copied elsewhere keeps them, and Spark then fails inside the stream ("Wrong basePath").
    The latest entry of the checkpoint's file log is compared with the raw folder read now
    (local checkpoints only: an object store's paths do not move with a copy).
    """
    checkpoint, raw = file_uri_path(checkpoint_dir), file_uri_path(raw_path)
    log = checkpoint / "sources" / "0" if checkpoint is not None else None
    if raw is None or log is None or not log.is_dir():
        return None
    batches = [p for p in log.iterdir() if re.fullmatch(r"\d+(\.compact)?", p.name)]
    if not batches:
        return None
    latest = max(batches, key=lambda p: int(p.name.split(".")[0]))
    recorded = None
    # Read up to the first entry only: a compacted log lists every file the stream ever took.
    with latest.open(encoding="utf-8", errors="replace") as log_file:
        next(log_file, None)  # the format version line ("v1")
        for line in log_file:
            try:
                recorded = file_uri_path(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue
            break
    if recorded is None or Path(os.path.realpath(raw)) in Path(os.path.realpath(recorded)).parents:
        return None
    return (
        f"{table}: its stream checkpoint {checkpoint} lists raw files under {recorded.parent}, "
        f"but this data root reads them from {raw}: the data root was moved or copied, and "
        f"stream checkpoints hold absolute paths. Run it from its old place, or build a new "
        f"lake from the raw files alone (copy raw/ into an empty data root and run `lakehouse "
        f"run all`); nothing was ingested"
    )


def run_bronze(
    spark: SparkSession, config: Config, sources: dict[str, SourceSpec], run_id: str,
    only: list[str] | None = None,
) -> list[BronzeResult]:
    """Ingest every declared source (or ``only`` those), ``bronze.parallel_sources`` at a time.

    Each source is its own stream, checkpoint and table, so sources land side by side: a
    daily delivery's time per source is mostly waiting (starting the stream, reading the
    checkpoint, committing to Delta), which overlaps. Every source runs to its end before a
    failure is raised (what landed stays, as it does when sources land one after the other),
    and the failure raised is that of the first failing source in declaration order.
    """
    catalog = Catalog(config)
    chosen = [s for name, s in sources.items() if not only or name in only]
    present = [s for s in chosen if raw_folder_exists(catalog.raw_dir(s.raw_dir))]
    # A source that landed before and has no folder now is a renamed raw_dir (a typo), not a
    # source that has not delivered yet: reported as skipped, its new files went unread.
    gone = [s for s in chosen if s not in present
            and catalog.current_version(spark, s.bronze_table) is not None]
    if gone:
        s = gone[0]
        raise InputDataError(
            f"{s.bronze_table} holds rows landed before, but the raw folder of source "
            f"{s.name} ({catalog.raw_dir(s.raw_dir)}) does not exist: check its raw_dir "
            f"'{s.raw_dir}' in "
            f"{Path(config.conf_dir) / SOURCES_FILE} (create the folder empty if its files "
            f"were archived); nothing was ingested"
        )
    if not present:
        raise InputDataError(
            f"no raw files for {', '.join(s.name for s in chosen)} under {catalog.raw_root}: "
            f"run `lakehouse generate --scale xs` or deliver files there first"
        )
    # Before any source lands: a refused file or a moved lake leaves every table as it was.
    moved = [problem for s in present if (problem := moved_checkpoint_problem(
        catalog.checkpoint_dir(s.bronze_table), catalog.raw_dir(s.raw_dir), s.bronze_table))]
    if moved:
        raise InputDataError(moved[0])
    for s in present:
        check_raw_files(spark, catalog.raw_dir(s.raw_dir), catalog.checkpoint_dir(s.bronze_table),
                        s, int(config.get("bronze.max_line_bytes")))
    suppression = load_bronze_suppression(spark, config, catalog)

    def land(source: SourceSpec) -> BronzeResult:
        return replace(ingest_source(spark, catalog, source, run_id, suppression),
                       **unread_files(catalog.raw_dir(source.raw_dir), source))

    landed = dict(zip((s.name for s in present), side_by_side(
        land, present, int(config.get("bronze.parallel_sources")), "bronze"
    ), strict=True))
    # A source that has not delivered yet is reported, not an error: the others still land.
    return [
        landed[s.name] if s in present
        else BronzeResult(s.name, 0, 0, 0, None, 0.0, "no raw folder yet")
        for s in chosen
    ]
