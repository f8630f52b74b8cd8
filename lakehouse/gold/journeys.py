"""gold.journeys: each customer's marketing touchpoints cut into journeys, the input of Markov
attribution.

Semantics (chosen on purpose; the tests pin each rule):

* **Touchpoint**: a silver event with a non-blank `channel`, a `customer_key` (anonymous events
  that identity resolution could not attribute belong to nobody's journey; run_gold gives those
  of a browser several customers logged in on to the one who logged in next,
  `lakehouse.gold.attribute_shared_browsers`), an `event_ts` before
  the end of `as_of` (UTC), of a customer in `customers_df` (run_gold passes only those with
  marketing consent: journeys are a marketing output), and a channel kept by
  `include_channels` / `exclude_channels`. Excluded channels are removed before journeys are cut:
  they neither appear in a journey nor split one.
* **Conversion**: a silver order with an order_id, status 'completed' (case-insensitive), a
  customer_key and an `order_ts` before the end of `as_of`. Cancelled or returned orders are not
  conversions and do not end a journey.
* **Order of events**: per customer by timestamp; at equal timestamps touchpoints come before a
  conversion (a touch at the very instant of an order counts toward it), then by event_id /
  order_id, so ties are broken the same way on every run.
* **Converted journey**: for each conversion, the touchpoints after the customer's previous
  conversion (strictly) and up to and including the order instant, that are at most
  `lookback_days` x 24 h older than the order. `conversion_value` = the order's amount_eur,
  `order_id` = the order, `journey_end_ts` = order_ts. A conversion without any such touchpoint
  is still a journey (empty `channels`, `touchpoints` 0), so every completed order appears once;
  Markov path counting skips journeys without channels.
* **Open (not converted) journey**: the touchpoints after the customer's last conversion up to
  the end of `as_of` that are at most `lookback_days` days old at the end of `as_of` (the window
  covers the last `lookback_days` calendar days, `as_of` included). `converted` false,
  `conversion_value` 0.0, `order_id` null, `journey_end_ts` = the last touchpoint. At most one per
  customer; none when no touchpoint is left.
* **Expired touchpoints**: a touchpoint older than the look-back window of the journey it falls
  in belongs to no journey. Applying the same window to open journeys keeps converted and
  non-converted paths comparable in length (otherwise non-converting paths would collect
  arbitrarily old touches and the Markov removal effects would favour long-ago channels).
* `journey_start_ts` = first touchpoint (the order instant for a journey without touchpoints);
  `channels` in the order above, repeats kept (Markov collapses them itself).
* `journey_id` = sha2-256 of `customer_key|order:<order_id>` for a converted journey and of
  `customer_key|open` for the open one: stable across runs and, for a converted journey, across
  `as_of` dates. Unique within one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.gold import (
    as_of_cutoff,
    channel_filter,
    check_as_of,
    filter_until_as_of,
    latest_rows,
)
from lakehouse.gold.customer_360 import is_completed
from lakehouse.privacy.pseudonym import hmac_sha256_hex

COLUMNS = {
    "journey_id": "string",
    "customer_key": "string",
    "journey_start_ts": "timestamp",
    "journey_end_ts": "timestamp",
    "channels": "array<string>",
    "touchpoints": "int",
    "converted": "boolean",
    "conversion_value": "double",
    "order_id": "string",
    "as_of": "date",
}

# Sort rank of the two kinds of timeline rows at the same instant: touches first.
_TOUCH, _CONVERSION = 0, 1


def check_lookback_days(lookback_days: int) -> int:
    if isinstance(lookback_days, bool) or not isinstance(lookback_days, int):
        raise TypeError(f"lookback_days must be an int, got {type(lookback_days).__name__}")
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
    return lookback_days


MICROS_PER_DAY = 86_400_000_000


def select_touchpoints(
    events_df: DataFrame,
    as_of: date,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
) -> DataFrame:
    """Marketing touchpoints up to `as_of`, anonymous ones included.

    Columns: event_id, customer_key (may be null), event_ts, channel.
    """
    events = latest_rows(events_df, "event_id", ["customer_key", "event_ts", "channel"])
    return filter_until_as_of(events, "event_ts", as_of).where(
        channel_filter(F.col("channel"), include_channels, exclude_channels)
    )


def select_conversions(orders_df: DataFrame, as_of: date) -> DataFrame:
    """Completed orders up to `as_of`: order_id, customer_key, order_ts, amount_eur.

    An order without an order_id is no conversion: a journey is named after its order, and
    journeys_from_timeline tells a converted journey by it (silver never holds one; a frame
    given to the builders may)."""
    orders = latest_rows(orders_df, "order_id", ["customer_key", "order_ts", "amount_eur", "status"])
    return (
        filter_until_as_of(orders, "order_ts", as_of)
        .where(F.col("order_id").isNotNull() & F.col("customer_key").isNotNull()
               & is_completed(F.col("status")))
        .drop("status")
    )


def journey_timeline(
    events_df: DataFrame,
    orders_df: DataFrame,
    customers_df: DataFrame,
    as_of: date,
    lookback_days: int = 30,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
) -> DataFrame:
    """Touchpoints and conversions of known customers, each assigned to its journey.

    Columns: customer_key, journey_seq (1, 2, ... per customer), is_conversion, ts, id
    (event_id / order_id), channel, amount_eur, end_ts (order_ts of the journey's conversion,
    null for the open journey), converted, in_window (false for expired touchpoints).
    """
    check_as_of(as_of)
    lookback = check_lookback_days(lookback_days)
    known = customers_df.select("customer_key").where(F.col("customer_key").isNotNull())
    touches = (
        select_touchpoints(events_df, as_of, include_channels, exclude_channels)
        .where(F.col("customer_key").isNotNull())
        .select(
            "customer_key",
            F.col("event_ts").alias("ts"),
            F.col("event_id").alias("id"),
            "channel",
            F.lit(None).cast("double").alias("amount_eur"),
            F.lit(_TOUCH).alias("kind"),
        )
    )
    conversions = select_conversions(orders_df, as_of).select(
        "customer_key",
        F.col("order_ts").alias("ts"),
        F.col("order_id").alias("id"),
        F.lit(None).cast("string").alias("channel"),
        "amount_eur",
        F.lit(_CONVERSION).alias("kind"),
    )
    timeline = touches.unionByName(conversions).join(known, on="customer_key", how="left_semi")
    is_conversion = F.col("kind") == _CONVERSION

    # Journey number = conversions strictly before this row + 1: a touchpoint joins the next
    # conversion (or the open journey after the last), a conversion closes its own journey.
    before = (
        Window.partitionBy("customer_key")
        .orderBy("ts", "kind", "id")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    conversions_before = F.coalesce(F.sum(is_conversion.cast("int")).over(before), F.lit(0))
    numbered = timeline.withColumns(
        {"is_conversion": is_conversion, "journey_seq": conversions_before + 1}
    )
    whole_journey = Window.partitionBy("customer_key", "journey_seq").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    end_ts = F.max(F.when(F.col("is_conversion"), F.col("ts"))).over(whole_journey)
    with_end = numbered.withColumn("end_ts", end_ts)
    # In microseconds since the epoch: lookback_days x 24 h exactly. Timestamp minus a day
    # interval counts days on the session time zone's wall clock, so a window across a daylight
    # saving change was 23 or 25 hours long when the session was not in UTC (a notebook's).
    window_start = (
        F.unix_micros(F.coalesce(F.col("end_ts"), as_of_cutoff(as_of)))
        - F.lit(lookback * MICROS_PER_DAY)
    )
    return with_end.withColumns(
        {
            "converted": F.col("end_ts").isNotNull(),
            "in_window": F.col("is_conversion") | (F.unix_micros("ts") >= window_start),
        }
    ).drop("kind")


def journey_id(customer_key: Column, order_id: Column, key: bytes) -> Column:
    """Keyed (the pseudonymisation key): an unkeyed hash of customer_key and order_id was
    reversed in about a second by a role that sees customer_key but not the order (order ids
    follow O<yyyymmdd>-<6 digits>)."""
    marker = F.coalesce(F.concat(F.lit("order:"), order_id), F.lit("open"))
    return hmac_sha256_hex(key, F.concat(F.lit("journey:"), F.concat_ws("|", customer_key, marker)))


def journeys_from_timeline(timeline_df: DataFrame, as_of: date, key: bytes) -> DataFrame:
    """One row per journey (the gold.journeys columns) from journey_timeline's rows."""
    kept = timeline_df.where(F.col("in_window"))
    is_touch = ~F.col("is_conversion")
    grouped = kept.groupBy("customer_key", "journey_seq").agg(
        # Sorting the structs by (ts, id) fixes the order that collect_list does not guarantee.
        F.sort_array(
            F.collect_list(F.when(is_touch, F.struct("ts", "id", "channel")))
        ).alias("touches"),
        F.max(F.when(F.col("is_conversion"), F.col("id"))).alias("order_id"),
        F.max(F.when(F.col("is_conversion"), F.col("amount_eur"))).alias("amount_eur"),
        F.max("end_ts").alias("end_ts"),
    )
    converted = F.col("order_id").isNotNull()
    journeys = grouped.withColumns(
        {
            "journey_id": journey_id(F.col("customer_key"), F.col("order_id"), key),
            "channels": F.transform("touches", lambda t: t["channel"]),
            "touchpoints": F.size("touches"),
            "converted": converted,
            # get() gives null on an empty array where [] fails under ANSI mode.
            "journey_start_ts": F.coalesce(F.get("touches", 0)["ts"], F.col("end_ts")),
            "journey_end_ts": F.coalesce(
                F.col("end_ts"), F.get("touches", F.size("touches") - 1)["ts"]
            ),
            "conversion_value": F.when(converted, F.col("amount_eur")).otherwise(F.lit(0.0)),
            "as_of": F.lit(as_of),
        }
    ).where(converted | (F.col("touchpoints") > 0))
    return journeys.select(*[F.col(n).cast(t).alias(n) for n, t in COLUMNS.items()])


def journey_touchpoints(timeline_df: DataFrame) -> DataFrame:
    """Touchpoints that belong to a journey, with whether each is its journey's last touch.

    Columns: customer_key, event_id, event_ts, channel, converted, is_last_touch, order_id,
    conversion_value. Used by kpi_channel_daily (last-touch conversions).
    """
    journey = ["customer_key", "journey_seq"]
    whole_journey = Window.partitionBy(*journey).rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    latest_first = (
        Window.partitionBy(*journey)
        .orderBy(F.col("ts").desc(), F.col("id").desc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    conversion_id = F.max(F.when(F.col("is_conversion"), F.col("id"))).over(whole_journey)
    conversion_value = F.max(F.when(F.col("is_conversion"), F.col("amount_eur"))).over(
        whole_journey
    )
    with_conversion = timeline_df.where(F.col("in_window")).withColumns(
        {"order_id": conversion_id, "conversion_value": conversion_value}
    )
    touches = with_conversion.where(~F.col("is_conversion"))
    return touches.select(
        "customer_key",
        F.col("id").alias("event_id"),
        F.col("ts").alias("event_ts"),
        "channel",
        "converted",
        (F.row_number().over(latest_first) == 1).alias("is_last_touch"),
        "order_id",
        F.when(F.col("converted"), F.col("conversion_value"))
        .otherwise(F.lit(0.0))
        .alias("conversion_value"),
    )


def build_journeys(
    events_df: DataFrame,
    orders_df: DataFrame,
    customers_df: DataFrame,
    as_of: date,
    lookback_days: int = 30,
    include_channels: Iterable[str] | None = None,
    exclude_channels: Iterable[str] | None = None,
    *,
    key: bytes,
) -> DataFrame:
    """gold.journeys for `as_of` (see the module docstring for the exact rules); ``key``: the
    pseudonymisation key, which journey ids are made with."""
    timeline = journey_timeline(
        events_df, orders_df, customers_df, as_of, lookback_days, include_channels,
        exclude_channels,
    )
    return journeys_from_timeline(timeline, as_of, key)
