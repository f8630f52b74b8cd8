"""Gold layer: customer 360, marketing journeys and daily KPIs, computed for one `as_of` date.

The builders are pure DataFrame transforms in the submodules (import them from there):

* `lakehouse.gold.customer_360.build_customer_360`
* `lakehouse.gold.journeys.build_journeys` (and `journey_touchpoints`, `select_touchpoints`)
* `lakehouse.gold.kpis.build_kpi_daily`, `lakehouse.gold.kpis.build_kpi_channel_daily`

This module holds the few Column helpers they share (the `as_of` cut-off, defensive
deduplication, exact sums) and `run_gold`, the I/O edge that reads silver through the catalog and
writes the gold tables.

**Time.** Every figure is valid for the end of the `as_of` day in UTC: a row counts when its
timestamp is strictly before the first instant of the next UTC day. Nothing reads the clock, so the
same silver data and the same `as_of` give the same gold tables.

**Writes.** Each gold table is one snapshot, rewritten whole on every run (Delta `overwrite`),
rather than an accumulating table partitioned by `as_of` with `replaceWhere`:

* the contract grain stays what docs/tables.md says (customer_360: one row per customer_key),
  so consumers (segmentation, attribution, dashboards) need no `WHERE as_of = max(as_of)`;
* figures for an older date are not lost: every run is a Delta version, and `as_of` is in every
  row, so `versionAsOf` / `lakehouse history` give back any earlier snapshot;
* a re-run for the same `as_of` writes the same rows again (a new version with identical
  content), never a second copy of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog, unwritable_table
from lakehouse.errors import ConfigError, InputDataError
from lakehouse.faults import crash_point
from lakehouse.silver.transforms import KEY_LOOKED_UP

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.config import Config

GOLD_TABLES = ("customer_360", "journeys", "kpi_daily", "kpi_channel_daily")
SILVER_INPUTS = ("customers", "events", "orders", "social_posts", "iot_readings")
# Natural key of each silver input and the columns that order its versions (newest first),
# as every builder deduplicates it.
SILVER_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "customers": ("customer_key", ("updated_at",)),
    "events": ("event_id", ()),
    "orders": ("order_id", ()),
    "social_posts": ("post_id", ()),
    "iot_readings": ("reading_id", ()),
}
# The silver columns the builders read (a builder that needs another one fails on it at once,
# so a missing name here cannot go unnoticed).
SILVER_COLUMNS = {
    "customers": ("customer_key", "country", "signup_date", "marketing_consent",
                  "data_expiry_date", "updated_at", "_bronze_version"),
    "events": ("event_id", "customer_key", "event_ts", "session_id", "event_type", "channel",
               "_bronze_version", "cookie_id", KEY_LOOKED_UP),
    "orders": ("order_id", "customer_key", "order_ts", "amount_eur", "status",
               "_bronze_version"),
    "social_posts": ("post_id", "customer_key", "post_ts", "keywords", "likes",
                     "_bronze_version"),
    "iot_readings": ("reading_id", "device_id", "customer_key", "reading_ts", "temperature",
                     "battery", "error_code", "_bronze_version"),
}
# Inputs read by more than one gold builder.
SHARED_INPUTS = ("customers", "events", "orders")

# Money is summed as a decimal: decimal addition is associative, so a total does not change in its
# last bits with the partitioning or the order in which partial sums merge (a double sum does).
# 6 fractional digits keep every EUR amount exact to far below a cent.
_MONEY = "decimal(24,6)"


def check_as_of(as_of: date) -> date:
    """`as_of` must be a calendar date (a datetime would silently carry a time of day)."""
    if isinstance(as_of, date) and not isinstance(as_of, datetime):
        return as_of
    raise TypeError(f"as_of must be a datetime.date, got {type(as_of).__name__} {as_of!r}")


def as_of_cutoff(as_of: date) -> Column:
    """First instant after the `as_of` day, in UTC: rows count when `ts < as_of_cutoff`.

    Written with an explicit `+00:00` so the literal means the same instant whatever the
    session time zone is (a notebook's cluster may not run in UTC).
    """
    next_day = check_as_of(as_of) + timedelta(days=1)
    return F.lit(f"{next_day.isoformat()} 00:00:00+00:00").cast("timestamp")


def filter_until_as_of(df: DataFrame, ts_col: str, as_of: date) -> DataFrame:
    """Rows whose `ts_col` is known and not after the end of the `as_of` day."""
    return df.where(F.col(ts_col).isNotNull() & (F.col(ts_col) < as_of_cutoff(as_of)))


def keep_latest_per_key(df: DataFrame, key: str, newest_first: Sequence[str] = ()) -> DataFrame:
    """One row per `key`: the newest by `newest_first`, then by `_bronze_version`.

    Silver already guarantees a unique natural key; gold re-checks it because a duplicate here
    would double-count revenue. Remaining ties are broken by every other column of `df`, in its
    column order, so even a key delivered twice with different contents gives the same survivor
    on every run. Rows with a null key are kept as they are (they cannot be duplicates of
    anything).
    """
    newest = [*newest_first, *(["_bronze_version"] if "_bronze_version" in df.columns else [])]
    rest = [c for c in df.columns if c != key and c not in newest]
    window = (
        Window.partitionBy(key)
        .orderBy(*[F.col(c).desc_nulls_last() for c in newest], *[F.col(c).asc() for c in rest])
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    ranked = df.withColumn("_rank", F.row_number().over(window))
    return ranked.where(F.col(key).isNull() | (F.col("_rank") == 1)).drop("_rank")


# Attribute set on a DataFrame that deduplicated_once returned: (key, newest_first).
_DEDUPLICATED_BY = "_lakehouse_deduplicated_by"


def deduplicated_once(df: DataFrame, key: str, newest_first: Sequence[str] = ()) -> DataFrame:
    """`df` with one row per `key` (keep_latest_per_key over all its columns), marked so that
    latest_rows on this very DataFrame with the same key and order selects instead of sorting
    again. run_gold hands the same silver table to several builders: this sorts it once.

    The mark belongs to the returned object only; any further transformation gives a new,
    unmarked DataFrame, which latest_rows deduplicates as usual.
    """
    deduped = keep_latest_per_key(df, key, newest_first)
    setattr(deduped, _DEDUPLICATED_BY, (key, tuple(newest_first)))
    return deduped


def latest_rows(
    df: DataFrame, key: str, columns: Sequence[str], newest_first: Sequence[str] = ()
) -> DataFrame:
    """`columns` of a silver table, one row per `key` (see keep_latest_per_key).

    Deduplicating before any filter matters: if the latest version of an order is 'cancelled',
    an older 'completed' copy must not survive a status filter. The whole frame is deduplicated,
    then the columns selected: a tie between two versions is broken on all of `df`'s columns,
    so every builder given the same frame keeps the same row, whichever columns it reads (cut
    to its own columns first, customer_360 kept a tied customer's row that consented while
    consenting_customers kept the other one). A DataFrame from deduplicated_once (same key and
    order) is already one row per key, that same row, and is only selected.
    """
    if getattr(df, _DEDUPLICATED_BY, None) != (key, tuple(newest_first)):
        df = keep_latest_per_key(df, key, newest_first)
    return df.select(*dict.fromkeys([key, *columns]))


def read_silver_input(
    spark: SparkSession, catalog: Catalog, name: str, version: int | None = None
) -> DataFrame:
    """A silver input of gold (SILVER_INPUTS) as every reader of it takes it: the columns of
    SILVER_COLUMNS, in that order. Those are the columns a tie between two versions of a key is
    broken on (keep_latest_per_key), so gold and the access views' consent filter keep the same
    row of a customer delivered twice with the same version. KEY_LOOKED_UP is null in a table
    written before silver had it (silver adds it on its next run): not known either way."""
    table = catalog.read(spark, f"silver.{name}", version=version)
    if KEY_LOOKED_UP in SILVER_COLUMNS[name] and KEY_LOOKED_UP not in table.columns:
        table = table.withColumn(KEY_LOOKED_UP, F.lit(None).cast("boolean"))
    return table.select(*SILVER_COLUMNS[name])


# The customer shared_browser_keys gives an event, next to its event_id.
_GIVEN_KEY = "_given_key"
# Up to this many given keys (about 100 bytes each, within Spark's 10 MB broadcast threshold)
# each gold reader of the events joins them to the cached events; above it run_gold joins once
# and caches the result.
GIVEN_KEYS_JOINED_ONCE_ABOVE = 100_000


def shared_browser_keys(events_df: DataFrame, as_of: date) -> DataFrame:
    """(event_id, _given_key) of each looked-up event of a browser that several customers
    logged in on whose customer changes: the customer who logged in on that browser next, or,
    after the last login, the one who logged in last. Usually a small frame, often empty.

    Silver looks an event that names nobody up by its cookie, which belongs to the first
    customer seen logged in on it (silver.identity). On a family browser that gave the first
    customer every visit the others made before logging in, and the touchpoints of their
    journeys. Only logins up to the end of ``as_of`` count (a later one is not known on that
    date); events that name their customer, and those of a browser only one customer logged in
    on, keep their key. Order on the browser: event_ts, visits before logins (a login at the
    same instant as a visit is the one that comes next: the visit's own session), event_id.
    Events without an event_id (silver quarantines them) cannot be named and keep their key.
    """
    cutoff = as_of_cutoff(as_of)
    login = (F.col(KEY_LOOKED_UP).eqNullSafe(False) & F.col("customer_key").isNotNull()
             & F.col("event_ts").isNotNull() & (F.col("event_ts") < cutoff))
    shared = (
        events_df.where(login & F.col("cookie_id").isNotNull())
        .groupBy("cookie_id").agg(F.count_distinct("customer_key").alias("_customers"))
        .where(F.col("_customers") > 1).select("cookie_id")
    )
    on_browser = Window.partitionBy("cookie_id").orderBy("event_ts", login, "event_id")
    login_key = F.when(login, F.col("customer_key"))
    next_login = F.first(login_key, ignorenulls=True).over(
        on_browser.rowsBetween(Window.currentRow, Window.unboundedFollowing))
    last_login = F.last(login_key, ignorenulls=True).over(
        on_browser.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return (
        events_df.join(shared, "cookie_id", "left_semi")
        .select(
            "event_id", "customer_key",
            F.when(F.col(KEY_LOOKED_UP).eqNullSafe(True), F.coalesce(next_login, last_login))
            .alias(_GIVEN_KEY),
        )
        .where(F.col("event_id").isNotNull() & F.col(_GIVEN_KEY).isNotNull()
               & ~F.col(_GIVEN_KEY).eqNullSafe(F.col("customer_key")))
        .select("event_id", _GIVEN_KEY)
    )


def with_given_keys(events_df: DataFrame, given_keys: DataFrame) -> DataFrame:
    """``events_df`` (one row per event_id) with the customer_key of each event in
    ``given_keys`` (shared_browser_keys) replaced by the one given there; every other column
    and event as it was."""
    return (
        events_df.join(given_keys, "event_id", "left")
        .withColumn("customer_key", F.coalesce(F.col(_GIVEN_KEY), F.col("customer_key")))
        .select(*events_df.columns)
    )


def attribute_shared_browsers(events_df: DataFrame, as_of: date) -> DataFrame:
    """``events_df`` (silver.events' gold columns, one row per event_id as deduplicated_once
    leaves them) with each looked-up event of a browser that several customers logged in on
    given to the customer who logged in on it next, or, after the last login, to the one who
    logged in last (see shared_browser_keys)."""
    return with_given_keys(events_df, shared_browser_keys(events_df, as_of))


def has_marketing_consent(consent: Column) -> Column:
    """Consent to marketing: only an explicit true; false and never asked (null) are a no."""
    return F.coalesce(consent, F.lit(False))


def consenting_customers(customers_df: DataFrame) -> DataFrame:
    """customer_key of every customer whose latest silver profile consents to marketing.

    The latest profile, not the one valid on `as_of`: a withdrawal of consent applies to every
    output built after it, whatever date the figures are for. So does a consent given later:
    silver keeps one profile per customer, no consent history, so a re-run for an earlier date
    counts a customer who consents now (the permission to use their data is today's).
    """
    latest = latest_rows(customers_df, "customer_key", ["marketing_consent"],
                         newest_first=["updated_at"])
    return latest.where(
        F.col("customer_key").isNotNull() & has_marketing_consent(F.col("marketing_consent"))
    ).select("customer_key")


def exact_sum(col: Column | str) -> Column:
    """Sum of a money column, order-independent (see _MONEY), returned as a double."""
    column = F.col(col) if isinstance(col, str) else col
    return F.sum(column.cast(_MONEY)).cast("double")


def channel_filter(
    channel: Column,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
) -> Column:
    """Condition keeping the channels asked for (None: no restriction on that side)."""
    condition = channel.isNotNull() & (F.trim(channel) != "")
    if include_channels is not None:
        included = _channel_list(include_channels, "include_channels")
        if not included:
            raise ValueError("include_channels is empty: pass None to keep every channel")
        condition = condition & channel.isin(included)
    if exclude_channels is not None:
        excluded = _channel_list(exclude_channels, "exclude_channels")
        if excluded:
            condition = condition & ~channel.isin(excluded)
    return condition


def _channel_list(channels: Iterable[str], name: str) -> list[str]:
    if isinstance(channels, str):
        raise TypeError(f"{name} must be a list of channel names, not the string {channels!r}")
    values = list(channels)
    bad = [c for c in values if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"{name} holds invalid channel names: {bad!r}")
    return sorted(set(values))


def utc_day(ts: Column) -> Column:
    """Calendar day of a timestamp in UTC, whatever the session time zone.

    `to_date` would use the session zone (UTC under session.py, but not necessarily in a
    notebook); whole days since the Unix epoch do not depend on it.
    """
    return F.date_from_unix_date(F.floor(F.unix_seconds(ts) / 86400).cast("int"))


def activity_days(events_df: DataFrame, orders_df: DataFrame) -> tuple[date, date] | None:
    """First and latest UTC day with an event or an order in silver; None if there is none.

    Two one-row aggregates reach the driver, whatever the size of the tables.
    """
    ranges = [
        df.select(F.min(utc_day(F.col(ts))).alias("first"),
                  F.max(utc_day(F.col(ts))).alias("last")).first()
        for df, ts in ((events_df, "event_ts"), (orders_df, "order_ts"))
    ]
    known = [r for r in ranges if r["first"] is not None]
    if not known:
        return None
    return min(r["first"] for r in known), max(r["last"] for r in known)


GOLD_DEFAULTS = {
    "lookback_days": 30,
    "include_channels": None,
    "exclude_channels": None,
    "top_keywords": 5,
}


def gold_options(config: Config) -> dict[str, object]:
    """run_gold's keyword arguments from the `gold.*` config keys, defaults where undeclared.

    An empty channel list in YAML means "no restriction" (None).
    """
    options: dict[str, object] = {}
    for key, default in GOLD_DEFAULTS.items():
        try:
            value = config.get(f"gold.{key}")
        except KeyError:
            value = default
        options[key] = value if value not in ([], "") else None
    # Checked here, when a run starts, not when gold builds (after bronze and silver committed).
    for key in ("include_channels", "exclude_channels"):
        if options[key] is not None:
            try:
                _channel_list(options[key], f"gold.{key}")
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"config key {exc}") from None
    return options


def run_gold(
    spark: SparkSession,
    config: Config,
    run_id: str,
    as_of: date | None,
    *,
    lookback_days: int = 30,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
    top_keywords: int = 5,
    input_versions: Mapping[str, int | None] | None = None,
    output_config: Config | None = None,
    tables: Sequence[str] = GOLD_TABLES,
    refuse_before_data: bool = True,
) -> list[str]:
    """Read silver, build every gold table for `as_of`, overwrite them; one line per table.

    `as_of` None: the latest day with an event or an order in silver (from the data, never the
    clock), stated in the first summary line. A missing silver table raises TableNotFoundError.
    `input_versions` reads silver tables at those versions (time travel, `lakehouse
    reproduce`); `output_config` writes the gold tables under another data root (a scratch copy).
    `tables` rebuilds only those (erasure rebuilds the aggregates, which have no key to delete by).
    `refuse_before_data` raises InputDataError, writing nothing, when silver holds no event or
    order up to `as_of` (no figure of gold could count one); an erasure's rebuild passes False,
    since its tables may rightly lose every row with the person.
    """
    # Imported here, not at the top: the builder modules import this module's helpers.
    from lakehouse.gold.customer_360 import build_customer_360
    from lakehouse.gold.journeys import journey_timeline, journeys_from_timeline
    from lakehouse.gold.kpis import build_kpi_daily, kpi_channel_daily_from_timeline
    from lakehouse.privacy.keycheck import lake_pseudonym_key

    catalog = Catalog(config)
    pinned = input_versions or {}
    silver = {
        name: deduplicated_once(
            read_silver_input(spark, catalog, name, pinned.get(f"silver.{name}")),
            *SILVER_KEYS[name],
        )
        for name in SILVER_INPUTS
    }
    # Tables that several builders read are kept once, deduplicated (on disk when memory
    # is short), instead of being read and sorted again by each of them. Measured at scale m
    # (30 days, warm): a gold run 42.5-44.2 s instead of 48.5-49.3 s.
    shared = [silver[name].persist() for name in SHARED_INPUTS]
    try:
        output = Catalog(output_config) if output_config is not None else catalog
        days = (activity_days(silver["events"], silver["orders"])
                if as_of is None or refuse_before_data else None)
        no_rows = ("silver.events and silver.orders hold no timestamped rows, so there is no "
                   "date to build gold for: run bronze and silver on delivered data first")
        if as_of is None:
            if days is None:
                raise InputDataError(no_rows)
            as_of = days[1]
            header = f"gold: as_of {as_of} (latest event/order day in silver; no --as-of given)"
        else:
            check_as_of(as_of)
            if refuse_before_data and days is None:
                raise InputDataError(no_rows)
            if refuse_before_data and as_of < days[0]:
                # No event, order or KPI figure could count: most likely a mistyped date,
                # which would otherwise replace the current snapshot with a hollow one.
                raise InputDataError(
                    f"--as-of {as_of} is before the first event or order in silver "
                    f"({days[0]}): gold for it would hold no event, order or KPI figure, so the "
                    f"gold tables were left as they are; pass a date from {days[0]} on"
                )
            header = f"gold: as_of {as_of} (given)"
        # Every builder reads the events with a shared browser's visits given to the customer
        # who logged in next (still one row per event_id, as deduplicated_once left them).
        # Only the events whose customer changes are kept apart (usually few, often none) and
        # joined to the cached events by each reader: caching a second, attributed copy of every
        # event cost gold about 8 s at scale m, where no browser is shared.
        given_keys = shared_browser_keys(silver["events"], as_of).persist()
        shared.append(given_keys)
        given = given_keys.count()  # fills the cache of the few, or learns there are none
        if given:
            events = with_given_keys(silver["events"], given_keys)
            if given > GIVEN_KEYS_JOINED_ONCE_ABOVE:
                # Too many to ship to every task: joined once (a shuffle of every event) and
                # kept in place of the deduplicated events, not joined again by each reader.
                events = events.persist()
                events.count()
                shared = [df for df in shared if df is not silver["events"]] + [events]
                silver["events"].unpersist()
            setattr(events, _DEDUPLICATED_BY, getattr(silver["events"], _DEDUPLICATED_BY))
            silver["events"] = events
        journey_args = {
            "lookback_days": lookback_days,
            "include_channels": include_channels,
            "exclude_channels": exclude_channels,
        }
        # Journeys and the conversions of kpi_channel_daily are marketing outputs: customers
        # without marketing consent are left out of both (so no run puts back what retention
        # removed, and the two tables reconcile); touchpoints stay all traffic, next to the
        # consented ones the conversion rate divides by.
        marketing_customers = consenting_customers(silver["customers"])
        # gold.journeys and kpi_channel_daily's conversions are cut from the same timeline
        # (every touchpoint and conversion of a consenting customer, sorted and numbered per
        # customer): built once and kept while both tables are written.
        timeline = journey_timeline(
            silver["events"], silver["orders"], marketing_customers, as_of, **journey_args
        )
        # Journey ids are keyed: the key is checked against the lake's before any table is
        # written (a run with another key stops here, not after customer_360).
        journey_key = lake_pseudonym_key(spark, config, catalog) if "journeys" in tables else b""
        if {"journeys", "kpi_channel_daily"} <= set(tables):
            timeline = timeline.persist()
            shared.append(timeline)
        builders = {
            "customer_360": lambda: build_customer_360(
                silver["customers"], silver["orders"], silver["events"], silver["social_posts"],
                silver["iot_readings"], as_of, top_keywords=top_keywords,
            ),
            "journeys": lambda: journeys_from_timeline(timeline, as_of, journey_key),
            "kpi_daily": lambda: build_kpi_daily(silver["events"], silver["orders"], as_of),
            "kpi_channel_daily": lambda: kpi_channel_daily_from_timeline(
                silver["events"], timeline, as_of, include_channels, exclude_channels
            ),
        }
        unknown = [t for t in tables if t not in GOLD_TABLES]
        if unknown:
            raise ValueError(f"unknown gold table(s) {unknown}; known: {', '.join(GOLD_TABLES)}")
        # Tables are written one after another: one that cannot be written is refused before
        # the first, so a run that fails on it leaves every gold table as it was.
        for name in tables:
            if refused := unwritable_table(output, f"gold.{name}"):
                raise refused
        lines = [header]
        if include_channels is not None or exclude_channels is not None:
            lines += unseen_channel_warnings(silver["events"], include_channels, exclude_channels)
        for name in (t for t in GOLD_TABLES if t in tables):
            started = time.monotonic()
            path = output.path(f"gold.{name}")
            crash_point("gold.before_write")
            table_df = builders[name]()
            output.narrow_statistics(spark, f"gold.{name}", schema=table_df.schema)
            (
                table_df
                .write.format("delta")
                .mode("overwrite")
                # The lake's table properties; no min/max of customer keys in the _delta_log
                # (erasure must reach them).
                .options(**output.creation_options(table_df.schema))
                # Gold is rebuilt whole from silver: its schema is whatever the contract says now.
                .option("overwriteSchema", "true")
                # The run id goes into the Delta commit (history), not into the rows, so a re-run
                # for the same as_of leaves the table content identical.
                .option("userMetadata", f"run_id={run_id} stage=gold as_of={as_of}")
                .save(path)
            )
            crash_point("gold.after_write")
            rows = _rows_written(spark, output, f"gold.{name}")
            lines.append(
                f"  gold.{name:<18} {rows:>10,} rows  {time.monotonic() - started:6.1f}s"
            )
        return lines
    finally:
        for df in shared:
            df.unpersist()


def unseen_channel_warnings(
    events_df: DataFrame,
    include_channels: Iterable[str] | None,
    exclude_channels: Iterable[str] | None,
) -> list[str]:
    """A warning line per channel list that names channels no silver event has (a typo there
    silently empties the journeys, or silently excludes nothing)."""
    seen = {r[0] for r in events_df.select("channel").distinct().collect() if r[0]}
    lines = []
    for key, channels in (("include_channels", include_channels),
                          ("exclude_channels", exclude_channels)):
        unseen = sorted(set(_channel_list(channels, key)) - seen) if channels else []
        if unseen:
            lines.append(
                f"  warning: gold.{key} names channel(s) no event has: {', '.join(unseen)} "
                f"(events have: {', '.join(sorted(seen)) or 'none'})"
            )
    return lines


def _rows_written(spark: SparkSession, catalog: Catalog, name: str) -> int:
    """Rows of the last commit, from Delta's commit metrics (no scan of the table)."""
    last = catalog.delta_table(spark, name).history(1).select("operationMetrics").first()
    metrics = (last["operationMetrics"] if last else None) or {}
    if "numOutputRows" in metrics:
        return int(metrics["numOutputRows"])
    return catalog.read(spark, name).count()
