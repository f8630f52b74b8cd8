"""Daily KPI tables a sales or marketing team charts: gold.kpi_daily and gold.kpi_channel_daily.

Days are UTC calendar days; only rows up to the end of `as_of` count.

**kpi_daily**, one row for every day from the first day with an event or an order up to `as_of`
(days without activity are there with zeros, so a chart has no gaps):

* `orders` / `revenue_eur`: completed orders placed that day and their EUR total (the orders
  of customer_360's monetary value); orders of an unknown customer, and of customers without
  marketing consent, count too: they are revenue all the same (conversions, below, are the
  consenting customers' orders only).
* `active_customers`: distinct customer_keys with an event or an order (any status) that day.
* `sessions`: distinct session_ids with an event that day, anonymous visitors included (a
  session that spans midnight counts on both days).

**kpi_channel_daily**, one row per (day, channel) with at least one touchpoint. Channels are
filtered with the same include/exclude lists and journeys with the same look-back as
gold.journeys, so both tables tell the same story:

* `touchpoints`: events with that channel that day, anonymous visitors included (they are
  traffic the channel brought, even if they never convert).
* `consented_touchpoints`: those of them by known customers with marketing consent, the
  population whose conversions are counted.
* `conversions`: converted journeys whose last touchpoint (time order, ties by event_id) was
  that channel on that day, i.e. last-touch conversions dated by the touch, not by the order.
  They are the journeys of gold.journeys: customers with marketing consent only (`run_gold`
  passes the same consenting customers to both tables). `run retention` deletes a withdrawn
  customer's journeys at once; this aggregate, which names nobody, follows at the next gold run.
  A last touchpoint is itself a consented touchpoint of the row, so
  `conversions <= consented_touchpoints <= touchpoints`.
* `conversion_rate`: conversions / consented_touchpoints, between 0 and 1 (null on a row with
  no consented touchpoint). Numerator and denominator count the same people: dividing by all
  traffic made the rate fall with consent even when behaviour did not change.
* `revenue_eur`: conversion value of those journeys (last-touch revenue).

Conversions without any touchpoint in their look-back window (direct orders) belong to no
channel: summed over channels, conversions equal the converted journeys that have touchpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.gold import check_as_of, exact_sum, filter_until_as_of, latest_rows, utc_day
from lakehouse.gold.customer_360 import is_completed
from lakehouse.gold.journeys import journey_timeline, journey_touchpoints, select_touchpoints

DAILY_COLUMNS = {
    "day": "date",
    "orders": "long",
    "revenue_eur": "double",
    "active_customers": "long",
    "sessions": "long",
    "as_of": "date",
}
CHANNEL_COLUMNS = {
    "day": "date",
    "channel": "string",
    "touchpoints": "long",
    "consented_touchpoints": "long",
    "conversions": "long",
    "conversion_rate": "double",
    "revenue_eur": "double",
    "as_of": "date",
}


def build_kpi_daily(events_df: DataFrame, orders_df: DataFrame, as_of: date) -> DataFrame:
    """gold.kpi_daily for `as_of` (see the module docstring)."""
    check_as_of(as_of)
    events = filter_until_as_of(
        latest_rows(events_df, "event_id", ["customer_key", "event_ts", "session_id"]),
        "event_ts",
        as_of,
    ).withColumn("day", utc_day(F.col("event_ts")))
    orders = filter_until_as_of(
        latest_rows(orders_df, "order_id", ["customer_key", "order_ts", "amount_eur", "status"]),
        "order_ts",
        as_of,
    ).withColumn("day", utc_day(F.col("order_ts")))

    completed = is_completed(F.col("status"))
    orders_by_day = orders.groupBy("day").agg(
        F.count(F.when(completed, True)).alias("orders"),
        exact_sum(F.when(completed, F.col("amount_eur"))).alias("revenue_eur"),
    )
    sessions_by_day = events.groupBy("day").agg(F.count_distinct("session_id").alias("sessions"))
    active_by_day = (
        events.select("day", "customer_key")
        .unionByName(orders.select("day", "customer_key"))
        .where(F.col("customer_key").isNotNull())
        .groupBy("day")
        .agg(F.count_distinct("customer_key").alias("active_customers"))
    )
    # Every day from the first activity to as_of; sequence(null, ..) explodes to no row at all.
    calendar = (
        events.select("day")
        .unionByName(orders.select("day"))
        .agg(F.min("day").alias("first_day"))
        .select(F.explode(F.sequence(F.col("first_day"), F.lit(as_of))).alias("day"))
    )
    daily = (
        calendar.join(orders_by_day, on="day", how="left")
        .join(sessions_by_day, on="day", how="left")
        .join(active_by_day, on="day", how="left")
    )
    values = {
        "orders": F.coalesce(F.col("orders"), F.lit(0)),
        "revenue_eur": F.coalesce(F.col("revenue_eur"), F.lit(0.0)),
        "active_customers": F.coalesce(F.col("active_customers"), F.lit(0)),
        "sessions": F.coalesce(F.col("sessions"), F.lit(0)),
        "as_of": F.lit(as_of),
    }
    return daily.withColumns(values).select(
        *[F.col(n).cast(t).alias(n) for n, t in DAILY_COLUMNS.items()]
    )


def build_kpi_channel_daily(
    events_df: DataFrame,
    orders_df: DataFrame,
    customers_df: DataFrame,
    as_of: date,
    lookback_days: int = 30,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
) -> DataFrame:
    """gold.kpi_channel_daily for `as_of` (see the module docstring)."""
    timeline = journey_timeline(
        events_df, orders_df, customers_df, as_of, lookback_days, include_channels,
        exclude_channels,
    )
    return kpi_channel_daily_from_timeline(
        events_df, timeline, as_of, include_channels, exclude_channels
    )


def kpi_channel_daily_from_timeline(
    events_df: DataFrame,
    timeline_df: DataFrame,
    as_of: date,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
) -> DataFrame:
    """gold.kpi_channel_daily from the silver events and journey_timeline's rows, built for the
    same `as_of` and channel lists (run_gold cuts the timeline once for this table and
    gold.journeys)."""
    check_as_of(as_of)
    touchpoints = (
        select_touchpoints(events_df, as_of, include_channels, exclude_channels)
        .groupBy(utc_day(F.col("event_ts")).alias("day"), "channel")
        .agg(F.count(F.lit(1)).alias("touchpoints"))
    )
    consented = (
        timeline_df.where(~F.col("is_conversion"))
        .groupBy(utc_day(F.col("ts")).alias("day"), "channel")
        .agg(F.count(F.lit(1)).alias("consented_touchpoints"))
    )
    last_touches = journey_touchpoints(timeline_df).where(
        F.col("converted") & F.col("is_last_touch")
    )
    conversions = last_touches.groupBy(utc_day(F.col("event_ts")).alias("day"), "channel").agg(
        F.count(F.lit(1)).alias("conversions"),
        exact_sum("conversion_value").alias("revenue_eur"),
    )
    # Every consented touch and every last touch is one of the touchpoints counted above (same
    # filters), so left joins from the touchpoints lose no row.
    joined = touchpoints.join(consented, on=["day", "channel"], how="left").join(
        conversions, on=["day", "channel"], how="left"
    )
    conversions_count = F.coalesce(F.col("conversions"), F.lit(0))
    consented_count = F.coalesce(F.col("consented_touchpoints"), F.lit(0))
    values = {
        "consented_touchpoints": consented_count,
        "conversions": conversions_count,
        "conversion_rate": F.when(consented_count > 0, conversions_count / consented_count),
        "revenue_eur": F.coalesce(F.col("revenue_eur"), F.lit(0.0)),
        "as_of": F.lit(as_of),
    }
    return joined.withColumns(values).select(
        *[F.col(n).cast(t).alias(n) for n, t in CHANNEL_COLUMNS.items()]
    )
