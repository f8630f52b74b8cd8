"""The silver run: bronze changes -> typed, checked, deduplicated, pseudonymised Delta tables.

Two phases, so that a failing rule or an unsafe schema change commits nothing:

1. prepare (no writes): per source (``silver.parallel_tables`` at a time, each after the
   sources its referential rules read), read what bronze appended since the last silver run
   (the change data feed from the recorded version + 1 up to the version current now), type
   and normalise it, evaluate the quality rules, raise on a ``fail`` rule; then build the identity
   map update, the lookups and the projections, and check every target table's schema.
2. commit: move looked-up rows of ids that get another first owner, MERGE the identity map,
   MERGE the silver tables, ``silver.parallel_tables`` at a time (only newer versions update a
   key), fill in rows of newly linked cookies / handles, insert quarantine rows, append the dq
   metrics and finally record the processed bronze versions in audit.stage_progress.

Every MERGE is idempotent (a replayed row is not newer and an existing quarantine row is not
inserted again), so a crash after some commits but before the progress write is harmless: the
next run reads the same bronze versions again and changes nothing that was already written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.storagelevel import StorageLevel

from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.errors import InputDataError, SchemaChangeError
from lakehouse.parallel import side_by_side
from lakehouse.privacy.keycheck import lake_pseudonym_key, record_key_check
from lakehouse.quality import (
    DQ_METRICS_SCHEMA,
    QUALITY_FILE,
    QUARANTINE_SCHEMA,
    SourceRules,
    check_fail_rules,
    check_patterns,
    failing_metrics,
    is_quarantined,
    load_quality,
    metric_rows,
    quality_figures,
    to_quarantine_rows,
    with_rule_results,
)
from lakehouse.silver import io
from lakehouse.silver.cleanse import (
    filter_latest_per_key,
    with_landed_fields,
    with_quarantine_raw_where,
    with_typed_columns,
)
from lakehouse.silver.identity import (
    IDENTITY_SCHEMA,
    IDENTITY_SOURCES,
    identity_links,
    identity_view,
    map_rows_matching,
    merge_identity,
    owner_changes,
    resolve_identity,
    rows_to_reattribute,
    rows_to_reresolve,
    with_resolved_customer,
)
from lakehouse.silver.transforms import (
    ANONYMITY_PARTITION,
    KEY_LOOKED_UP,
    Reference,
    TableSpec,
    load_reference,
    table_spec,
    to_customer_pii,
)
from lakehouse.sources import SourceSpec, load_sources

STAGE = "silver"
QUARANTINE = "silver.quarantine"
IDENTITY = "silver.identity_map"
PII_TABLE = "silver.customer_pii"
DQ_METRICS = "audit.dq_metrics"
# Silver tables whose rows carry no bronze version, and the sources that feed each
# (identity_links reads three; to_customer_pii the CRM only).
UNVERSIONED_TABLE_SOURCES = {IDENTITY: IDENTITY_SOURCES, PII_TABLE: ("crm_customers",)}
QUARANTINE_KEY = ("source", "natural_key", "rule", "raw")


def is_clean() -> Column:
    """An evaluated row that parsed and passed every drop rule."""
    return ~F.col("_is_malformed") & F.col("_drop_rule").isNull()


@dataclass
class SourcePlan:
    """What one source contributes to this run (DataFrames are lazy until commit)."""

    source: SourceSpec
    spec: TableSpec
    rules: SourceRules
    versions: tuple[int, int]
    evaluated: DataFrame
    figures: dict[str, Any]
    seconds: float
    # Lowest and highest first key column value of the clean rows (None: no such rows).
    key_range: tuple[Any, Any] = (None, None)
    # Whether silver_df also holds old anonymous rows re-resolved in this run.
    reresolves: bool = False
    silver_df: DataFrame | None = None
    pii_df: DataFrame | None = None
    quarantine_df: DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"silver.{self.spec.table}"

    @property
    def clean(self) -> DataFrame:
        """Rows that parsed and passed every drop rule, before dedup and lookups."""
        return self.evaluated.where(is_clean())


# -- phase 1: prepare -----------------------------------------------------------------------


def producers(specs: Mapping[str, TableSpec]) -> dict[str, str]:
    """Each silver table -> the source that writes it (referential rules name tables)."""
    return {f"silver.{spec.table}": name for name, spec in specs.items()}


def referenced_sources(
    sources: Mapping[str, SourceSpec], specs: Mapping[str, TableSpec],
    rules: Mapping[str, SourceRules],
) -> dict[str, set[str]]:
    """Each source -> the other sources whose silver tables its referential rules read."""
    producer = producers(specs)
    return {
        n: {producer[str(r.params["ref_table"])] for r in rules[n].rules
            if r.kind == "referential" and str(r.params["ref_table"]) in producer} - {n}
        for n in sources
    }


def preparation_waves(names: Sequence[str], deps: Mapping[str, set[str]]) -> list[list[str]]:
    """``names`` (declaration order) cut into waves that can be prepared side by side: a source
    comes in a wave after those of the sources it references (``deps``: referenced_sources),
    whose clean rows its referential rules read. In a reference cycle, the first source left
    goes alone. The waves one after the other are the processing order: declaration order,
    except that a referenced source comes first."""
    waves: list[list[str]] = []
    done: set[str] = set()
    while len(done) < len(names):
        wave = [n for n in names if n not in done and deps[n] <= done]
        if not wave:
            wave = [next(n for n in names if n not in done)]
        waves.append(wave)
        done.update(wave)
    return waves


def _ref_keys(
    spark: SparkSession, catalog: Catalog, rules: SourceRules, plans: Mapping[str, SourcePlan],
    producer: Mapping[str, str],
) -> dict[str, DataFrame]:
    """Keys of each referenced table: what it holds plus what this run is about to add."""
    keys: dict[str, DataFrame] = {}
    for rule in rules.rules:
        if rule.kind != "referential":
            continue
        table, column = str(rule.params["ref_table"]), str(rule.params["ref_column"])
        parts = []
        if catalog.exists(spark, table):
            # Pinned: the frame is cached with the evaluated rows, and this run MERGEs into
            # the referenced table before it MERGEs this source (see Catalog.read_pinned).
            parts.append(catalog.read_pinned(spark, table).select(F.col(column).alias("k")))
        source = producer.get(table)
        if source in plans and column in plans[source].clean.columns:
            parts.append(plans[source].clean.select(F.col(column).alias("k")))
        if not parts:
            parts.append(spark.createDataFrame([], "k string"))
        df = parts[0]
        for part in parts[1:]:
            df = df.unionByName(part)
        keys[table] = df
    return keys


def prepare_source(
    spark: SparkSession, catalog: Catalog, source: SourceSpec, spec: TableSpec,
    rules: SourceRules, last_version: int | None, key: bytes, ref: Reference,
    ref_keys: Mapping[str, DataFrame],
) -> SourcePlan | None:
    """Read, type, check one source's new bronze rows; None when bronze has nothing new."""
    started = time.monotonic()
    current = catalog.current_version(spark, source.bronze_table)
    start = 0 if last_version is None else last_version + 1
    if current is None or current < start:
        return None
    changes = io.read_bronze_changes(spark, catalog, source.bronze_table, start, current)
    typed = with_typed_columns(with_landed_fields(changes, source), source)
    ruled = with_rule_results(
        spec.extras(typed, key, ref), rules, source.natural_key, source.pii, ref_keys
    )
    # The quarantine record is built after the rules, for the rows that go to quarantine only.
    evaluated = kept_as_rows(with_quarantine_raw_where(ruled, source, key, is_quarantined()))
    figures = quality_figures(evaluated, rules, source.columns, source.natural_key).first()
    figures_dict = figures.asDict() if figures else {}
    check_fail_rules(figures_dict, rules, evaluated, source.natural_key)
    # A pass of its own over the rows just cached: a string min/max inside the figures'
    # aggregate, which holds a count(distinct), turns it into a sort-based aggregate that
    # sorts every row twice (3M rows: 2.6-3.1 s instead of 2.2-2.5 s); this pass alone 0.4-0.5 s.
    bounds = evaluated.agg(*clean_key_range(spec.key[0])).first()
    key_range = (bounds["_key_low"], bounds["_key_high"]) if bounds else (None, None)
    return SourcePlan(source, spec, rules, (start, current), evaluated, figures_dict,
                      time.monotonic() - started, key_range)


def kept_as_rows(df: DataFrame) -> DataFrame:
    """``df`` computed once and kept (in memory, spilling to local disk like persist()), as a
    frame whose plan is only those stored rows: a local checkpoint.

    Why not persist(): a frame built on a persisted one still carries its whole plan, and
    Spark analyses that whole tree again for every frame derived from it (DeduplicateRelations
    and CheckAnalysis walk all of it, and the SQL events render it). A source's evaluated rows
    come from reading the change feed, typing, pseudonymising and every rule, and silver
    derives dozens of frames from them (figures, quarantine rows, identity links, projections,
    each table's MERGE source): on 2 cores that analysis was the largest single user of the
    driver's CPU. Measured at scale m, an incremental day's silver on copies of one 30-day
    lake, alternately in one warm session: 61.0 s with persist(), 46.2 s with a local
    checkpoint (stored deserialized, Spark's default); with the serialized storage used here,
    the pipeline benchmark's incremental silver took 48.0 s against 57.0 s before.

    What it costs: the rows are not recomputed if the executor holding them is lost (the stage
    fails; silver's commits are idempotent and its progress is written last, so running it
    again is safe), and unpersist() cannot release them: Spark's ContextCleaner does when the
    frame is garbage-collected, as it does for any unreferenced RDD. Serialized storage keeps
    a first load's millions of rows compact.
    """
    return df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)


def clean_key_range(column: str) -> list[Column]:
    """Aggregates: lowest and highest ``column`` value among the clean rows (_key_low/_key_high).

    Every new row silver MERGEs for this batch comes from those rows with its key as it is (the
    projections select it by name; align_to_table may only widen its type, which keeps the
    order); the re-resolved old rows are covered by KeyScope's flag instead.
    """
    key = F.when(is_clean(), F.col(column))
    return [F.min(key).alias("_key_low"), F.max(key).alias("_key_high")]


@dataclass
class LookupFollowUp:
    """What this run's identity links change in a lookup table beyond its own batch.

    ``late_rows``: where the table's source brought nothing new this run, its old anonymous
    rows whose id became known in it (the posts of a handle that reaches the CRM only after
    them, say). ``moved``: the table's looked-up rows of ids this run gives another customer,
    moved to their new owner.
    """

    source: SourceSpec
    spec: TableSpec
    late_rows: DataFrame | None = None
    attributed: int = 0
    moved: int = 0

    @property
    def table(self) -> str:
        return f"silver.{self.spec.table}"


def surely_looked_up(spec: TableSpec) -> Column:
    """Rows of a lookup table written before KEY_LOOKED_UP existed whose key is known to come
    from the map: those of the anonymous partition (every key there is still to be looked up),
    or all of them where no record names its customer (social posts)."""
    return F.col(ANONYMITY_PARTITION) if spec.record_names_customer else F.lit(True)


def read_silver_table(spark: SparkSession, catalog: Catalog, spec: TableSpec) -> DataFrame:
    """A silver table with the columns this version writes: a lookup table written before
    KEY_LOOKED_UP existed shows it as commit's migration sets it (true where surely_looked_up,
    elsewhere not known)."""
    df = catalog.read(spark, f"silver.{spec.table}")
    if spec.lookup and KEY_LOOKED_UP not in df.columns:
        df = df.withColumn(KEY_LOOKED_UP, F.when(surely_looked_up(spec), F.lit(True)))
    return df


def tables_to_migrate(
    specs: Mapping[str, TableSpec], schemas: Mapping[str, T.StructType | None],
) -> list[TableSpec]:
    """Lookup tables written before KEY_LOOKED_UP existed (commit adds the column), from the
    schemas check_declared_types read (source name -> its silver table's, None: no table)."""
    return [
        spec for name, spec in specs.items()
        if spec.lookup and schemas.get(name) is not None
        and KEY_LOOKED_UP not in schemas[name].fieldNames()
    ]


def key_scope(plan: SourcePlan) -> io.KeyScope:
    """Where in the silver table this batch's keys can be (see io.KeyScope); the anonymous
    partition is read only when the batch re-resolves rows of it."""
    flag = plan.spec.partition_by[0] if plan.reresolves and plan.spec.partition_by else None
    return io.KeyScope(plan.spec.key[0], *plan.key_range, or_flag=flag)


def _dedup_quarantine(df: DataFrame) -> DataFrame:
    """One row per quarantine key; the earliest delivery wins (deterministically)."""
    window = Window.partitionBy(*QUARANTINE_KEY).orderBy(
        F.col("bronze_version").asc_nulls_last(), F.col("source_file").asc_nulls_last()
    )
    return df.withColumn("_n", F.row_number().over(window)).where("_n = 1").drop("_n")


def ids_to_look_up(plans: Mapping[str, SourcePlan]) -> DataFrame | None:
    """(id_type, id_value) of every lookup column value of the batches (None: no lookup
    source has a batch)."""
    ids = [
        plan.clean.select(F.lit(plan.spec.lookup[1]).alias("id_type"),
                          F.col(plan.spec.lookup[0]).alias("id_value"))
        for plan in plans.values() if plan.spec.lookup
    ]
    return reduce(DataFrame.unionByName, ids) if ids else None


def build_outputs(
    spark: SparkSession, catalog: Catalog, plans: Mapping[str, SourcePlan], run_id: str,
    schemas: Mapping[str, T.StructType | None], workers: int = 1,
) -> tuple[DataFrame | None, DataFrame | None]:
    """Identity update and the projected, schema-checked frames of every table (no writes),
    ``workers`` sources at a time. ``schemas``: check_declared_types' (which silver tables
    exist).

    Returns the identity rows to MERGE (schema-checked) and the cached frame behind them
    (which also holds each id's key before the run).
    """
    # Pinned: it is cached below, and the run MERGEs into the map (see Catalog.read_pinned).
    existing_map = catalog.read_pinned(spark, IDENTITY) if catalog.exists(spark, IDENTITY) else None
    links = identity_links({n: p.clean for n, p in plans.items()})
    touched = cached = view = None
    if links is not None:
        # Cached with the key each id had before the run (owner_changes reads it).
        cached = resolve_identity(links, existing_map, keep_previous=True).persist()
        touched = cached.select(*IDENTITY_SCHEMA.fieldNames())
        view = identity_view(touched, existing_map)
    elif existing_map is not None:
        view = existing_map
    looked_up = ids_to_look_up(plans) if existing_map is not None else None
    if looked_up is not None:
        # Each lookup source joined the whole map, read from storage, again (three sources:
        # three reads and shuffles of it); the map rows of the batches' ids are far fewer, and
        # kept once. Measured at scale m (an incremental day on copies of one 30-day lake,
        # alternately in one warm session): silver 37.5 / 37.3 s instead of 41.0 / 38.9 s.
        # (Not on a first load: there the view is this run's cached rows, not a read.)
        view = kept_as_rows(map_rows_matching(view, looked_up))
    quarantine_schema = io.table_schema(spark, catalog, QUARANTINE)

    def project(item: tuple[str, SourcePlan]) -> None:
        name, plan = item
        src = plan.source
        latest = filter_latest_per_key(plan.clean, src.natural_key, src.event_time)
        if plan.spec.lookup and view is not None:
            column, id_type = plan.spec.lookup
            latest = with_resolved_customer(latest, view, column, id_type)
        # Read once: its schema checks the batch, its rows are re-resolved.
        table_df = (read_silver_table(spark, catalog, plan.spec)
                    if schemas.get(name) is not None else None)
        existing = table_df.schema if table_df is not None else None
        silver_df = io.align_to_table(plan.spec.project(latest, run_id), existing, plan.table)
        if plan.spec.lookup and touched is not None and table_df is not None:
            column, id_type = plan.spec.lookup
            silver_df = silver_df.unionByName(
                rows_to_reresolve(table_df, touched, column, id_type, silver_df, plan.spec.key)
            )
            plan.reresolves = True
        plan.silver_df = silver_df
        if src.name == "crm_customers":
            plan.pii_df = io.align_to_table(
                to_customer_pii(latest, run_id), io.table_schema(spark, catalog, PII_TABLE),
                PII_TABLE,
            )
        quarantine = to_quarantine_rows(
            plan.evaluated, src.name, src.natural_key, run_id, F.col("_quarantine_raw")
        )
        plan.quarantine_df = io.align_to_table(
            _dedup_quarantine(quarantine), quarantine_schema, QUARANTINE
        )

    # Building these plans is the driver's work (Spark analyses each step of them), which
    # overlaps across sources; a schema refused in one is raised all the same.
    side_by_side(project, plans.items(), workers, "silver")
    if touched is not None:
        touched = io.align_to_table(touched, io.table_schema(spark, catalog, IDENTITY), IDENTITY)
    return touched, cached


def lookup_follow_ups(
    spark: SparkSession, catalog: Catalog, sources: Mapping[str, SourceSpec],
    specs: Mapping[str, TableSpec], plans: Mapping[str, SourcePlan], touched: DataFrame | None,
    schemas: Mapping[str, T.StructType | None],
) -> list[LookupFollowUp]:
    """Every existing lookup table (``schemas``: check_declared_types'), when this run links
    ids: in the tables of sources without a plan, the old anonymous rows the new links
    attribute. The links of an id can come from another source (a handle from the CRM):
    without this, those rows waited for their own source's next delivery, and an incremental
    lake differed from a full run over the same files. The rows of ids whose owner this run
    changes are found at commit (move_looked_up_rows)."""
    if touched is None:
        return []
    follow_ups = []
    for name, spec in specs.items():
        if spec.lookup is None or schemas.get(name) is None:
            continue
        late_rows = None
        if name not in plans:
            column, id_type = spec.lookup
            late_rows = rows_to_reresolve(
                read_silver_table(spark, catalog, spec), touched, column, id_type, None,
                spec.key,
            )
        follow_ups.append(LookupFollowUp(sources[name], spec, late_rows))
    return follow_ups


def move_looked_up_rows(
    spark: SparkSession, catalog: Catalog, follow_up: LookupFollowUp, new_owners: DataFrame,
) -> int:
    """Move the looked-up rows of ids that got another first owner (``new_owners``:
    owner_changes; rows_to_reattribute) to that owner; no read of the table when no id of its
    kind changed owner (the usual case), no MERGE and no commit when no row is to move.

    Runs before the map's MERGE, which is what makes the change visible (owner_changes): a
    run killed after it finds the changes again when it is re-run, one killed before the map's
    MERGE finds the rows already moved. Rows the batch re-delivers are in the table already;
    its new rows and newer versions were looked up with the new owner."""
    spec = follow_up.spec
    assert spec.lookup is not None
    column, id_type = spec.lookup
    changes = new_owners.where(F.col("id_type") == id_type)
    if changes.isEmpty():
        return 0
    moves = rows_to_reattribute(
        catalog.read_pinned(spark, follow_up.table), changes, column, id_type, spec.key
    ).persist()
    try:
        low, high = moves.agg(F.min(spec.key[0]), F.max(spec.key[0])).first()
        if low is None:
            return 0
        scope = io.KeyScope(spec.key[0], low, high)
        where = (F.col(f"t.{KEY_LOOKED_UP}") & ~F.col(f"t.{ANONYMITY_PARTITION}")
                 & scope.condition("t"))
        return io.update_matched(spark, catalog.path(follow_up.table), moves, spec.key,
                                 "customer_key", where)
    finally:
        moves.unpersist()


# -- phase 2: commit ------------------------------------------------------------------------


def merge_plan(
    spark: SparkSession, catalog: Catalog, plan: SourcePlan, run_id: str,
    measured_at: datetime,
) -> list[tuple]:
    """MERGE one source's silver rows (and the CRM's restricted PII rows); sets the plan's
    counts and returns its dq metric rows."""
    started = time.monotonic()
    src = plan.source
    assert plan.silver_df is not None and plan.quarantine_df is not None
    # The MERGE's KeyScope skips files by the first key column's min/max.
    io.ensure_table(spark, catalog, plan.table, plan.silver_df.schema, plan.spec.partition_by,
                    indexed_strings=frozenset(plan.spec.key[:1]))
    merged = io.merge_newer(spark, catalog.path(plan.table), plan.silver_df, plan.spec.key,
                            src.event_time, "customer_key" if plan.spec.lookup else None,
                            # The anonymity flag (the partition) and KEY_LOOKED_UP follow
                            # customer_key.
                            filled_with=plan.spec.filled_with, scope=key_scope(plan))
    if plan.pii_df is not None:
        io.ensure_table(spark, catalog, PII_TABLE, plan.pii_df.schema)
        io.merge_newer(spark, catalog.path(PII_TABLE), plan.pii_df, ("customer_key",),
                       "updated_at")
    figures = plan.figures
    parsed, malformed = int(figures["parsed"] or 0), int(figures["malformed"] or 0)
    dropped = int(figures["dropped"] or 0)
    inserted, updated = merged["inserted"], merged["updated"]
    plan.counts = {
        "rows_in": int(figures["rows_in"] or 0),
        "rows_inserted": inserted,
        "rows_updated": updated,
        "quarantined": malformed + dropped,
        # Rows of this batch that became neither a new silver row nor a quarantine row:
        # repeats, re-deliveries and versions a newer one replaced, as reconciliation counts
        # them (bronze = silver + quarantined + duplicates). Not minus `updated`: that also
        # counts older anonymous rows attributed late, not rows of this batch.
        "duplicates_removed": parsed - dropped - inserted,
        "warned_rows": int(figures["warned"] or 0),
    }
    plan.seconds += time.monotonic() - started
    return metric_rows(
        figures, plan.rules, src.columns, run_id=run_id, table=plan.table,
        extra_counts={k: v for k, v in plan.counts.items()
                      if k not in ("warned_rows", "quarantined")},
        versions=plan.versions, measured_at=measured_at,
    )


def commit(
    spark: SparkSession, catalog: Catalog, plans: Mapping[str, SourcePlan],
    touched: DataFrame | None, run_id: str, follow_ups: Sequence[LookupFollowUp] = (),
    migrate: Sequence[TableSpec] = (), new_owners: DataFrame | None = None, workers: int = 1,
) -> list[tuple]:
    """Write everything prepared; returns the dq metric rows (written last but one).
    ``new_owners``: the ids this run gives another customer (owner_changes); ``workers``:
    silver tables MERGEd at a time (silver.parallel_tables)."""
    for spec in migrate:
        # Killed between its two commits, the column stays null where it should be true: an
        # anonymous row still gets true when its key is filled in (TableSpec.filled_with).
        io.add_boolean_column(spark, catalog.path(f"silver.{spec.table}"), KEY_LOOKED_UP,
                              true_where=surely_looked_up(spec))
    if new_owners is not None:
        for follow_up in follow_ups:
            follow_up.moved = move_looked_up_rows(spark, catalog, follow_up, new_owners)
    if touched is not None:
        io.ensure_table(spark, catalog, IDENTITY, IDENTITY_SCHEMA)
        merge_identity(spark, catalog.path(IDENTITY), touched)
    io.ensure_table(spark, catalog, QUARANTINE, QUARANTINE_SCHEMA)
    measured_at = datetime.now(UTC).replace(tzinfo=None)

    def merge_source(plan: SourcePlan) -> list[tuple]:
        return merge_plan(spark, catalog, plan, run_id, measured_at)

    # The silver tables are independent writes (each source its own table; the map was merged
    # above): MERGEd side by side, their metric rows kept in the order of the plans. After a
    # failure nothing is lost: the progress below is not written, and the next run reads the
    # same bronze versions again.
    metrics = [row for rows in side_by_side(merge_source, plans.values(), workers, "silver")
               for row in rows]
    for fill in follow_ups:
        if fill.late_rows is not None and not fill.late_rows.isEmpty():
            # (No MERGE, no commit when there is nothing to attribute.) Fill only: the rows
            # come from the table itself, and the empty key range inserts none of them should
            # another writer have moved one meanwhile (see io.KeyScope).
            flag = fill.spec.partition_by[0] if fill.spec.partition_by else None
            merged = io.merge_newer(
                spark, catalog.path(fill.table), fill.late_rows, fill.spec.key,
                fill.source.event_time, "customer_key", filled_with=fill.spec.filled_with,
                scope=io.KeyScope(fill.spec.key[0], None, None, or_flag=flag),
            )
            fill.attributed = merged["updated"]
    # One MERGE for the quarantine rows of every source (fewer commits than one per source).
    quarantine_df = reduce(DataFrame.unionByName, [p.quarantine_df for p in plans.values()])
    io.merge_insert_only(spark, catalog.path(QUARANTINE), quarantine_df, QUARANTINE_KEY)
    if metrics:
        io.append(spark, catalog, DQ_METRICS, spark.createDataFrame(metrics, DQ_METRICS_SCHEMA))
    return metrics


def summary_lines(
    plans: Mapping[str, SourcePlan], metrics: list[tuple],
    follow_ups: Sequence[LookupFollowUp] = (),
) -> list[str]:
    lines = []
    for plan in plans.values():
        c = plan.counts
        lines.append(
            f"  {plan.table:<20} in {c['rows_in']:>9,}  out {c['rows_inserted']:>9,} new"
            f" {c['rows_updated']:>7,} updated  quarantined {c['quarantined']:>7,}"
            f"  duplicates removed {c['duplicates_removed']:>7,}  {plan.seconds:6.1f}s"
        )
    for fill in follow_ups:
        if fill.attributed:
            lines.append(f"  {fill.table:<20} {fill.attributed:,} earlier anonymous row(s) "
                         f"attributed")
        if fill.moved:
            id_type = fill.spec.lookup[1] if fill.spec.lookup else "id"
            lines.append(f"  {fill.table:<20} {fill.moved:,} looked-up row(s) moved to the "
                         f"customer their {id_type} was seen with first")

    lines += failing_metrics(metrics)
    total_in = sum(p.counts["rows_in"] for p in plans.values())
    total_q = sum(p.counts["quarantined"] for p in plans.values())
    lines.append(f"silver: {total_in:,} bronze rows processed, {total_q:,} quarantined")
    return lines


def sources_with_unread_bronze(
    spark: SparkSession, config: Config, sources: Mapping[str, SourceSpec] | None = None,
) -> list[str]:
    """Sources whose bronze table holds rows silver has not read yet, in declaration order.

    Commits that add no row (an erasure's VACUUM, say) do not count."""
    catalog = Catalog(config)
    sources = sources if sources is not None else load_sources(config)
    progress = io.read_progress(spark, catalog, STAGE)
    unread = []
    for name, source in sources.items():
        current = catalog.current_version(spark, source.bronze_table)
        start = progress[name] + 1 if name in progress else 0
        if current is None or start > current:
            continue
        try:
            if not catalog.read_inserts(spark, source.bronze_table, start, current).isEmpty():
                unread.append(name)
        except InputDataError:
            # Versions no longer readable (an old lake after an erasure): silver itself says
            # so with the remedy; this check only informs, so it does not stop gold.
            unread.append(name)
    return unread


def table_specs(sources: Mapping[str, SourceSpec]) -> dict[str, TableSpec]:
    return {n: table_spec(s) for n, s in sources.items()}


def silver_rules(
    spark: SparkSession | None, config: Config, sources: Mapping[str, SourceSpec],
) -> tuple[dict[str, TableSpec], dict[str, SourceRules]]:
    """Each source's table spec and its quality rules, every rule checked (regex patterns
    too, when a session is given): a mistake in conf/quality.yaml is one ConfigError."""
    specs = table_specs(sources)
    rules = load_quality(
        config, sources, {n: sp.derived for n, sp in specs.items()}, producers(specs)
    )
    if spark is not None:
        check_patterns(spark, rules, str(Path(config.conf_dir) / QUALITY_FILE))
    return specs, rules


# A declared column type (sources.yaml) as its silver table stores it.
STORED_TYPES = {"string": "string", "int": "int", "long": "bigint", "double": "double",
                "boolean": "boolean", "date": "date", "timestamp": "timestamp"}


def check_declared_types(
    spark: SparkSession, catalog: Catalog, sources: Mapping[str, SourceSpec],
    specs: Mapping[str, TableSpec],
) -> dict[str, T.StructType | None]:
    """Every declared column has the type its silver table holds, before anything is read.
    Returns the schema of each source's silver table (None: not there yet).

    A changed declaration cannot be applied safely either way: narrower (double -> int) it
    quarantines the values that no longer convert ('19.99') while the table quietly widens
    the rest back, and as text it meets rules written for numbers inside Spark.
    """
    schemas: dict[str, T.StructType | None] = {}
    for name, source in sources.items():
        table = f"silver.{specs[name].table}"
        existing = schemas[name] = io.table_schema(spark, catalog, table)
        if existing is None:
            continue
        held = {f.name: f.dataType.simpleString() for f in existing.fields}
        for column, col_type in source.columns.items():
            if column in held and held[column] != STORED_TYPES[col_type]:
                raise SchemaChangeError(
                    f"{table}: column '{column}' is declared {col_type} in sources.yaml "
                    f"(source {name}) but the table holds {held[column]}: a type change cannot "
                    f"be applied safely; nothing was committed (revert the declaration or "
                    f"migrate the table deliberately)"
                )
    return schemas


def check_silver_config(config: Config) -> None:
    """The silver stage's configuration (sources, reference data, quality rules, declared
    types against the tables), checked before the first stage of a run: `run all` must not
    land bronze and then stop on a typo in the rules."""
    sources = load_sources(config)
    load_reference(config)
    spark = SparkSession.getActiveSession()
    if spark is not None:
        lake_pseudonym_key(spark, config)
        # Before the rules: a rule may be written for the type the table holds.
        check_declared_types(spark, Catalog(config), sources, table_specs(sources))
    silver_rules(spark, config, sources)


def run_silver(
    spark: SparkSession, config: Config, run_id: str,
    sources: Mapping[str, SourceSpec] | None = None,
) -> list[str]:
    """Bring every silver table up to date with bronze; summary lines per table."""
    catalog = Catalog(config)
    sources = dict(sources) if sources is not None else load_sources(config)
    key = lake_pseudonym_key(spark, config, catalog)
    ref = load_reference(config)
    # Types before rules: a rule may be written for the type the table holds.
    schemas = check_declared_types(spark, catalog, sources, table_specs(sources))
    specs, rules = silver_rules(spark, config, sources)
    progress = io.read_progress(spark, catalog, STAGE)
    producer = producers(specs)
    plans: dict[str, SourcePlan] = {}
    cached: DataFrame | None = None
    workers = int(config.get("silver.parallel_tables"))

    def prepare(name: str) -> None:
        # Reads only the plans of earlier waves (the sources this one references).
        ref_keys = _ref_keys(spark, catalog, rules[name], plans, producer)
        plan = prepare_source(spark, catalog, sources[name], specs[name], rules[name],
                              progress.get(name), key, ref, ref_keys)
        if plan is not None:
            # Kept at once: released below even when another source of the wave fails.
            plans[name] = plan

    waves = preparation_waves(list(sources), referenced_sources(sources, specs, rules))
    order = [name for wave in waves for name in wave]
    try:
        for wave in waves:
            side_by_side(prepare, wave, workers, "silver")
        plans = {n: plans[n] for n in order if n in plans}
        if not plans:
            return ["silver: nothing new in bronze since the last run"]
        touched, cached = build_outputs(spark, catalog, plans, run_id, schemas, workers)
        follow_ups = lookup_follow_ups(spark, catalog, sources, specs, plans, touched, schemas)
        metrics = commit(spark, catalog, plans, touched, run_id, follow_ups,
                         migrate=tables_to_migrate(specs, schemas),
                         new_owners=owner_changes(cached) if cached is not None else None,
                         workers=workers)
        if touched is not None:
            record_key_check(spark, catalog, key)
        io.write_progress(
            spark, catalog, STAGE,
            {n: (p.source.bronze_table, p.versions[1]) for n, p in plans.items()}, run_id,
        )
        return summary_lines(plans, metrics, follow_ups)
    finally:
        # (The plans' evaluated rows are local checkpoints: see kept_as_rows.)
        if cached is not None:
            cached.unpersist()


def reread_after_restore(
    spark: SparkSession, config: Config, table: str, before: int, restored_to: int
) -> list[str]:
    """After ``table`` was restored to an older version, let silver read bronze again from there.

    audit.stage_progress records how far silver has read each bronze table; a restore of a
    silver table takes out rows of versions recorded as read, and the next silver run would
    never bring them back. Reading again is safe: a row already there is not newer, and changes
    nothing (merge_newer); a quarantined one is there already (insert-only). Returns what was
    set back. How far back, by table:

    - a table one source feeds: to the newest bronze version the restored table holds a row of
      (``_bronze_version``; none: from the start);
    - silver.quarantine (``before``: its version before the restore) names the source and
      bronze version of each row: every source is set back to just before the oldest row the
      restore took out;
    - identity_map and customer_pii, whose rows carry no bronze version (``restored_to``: the
      version restored): the sources feeding them are set back to the progress recorded before
      the first commit the restore took out, which is how far silver had read when the run
      that made that commit started.
    """
    catalog = Catalog(config)
    sources = load_sources(config)
    feeding = [n for n, s in sources.items() if f"silver.{table_spec(s).table}" == table]
    progress = io.read_progress(spark, catalog, STAGE)
    if table == QUARANTINE:
        # Quarantine rows name their source and bronze version: each source is read again
        # from the oldest bronze version among the rows the restore took out.
        removed = (
            catalog.read(spark, table, version=before)
            .exceptAll(catalog.read(spark, table))
            .groupBy("source").agg(F.min("bronze_version").alias("oldest"))
            .collect()
        )
        rewind = {r["source"]: (sources[r["source"]].bronze_table, int(r["oldest"]) - 1)
                  for r in removed
                  if r["source"] in sources and progress.get(r["source"], -1) >= r["oldest"]}
        return _set_back(spark, catalog, table, rewind, progress)
    if table in UNVERSIONED_TABLE_SOURCES:
        earlier = io.progress_before_commit(spark, catalog, STAGE, table, restored_to + 1)
        rewind = {n: (sources[n].bronze_table, earlier.get(n, -1))
                  for n in UNVERSIONED_TABLE_SOURCES[table]
                  if n in sources and progress.get(n, -1) > earlier.get(n, -1)}
        return _set_back(spark, catalog, table, rewind, progress)
    if not feeding or not any(n in progress for n in feeding):
        return []
    held = catalog.read(spark, table).agg(F.max("_bronze_version")).first()[0]
    read_to = -1 if held is None else int(held)
    rewind = {n: (sources[n].bronze_table, read_to) for n in feeding
              if n in progress and progress[n] > read_to}
    return _set_back(spark, catalog, table, rewind, progress)


def _set_back(
    spark: SparkSession, catalog: Catalog, table: str, rewind: Mapping[str, tuple[str, int]],
    progress: Mapping[str, int],
) -> list[str]:
    """Record ``rewind`` (source -> (bronze table, version read up to)); a line per source."""
    if not rewind:
        return []
    io.write_progress(spark, catalog, STAGE, rewind, run_id=f"restore of {table}")
    return [
        f"{table}: the next silver run reads {bronze} again from version {read_to + 1} "
        f"(it had read up to {progress[n]}; audit.stage_progress set back)"
        for n, (bronze, read_to) in sorted(rewind.items())
    ]
