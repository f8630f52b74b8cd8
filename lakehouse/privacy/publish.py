"""`lakehouse publish`: differentially private reports in the ``publish`` layer.

Each report: (1) bound every customer's contribution in Spark (one row per customer for the
head count by country; at most ``privacy.max_rows_per_customer`` conversions per customer; each conversion's
value clamped to 0..``privacy.max_value_per_conversion_eur`` whole EUR for the revenue report),
(2) count or sum in Spark over a *public* grid of cells (countries of conf/reference.yaml, the known channels,
the 8 ISO weeks up to and including the one of ``as_of``, a date the caller gives) so that which
cells exist reveals nothing, (3) bring only that small
grid to the driver and add OpenDP discrete Laplace noise, (4) write it with its epsilon,
sensitivity and bounds as columns. The whole publish is checked against the budget first and
writes nothing when it does not fit; the ledger is written before the reports, so a crash
between the two can only over-count what was spent, never under-count.

The conversion reports cut each customer's journeys again from silver, not from gold.journeys,
with another rule for whose touchpoint an event is. Gold gives a customer the anonymous events
of every cookie identity resolution assigns to them, and a cookie belongs to whoever logged in
on it first: removing that person hands the cookie's anonymous events to the next customer who
logged in on it, whose last touches move. One person could so move the cells of any number of
other customers, beyond the cap. Here an event is a touchpoint of the customer it names (a
logged-in event), or, when it names nobody, of every customer named by an event of the same
session (the visit in which they logged in). A customer's journeys then depend only on their
own records (named events, completed orders, marketing consent) and on events that name
nobody: removing one customer's records changes their own capped conversions and no one
else's. Events that name nobody are so treated as public, present with or without the
customer: they are not protected (a person's own visits before logging in among them), and one
of them may move the cells of every customer who logged in during its session. Marketing
touches land on a session's first, still anonymous event, so the converting visit, in which
the customer logs in to order, keeps its channel.

No report counts customers by K-means segment. A customer's segment depends on every other
customer (the model is fitted on all of them: the scaling, the choice of k, the names ranked by
mean spend), so adding one customer can move many others to another segment, and which
segments exist depends on the data: a count by segment has no bounded sensitivity, and its
noise would protect nobody. Segment sizes stay in the segment run's MLflow record, for model
review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.asof import choose_snapshot
from lakehouse.catalog import Catalog
from lakehouse.config import Config, load_yaml_file
from lakehouse.errors import InputDataError, PrivacyBudgetError, TableNotFoundError
from lakehouse.gold import (
    check_as_of,
    consenting_customers,
    gold_options,
    latest_rows,
    read_silver_input,
)
from lakehouse.gold.journeys import journey_timeline, journeys_from_timeline
from lakehouse.privacy.dp import (
    LEDGER,
    MECHANISM,
    Release,
    check_budget,
    confirm_within_budget,
    noisy_counts,
    record_releases,
    spent_epsilon,
    unrecorded_releases,
)
from lakehouse.silver.transforms import KEY_LOOKED_UP

COUNTRY = "publish.customers_by_country"
CHANNEL_WEEK = "publish.conversions_by_channel_week"
REVENUE_WEEK = "publish.revenue_by_channel_week"
REPORTS = (COUNTRY, CHANNEL_WEEK, REVENUE_WEEK)
# Published before, never again (customers by segment and country: see the module's
# docstring); its releases are still checked against the ledger.
RETIRED_REPORTS = ("publish.customers_by_segment_country",)
# The public channel vocabulary (the generator's and the marketing plan's channel list).
CHANNELS = (
    "paid_search", "organic_search", "email", "display",
    "paid_social", "affiliate", "referral", "direct",
)
PUBLISH_WEEKS = 8
OTHER = "other"


@dataclass(frozen=True)
class Report:
    name: str
    cells: DataFrame  # dimension columns + true_count (an integer), one row per public cell
    dimensions: tuple[str, ...]
    l1_sensitivity: float
    bounds: str
    released_as: str = "noisy_count"  # name of the noisy column in the published table


# -- pure transforms -------------------------------------------------------------------------


def with_public_country(df: DataFrame, countries: Sequence[str]) -> DataFrame:
    """Country outside the public list (or missing) becomes 'other': the grid stays fixed."""
    return df.withColumn(
        "country", F.when(F.col("country").isin(list(countries)), F.col("country"))
        .otherwise(F.lit(OTHER))
    )


def customers_by_country_cells(customers_df: DataFrame, grid_df: DataFrame) -> DataFrame:
    """One count per public country; each customer counted once (sensitivity 1)."""
    one_per_customer = customers_df.select("customer_key", "country").dropDuplicates(
        ["customer_key"]
    )
    counts = one_per_customer.groupBy("country").agg(F.count(F.lit(1)).alias("true_count"))
    return _on_grid(grid_df, counts, ["country"])


def session_touchpoints(events_df: DataFrame) -> DataFrame:
    """silver.events rows as touchpoints of the customers they belong to without the identity
    map: a named event (KEY_LOOKED_UP false) of the customer it names; an event that names
    nobody (no customer_key, or one looked up in the map) of every customer named by an event
    of its session_id, one row each. A row with a customer_key and KEY_LOOKED_UP null (written
    before the flag existed: whether it names its customer is not known) is neither: left out.

    Columns: event_id, customer_key, event_ts, channel. Deduplicated on event_id first, like
    every gold reader; an event without an event_id (silver holds none) is left out. The
    event_id returned is the JSON of (customer_key, event_id): journey_timeline deduplicates
    on it again, and a copy's id must not equal any other row's. Joined with a separator
    instead, another customer's event named ``e1|B`` took the place of B's copy of ``e1``.
    """
    events = latest_rows(
        events_df, "event_id", ["customer_key", "event_ts", "channel", "session_id", KEY_LOOKED_UP]
    ).where(F.col("event_id").isNotNull())
    is_named = F.col("customer_key").isNotNull() & (F.col(KEY_LOOKED_UP) == F.lit(False))
    named = events.where(is_named)
    session_customers = named.select("session_id", "customer_key").distinct()
    unnamed = events.where(~is_named).drop("customer_key").join(
        session_customers, on="session_id", how="inner"
    )
    return named.unionByName(unnamed.select(*named.columns)).select(
        F.to_json(F.struct("customer_key", "event_id")).alias("event_id"),
        "customer_key", "event_ts", "channel",
    )


def session_journeys(
    events_df: DataFrame,
    orders_df: DataFrame,
    customers_df: DataFrame,
    as_of: date,
    journey_args: Mapping[str, object],
) -> DataFrame:
    """gold.journeys' journeys for ``as_of`` (the same conversions, look-back, channel lists
    and consent), cut from session_touchpoints instead of the identity map's attribution.

    Columns: customer_key, order_id, journey_end_ts, channels, converted, conversion_value.
    """
    timeline = journey_timeline(
        session_touchpoints(events_df), orders_df, consenting_customers(customers_df), as_of,
        **journey_args,
    )
    # Journey ids are not part of any report: the pseudonymisation key is not needed here.
    journeys = journeys_from_timeline(timeline, as_of, key=b"")
    return journeys.select("customer_key", "order_id", "journey_end_ts", "channels",
                           "converted", "conversion_value")


def capped_conversions(journeys_df: DataFrame, max_rows_per_customer: int) -> DataFrame:
    """Each customer's latest ``max_rows`` converted journeys as (channel, week, value).

    channel = the last touch (a channel outside the public list, or none, is 'other'); week =
    the Monday of the conversion's ISO week. The cap bounds how many cells, and how often, one
    customer can change. Ties of the conversion instant are broken by the order id.
    """
    latest_first = Window.partitionBy("customer_key").orderBy(
        F.col("journey_end_ts").desc(), F.col("order_id")
    ).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    capped = (
        journeys_df.where(F.col("converted") & F.col("customer_key").isNotNull())
        .withColumn("_n", F.row_number().over(latest_first))
        .where(F.col("_n") <= max_rows_per_customer)
    )
    return capped.select(
        F.coalesce(F.try_element_at("channels", F.lit(-1)), F.lit(OTHER)).alias("channel"),
        F.date_trunc("week", "journey_end_ts").cast("date").alias("week"),
        F.col("conversion_value").alias("value"),
    ).withColumn(
        "channel", F.when(F.col("channel").isin(list(CHANNELS)), F.col("channel"))
        .otherwise(F.lit(OTHER))
    )


def _on_grid(grid_df: DataFrame, totals_df: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Every public cell once, 0 where the data has nothing."""
    return grid_df.join(totals_df, on=list(keys), how="left").select(
        *keys, F.coalesce("true_count", F.lit(0)).cast("long").alias("true_count")
    )


def conversions_by_channel_week_cells(
    journeys_df: DataFrame, grid_df: DataFrame, max_rows_per_customer: int
) -> DataFrame:
    """Converted journeys per last-touch channel and ISO week, at most ``max_rows`` per customer.

    The cap bounds one customer's total change to the grid (L1 sensitivity = the cap).
    """
    counts = capped_conversions(journeys_df, max_rows_per_customer).groupBy("channel", "week").agg(
        F.count(F.lit(1)).alias("true_count")
    )
    return _on_grid(grid_df, counts, ["channel", "week"])


def clamped_whole_eur(value: Column, max_value: int) -> Column:
    """A conversion value as whole EUR in 0..max_value (null, NaN and negatives give 0)."""
    finite = F.when(F.isnan(value) | value.isNull(), F.lit(0.0)).otherwise(value)
    return F.least(F.greatest(F.round(finite), F.lit(0.0)), F.lit(float(max_value))).cast("long")


def revenue_by_channel_week_cells(
    journeys_df: DataFrame, grid_df: DataFrame, max_rows_per_customer: int, max_value: int
) -> DataFrame:
    """Clamped conversion value (whole EUR) per last-touch channel and ISO week.

    At most ``max_rows`` conversions per customer, each worth 0..``max_value``: one customer
    changes the grid by at most their product in total (the L1 sensitivity).
    """
    sums = capped_conversions(journeys_df, max_rows_per_customer).groupBy("channel", "week").agg(
        F.sum(clamped_whole_eur(F.col("value"), max_value)).alias("true_count")
    )
    return _on_grid(grid_df, sums, ["channel", "week"])


def public_weeks(as_of: date, weeks: int = PUBLISH_WEEKS) -> list[date]:
    """Mondays of the ``weeks`` ISO weeks up to and including the one of ``as_of``."""
    monday = as_of - timedelta(days=as_of.weekday())
    return [monday - timedelta(weeks=i) for i in reversed(range(weeks))]


# -- I/O edge --------------------------------------------------------------------------------


def _countries(config: Config) -> list[str]:
    reference = load_yaml_file(config.conf_dir / "reference.yaml", "the country list")
    codes = reference.get("countries", {}).get("codes", [])
    # YAML 1.1 reads a bare NO (Norway) as false. A code listed twice ("AT" and "at") would be
    # two cells of the grid, each counting the same customers: sensitivity 2, charged as 1.
    upper = ("NO" if c is False else str(c).upper() for c in codes)
    return [*dict.fromkeys(upper), OTHER]


def build_reports(spark: SparkSession, config: Config, as_of: date) -> list[Report]:
    """True-count grids of every report (still inside Spark) for ``as_of``.

    ``as_of`` is always given by the caller, never taken from gold: gold's date may come from
    the data (its latest event or order day), so one customer active alone on the last day
    would move it, and with it the `as_of` column of every published row, the weeks of the
    grid and who has signed up: beyond any stated sensitivity.
    """
    check_as_of(as_of)
    catalog = Catalog(config)
    for needed in ("silver.customers", "silver.events", "silver.orders", "gold.customer_360"):
        if not catalog.exists(spark, needed):
            raise TableNotFoundError(
                f"{needed} does not exist at {catalog.path(needed)}: run `lakehouse run "
                f"{needed.split('.')[0]}` before `lakehouse publish`"
            )
    if KEY_LOOKED_UP not in catalog.read(spark, "silver.events").columns:
        # read_silver_input would read it as null, and every conversion's channel as 'other'.
        raise InputDataError(
            f"silver.events was written before it had {KEY_LOOKED_UP}, which tells the events "
            f"that name their customer: run `lakehouse run silver` (it adds the column) before "
            f"`lakehouse publish`"
        )
    customers = catalog.read(spark, "gold.customer_360")
    # A date gold does not hold is refused before any budget is spent: the reports would
    # label today's counts with it, and their weeks would hold only noise.
    choose_snapshot(customers, as_of, "gold.customer_360",
                    "gold.customer_360 is empty: nothing to publish")
    countries = _countries(config)
    customers = with_public_country(customers, countries)
    country_grid = spark.createDataFrame([(c,) for c in countries], "country string")
    cap = int(config.get("privacy.max_rows_per_customer"))
    max_value = int(config.get("privacy.max_value_per_conversion_eur"))
    if cap < 1 or max_value < 1:
        raise InputDataError(
            f"privacy.max_rows_per_customer ({cap}) and privacy.max_value_per_conversion_eur "
            f"({max_value}) must be at least 1: they bound each customer's contribution"
        )
    options = gold_options(config)
    journeys = session_journeys(
        read_silver_input(spark, catalog, "events"),
        read_silver_input(spark, catalog, "orders"),
        read_silver_input(spark, catalog, "customers"),
        as_of,
        {k: options[k] for k in ("lookback_days", "include_channels", "exclude_channels")},
    )
    week_grid = spark.createDataFrame(
        [(ch, w) for ch in (*CHANNELS, OTHER) for w in public_weeks(as_of)],
        T.StructType([T.StructField("channel", T.StringType()),
                      T.StructField("week", T.DateType())]),
    )
    # Stated in every row: which touch gives a conversion its channel (module docstring).
    touch = "last touch of the customer's own logged-in visits"
    reports = [
        Report(COUNTRY, customers_by_country_cells(customers, country_grid), ("country",), 1.0,
               "one row per customer"),
        Report(CHANNEL_WEEK, conversions_by_channel_week_cells(journeys, week_grid, cap),
               ("channel", "week"), float(cap),
               f"at most {cap} conversions per customer (latest kept); channel: {touch}"),
        Report(REVENUE_WEEK,
               revenue_by_channel_week_cells(journeys, week_grid, cap, max_value),
               ("channel", "week"), float(cap * max_value),
               f"at most {cap} conversions per customer (latest kept), each clamped to "
               f"0..{max_value} whole EUR; channel: {touch}", released_as="noisy_revenue_eur"),
    ]
    return reports


def release_schema(report) -> T.StructType:
    """The columns of ``report``'s release table: its dimensions, the noisy figure, and how it
    was released."""
    return T.StructType([
        *report.cells.select(*report.dimensions).schema.fields,
        T.StructField(report.released_as, T.LongType()),
        T.StructField("epsilon", T.DoubleType()),
        T.StructField("l1_sensitivity", T.DoubleType()),
        T.StructField("contribution_bound", T.StringType()),
        T.StructField("mechanism", T.StringType()),
        T.StructField("release_id", T.StringType()),
        T.StructField("as_of", T.DateType()),
    ])


def publish(
    spark: SparkSession, config: Config, *, as_of: date,
    epsilon: float | None = None, reports: Sequence[str] | None = None,
) -> list[str]:
    """Release the chosen reports for ``as_of`` (which gold must hold) with DP noise; raises
    PrivacyBudgetError, writing nothing."""
    catalog = Catalog(config)
    eps = float(epsilon if epsilon is not None else config.get("privacy.epsilon_per_report"))
    built = build_reports(spark, config, as_of)
    chosen = [r for r in built if not reports or r.name in reports]
    releases = [Release(r.name, eps, r.l1_sensitivity) for r in chosen]
    unrecorded = unrecorded_releases(spark, catalog, (*REPORTS, *RETIRED_REPORTS))
    if unrecorded:
        table, release = unrecorded[0]
        raise PrivacyBudgetError(
            f"{table} holds release {release}, which {LEDGER} does not record: the budget "
            f"already spent is unknown (the ledger was deleted, replaced or put back by hand); "
            f"put the ledger's folder {catalog.path(LEDGER)} back from a backup; nothing was "
            f"published"
        )
    total = float(config.get("privacy.epsilon_total"))
    check_budget(releases, spent_epsilon(spark, catalog),
                 float(config.get("privacy.epsilon_per_report")), total)
    # Only the fixed, small grids reach the driver.
    grids = [(r, release_schema(r), r.cells.orderBy(*r.dimensions).collect()) for r in chosen]
    # A release table made before the statistics policy keeps its own (privacy.stats): each is
    # narrowed before any budget is spent, so a failure here costs none.
    for report, schema, _ in grids:
        catalog.narrow_statistics(spark, report.name, schema=schema)
    release_id, recorded_at = record_releases(spark, catalog, releases)
    confirm_within_budget(spark, catalog, release_id, recorded_at, total)
    lines = [f"publish: release {release_id}, as_of {as_of}, epsilon {eps:g} per report"]
    for report, schema, rows in grids:
        noisy = noisy_counts([r["true_count"] for r in rows], eps, report.l1_sensitivity)
        out_rows = [
            (*[r[d] for d in report.dimensions], max(n, 0), eps, report.l1_sensitivity,
             report.bounds, MECHANISM, release_id, as_of)
            for r, n in zip(rows, noisy, strict=True)
        ]
        (
            spark.createDataFrame(out_rows, schema).write.format("delta").mode("overwrite")
            .option("overwriteSchema", "true")
            .options(**catalog.creation_options(schema))
            .option("userMetadata", f"dp release {release_id} epsilon={eps:g}")
            .save(catalog.path(report.name))
        )
        lines.append(f"  {report.name:<40} {len(out_rows):>5} cells  epsilon {eps:g}  "
                     f"L1 sensitivity {report.l1_sensitivity:g}")
    left = total - spent_epsilon(spark, catalog)
    lines.append(f"publish: privacy budget left {left:g} of {config.get('privacy.epsilon_total')}")
    return lines
