"""gold.customer_360: one row per customer, every figure valid at the end of the `as_of` day.

Definitions (all from silver rows with a timestamp before the end of `as_of`, UTC):

* **Who**: every customer_key of silver.customers whose signup_date is not after `as_of`
  (or unknown): a customer who signed up later did not exist yet on that day. Only
  pseudonymised profile columns are carried (no email, phone, name or handle at all).
  A customer whose CRM row was quarantined is not in silver.customers, so not here either;
  their orders still count in gold.kpi_daily (revenue is revenue).
* **Profile** (country, marketing_consent, data_expiry_date): the customer's current silver
  profile, the one exception to "valid at the end of `as_of`". Silver keeps one row per customer
  (the latest CRM version), and a withdrawal of consent or a shorter retention must apply to
  every output built after it, whatever date the figures are for, so it is not rolled back.
  For the profile as it stood on a past day, pin silver.customers to a version of that day
  (`lakehouse run gold --as-of-version silver.customers=N` or `--as-of-timestamp`).
  A customer past their data_expiry_date stays here until `lakehouse run retention` erases them.
* **Orders** (RFM): completed orders only (status 'completed', case-insensitive).
  `frequency` = number of them, `monetary` = their EUR total (0.0 when none; each order's
  amount_eur was rounded to cents in silver when converted from its currency),
  `avg_order_value` = monetary / frequency (null when none), `recency_days` = days from the UTC
  day of the last one to `as_of` (0 = ordered on `as_of`; null = never ordered),
  `first_order_ts` / `last_order_ts` = their first and last timestamps.
* **Tenure**: days from signup_date to `as_of` (null when signup_date is unknown).
* **Behaviour** (clickstream events with this customer_key, including anonymous events that
  identity resolution attributed to them; on a browser several customers logged in on, to the
  one who logged in next, see `lakehouse.gold.attribute_shared_browsers`): `sessions` = distinct non-null session_id,
  `page_views` = events of type 'page_view', `last_seen_ts` = latest event.
* **Social**: `posts`, `social_likes` (null likes count 0), `interest_keywords` = the
  customer's `top_keywords` most frequent keywords (lower-cased; a keyword counts once per post),
  most frequent first, ties in alphabetical order; empty when there are none.
* **IoT**: `devices` = distinct device_id, `device_error_rate` = readings with an error code /
  readings (null without readings), `latest_battery` / `latest_temperature` = the value of the
  latest reading (by reading_ts, then reading_id) that has one, so a reading missing a field
  does not hide the last known value.

Counts are 0, not null, when a customer has no rows of a kind.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.gold import (
    check_as_of,
    exact_sum,
    filter_until_as_of,
    latest_rows,
    utc_day,
)

COLUMNS = {
    "customer_key": "string",
    "country": "string",
    "signup_date": "date",
    "marketing_consent": "boolean",
    "data_expiry_date": "date",
    "tenure_days": "int",
    "recency_days": "int",
    "frequency": "int",
    "monetary": "double",
    "avg_order_value": "double",
    "first_order_ts": "timestamp",
    "last_order_ts": "timestamp",
    "sessions": "int",
    "page_views": "int",
    "last_seen_ts": "timestamp",
    "posts": "int",
    "social_likes": "int",
    "interest_keywords": "array<string>",
    "devices": "int",
    "device_error_rate": "double",
    "latest_battery": "double",
    "latest_temperature": "double",
    "as_of": "date",
}

PAGE_VIEW = "page_view"
COMPLETED = "completed"


def is_completed(status: Column) -> Column:
    return F.lower(F.trim(status)) == COMPLETED


def has_error(error_code: Column) -> Column:
    """A reading is in error when it carries a non-blank error code (null = no error)."""
    return error_code.isNotNull() & (F.trim(error_code) != "")


def latest_value(value: str, ts: str, tiebreak: str) -> Column:
    """`value` of the latest row (by ts, then tiebreak) where it is not null.

    max_by ignores rows whose ordering is null, so nulling the ordering of rows without a value
    skips them; the tiebreak makes the winner unique when two rows share a timestamp.
    """
    ordering = F.when(F.col(value).isNotNull(), F.struct(F.col(ts), F.col(tiebreak)))
    return F.max_by(F.col(value), ordering)


def current_customers(customers_df: DataFrame, as_of: date) -> DataFrame:
    """The current profile per customer_key, for customers who existed on `as_of`.

    Current, not as of `as_of` (see the module docstring): consent withdrawals and retention
    apply to every build after them.
    """
    profile = latest_rows(
        customers_df,
        "customer_key",
        ["country", "signup_date", "marketing_consent", "data_expiry_date"],
        newest_first=["updated_at"],
    )
    return profile.where(
        F.col("customer_key").isNotNull()
        & (F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(as_of)))
    )


def order_features(orders_df: DataFrame, as_of: date) -> DataFrame:
    """Per customer: completed orders' count, EUR total and first/last timestamps."""
    orders = latest_rows(orders_df, "order_id", ["customer_key", "order_ts", "amount_eur", "status"])
    completed = filter_until_as_of(orders, "order_ts", as_of).where(
        F.col("customer_key").isNotNull() & is_completed(F.col("status"))
    )
    return completed.groupBy("customer_key").agg(
        F.count(F.lit(1)).alias("frequency"),
        exact_sum("amount_eur").alias("monetary"),
        F.min("order_ts").alias("first_order_ts"),
        F.max("order_ts").alias("last_order_ts"),
    )


def behaviour_features(events_df: DataFrame, as_of: date) -> DataFrame:
    """Per customer: distinct sessions, page views and the last event."""
    events = latest_rows(events_df, "event_id", ["customer_key", "event_ts", "session_id", "event_type"])
    known = filter_until_as_of(events, "event_ts", as_of).where(F.col("customer_key").isNotNull())
    return known.groupBy("customer_key").agg(
        F.count_distinct("session_id").alias("sessions"),
        F.count(F.when(F.col("event_type") == PAGE_VIEW, True)).alias("page_views"),
        F.max("event_ts").alias("last_seen_ts"),
    )


def social_features(social_df: DataFrame, as_of: date, top_keywords: int) -> DataFrame:
    """Per customer: posts, likes and the top keywords (most frequent first, then a-z)."""
    posts = latest_rows(social_df, "post_id", ["customer_key", "post_ts", "keywords", "likes"])
    known = filter_until_as_of(posts, "post_ts", as_of).where(F.col("customer_key").isNotNull())
    counts = known.groupBy("customer_key").agg(
        F.count(F.lit(1)).alias("posts"),
        F.coalesce(F.sum("likes"), F.lit(0)).alias("social_likes"),
    )
    # A keyword repeated inside one post is one mention: array_distinct after normalising.
    per_post = known.select(
        "customer_key",
        F.explode(F.array_distinct(F.transform("keywords", lambda k: F.lower(F.trim(k))))).alias(
            "keyword"
        ),
    ).where(F.col("keyword").isNotNull() & (F.col("keyword") != ""))
    mentions = per_post.groupBy("customer_key", "keyword").agg(F.count(F.lit(1)).alias("mentions"))
    rank_window = (
        Window.partitionBy("customer_key")
        .orderBy(F.col("mentions").desc(), F.col("keyword").asc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    top = mentions.withColumn("rank", F.row_number().over(rank_window)).where(
        F.col("rank") <= top_keywords
    )
    # collect_list order is not defined after a shuffle: sort the (rank, keyword) pairs instead.
    keywords = top.groupBy("customer_key").agg(
        F.transform(
            F.sort_array(F.collect_list(F.struct("rank", "keyword"))), lambda s: s["keyword"]
        ).alias("interest_keywords")
    )
    return counts.join(keywords, on="customer_key", how="left")


def device_features(iot_df: DataFrame, as_of: date) -> DataFrame:
    """Per customer: devices, error rate and the latest known battery and temperature."""
    readings = latest_rows(
        iot_df,
        "reading_id",
        ["device_id", "customer_key", "reading_ts", "temperature", "battery", "error_code"],
    )
    known = filter_until_as_of(readings, "reading_ts", as_of).where(
        F.col("customer_key").isNotNull()
    )
    return known.groupBy("customer_key").agg(
        F.count_distinct("device_id").alias("devices"),
        (F.count(F.when(has_error(F.col("error_code")), True)) / F.count(F.lit(1))).alias(
            "device_error_rate"
        ),
        latest_value("battery", "reading_ts", "reading_id").alias("latest_battery"),
        latest_value("temperature", "reading_ts", "reading_id").alias("latest_temperature"),
    )


def build_customer_360(
    customers_df: DataFrame,
    orders_df: DataFrame,
    events_df: DataFrame,
    social_df: DataFrame,
    iot_df: DataFrame,
    as_of: date,
    top_keywords: int = 5,
) -> DataFrame:
    """gold.customer_360 for `as_of` from the silver tables (see the module docstring)."""
    check_as_of(as_of)
    if isinstance(top_keywords, bool) or not isinstance(top_keywords, int) or top_keywords < 1:
        raise ValueError(f"top_keywords must be a positive integer, got {top_keywords!r}")
    as_of_lit = F.lit(as_of)
    joined = (
        current_customers(customers_df, as_of)
        .join(order_features(orders_df, as_of), on="customer_key", how="left")
        .join(behaviour_features(events_df, as_of), on="customer_key", how="left")
        .join(social_features(social_df, as_of, top_keywords), on="customer_key", how="left")
        .join(device_features(iot_df, as_of), on="customer_key", how="left")
    )
    frequency = F.coalesce(F.col("frequency"), F.lit(0))
    monetary = F.coalesce(F.col("monetary"), F.lit(0.0))
    values = {
        "tenure_days": F.datediff(as_of_lit, F.col("signup_date")),
        "recency_days": F.datediff(as_of_lit, utc_day(F.col("last_order_ts"))),
        "frequency": frequency,
        "monetary": monetary,
        "avg_order_value": F.when(frequency > 0, monetary / frequency),
        "sessions": F.coalesce(F.col("sessions"), F.lit(0)),
        "page_views": F.coalesce(F.col("page_views"), F.lit(0)),
        "posts": F.coalesce(F.col("posts"), F.lit(0)),
        "social_likes": F.coalesce(F.col("social_likes"), F.lit(0)),
        "interest_keywords": F.coalesce(
            F.col("interest_keywords"), F.array().cast("array<string>")
        ),
        "devices": F.coalesce(F.col("devices"), F.lit(0)),
        "as_of": as_of_lit,
    }
    return joined.withColumns(values).select(
        *[F.col(name).cast(dtype).alias(name) for name, dtype in COLUMNS.items()]
    )
