"""Segmentation features: gold.customer_360 (one as_of snapshot) -> one numeric row per customer.

Every feature is a plain double column named ``f_<what>``; the model (ml/segmentation.py)
assembles and standardises them. Skewed counts and amounts are log-transformed (``log1p``) so
that a handful of heavy buyers or browsers do not dominate the squared distances of K-means.

Null policy (deliberate, never a silent 0):

* **Never ordered** (``recency_days`` null): recency is the customer's tenure (they have not
  ordered during any day of it), capped at ``recency_cap_days``, and ``f_has_ordered`` = 0
  tells the model the recency is "no order yet", not "ordered that long ago". Their
  ``monetary`` and ``frequency`` are true zeros (gold counts 0 orders / 0.0 EUR), and
  ``avg_order_value`` (undefined without orders) is set to 0 EUR, which ``f_has_ordered``
  again marks as "no orders" rather than "cheap orders".
* **Unknown tenure** (``tenure_days`` null: signup date unknown): the median tenure of the
  customers whose tenure is known.
* **No device readings** (``device_error_rate`` / ``latest_battery`` null): the median of the
  customers with readings, plus ``f_has_device_data`` = 0/1. When nobody has readings the
  columns are constant (0) and standardise to 0: they then carry no weight at all.
* **Counts** (frequency, sessions, page views, posts, likes, devices) are 0, not null, by
  gold's contract. A null there is imputed with the median and counted (``imputed`` in
  FeatureSet), so a broken upstream shows up in the MLflow run instead of being hidden.
* A required column that is null for **every** customer is bad input: InputDataError.

Medians are computed with ``percentile_approx`` in one aggregate (a bounded result), and they
are recomputed from the data being scored: the model stores no imputation state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakehouse.asof import choose_snapshot
from lakehouse.errors import InputDataError

INPUT_TABLE = "gold.customer_360"
KEY = "customer_key"

# Input columns every feature build needs (a contract check names the missing ones).
INPUT_COLUMNS = (
    "customer_key", "tenure_days", "recency_days", "frequency", "monetary", "avg_order_value",
    "sessions", "page_views", "posts", "social_likes", "devices", "device_error_rate",
    "latest_battery", "as_of",
)
# Count columns: 0 by contract when a customer has no rows of that kind.
COUNT_COLUMNS = ("frequency", "sessions", "page_views", "posts", "social_likes", "devices")
# Columns that must hold a value for at least one customer, or the snapshot is unusable.
REQUIRED_COLUMNS = ("tenure_days", "frequency", "monetary", *COUNT_COLUMNS[1:])
DEVICE_COLUMNS = ("device_error_rate", "latest_battery")

FEATURE_COLUMNS = (
    "f_recency",
    "f_has_ordered",
    "f_frequency",
    "f_monetary",
    "f_avg_order_value",
    "f_tenure",
    "f_sessions",
    "f_page_views",
    "f_posts",
    "f_social_likes",
    "f_devices",
    "f_device_error_rate",
    "f_latest_battery",
    "f_has_device_data",
)
# Features whose profile is shown in the raw unit (days, EUR, counts) rather than log1p.
PROFILE_COLUMNS = (
    "recency_days_filled", "frequency", "monetary", "avg_order_value", "tenure_days",
    "sessions", "page_views", "posts", "has_ordered", "has_device_data",
)
DEFAULT_RECENCY_CAP_DAYS = 730


@dataclass(frozen=True)
class FeatureSet:
    """Features of one snapshot plus what the null policy had to do to build them."""

    features_df: DataFrame          # customer_key, as_of, the raw profile columns, f_* columns
    as_of: date
    rows: int
    medians: dict[str, float | None]
    imputed: dict[str, int]         # column -> rows whose value was imputed


def check_input_columns(df: DataFrame) -> None:
    """Schema contract: name every column of gold.customer_360 the features need but lack."""
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{INPUT_TABLE} lacks column(s) {', '.join(missing)} needed for segmentation: "
            f"rebuild it with the gold stage"
        )


def filter_as_of(customer_360_df: DataFrame, as_of: date) -> DataFrame:
    return customer_360_df.where(F.col("as_of") == F.lit(as_of))


def resolve_as_of(customer_360_df: DataFrame, as_of: date | None) -> date:
    """The snapshot to segment: the given one (it must be in the table) or the latest."""
    return choose_snapshot(
        customer_360_df, as_of, INPUT_TABLE,
        f"{INPUT_TABLE} is empty: no customers to segment; run the gold stage first",
    )


def null_profile(snapshot_df: DataFrame) -> tuple[int, dict[str, int], dict[str, float | None]]:
    """(rows, nulls per input column, median per input column) in one bounded aggregate."""
    numeric = [c for c in INPUT_COLUMNS if c not in (KEY, "as_of")]
    row = snapshot_df.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.count_if(F.col(c).isNull()).alias(f"null_{c}") for c in numeric],
        *[
            F.percentile_approx(F.col(c).cast("double"), 0.5, 10_000).alias(f"median_{c}")
            for c in numeric
        ],
    ).first()
    rows = int(row["rows"])
    nulls = {c: int(row[f"null_{c}"]) for c in numeric}
    medians = {
        c: (None if row[f"median_{c}"] is None else float(row[f"median_{c}"])) for c in numeric
    }
    return rows, nulls, medians


def check_required_columns(rows: int, nulls: Mapping[str, int], as_of: date) -> None:
    if rows == 0:
        raise InputDataError(
            f"{INPUT_TABLE} has no customers at as_of {as_of}: nothing to segment; run the "
            f"gold stage for that date first"
        )
    empty = [c for c in REQUIRED_COLUMNS if nulls[c] == rows]
    if empty:
        raise InputDataError(
            f"{INPUT_TABLE} column(s) {', '.join(empty)} are null for all {rows} customers at "
            f"as_of {as_of}: segmentation cannot use them; check the gold stage's inputs"
        )


def _filled(column: str, median: float | None) -> Column:
    """The column with nulls replaced by the median (0.0 when nobody has a value)."""
    return F.coalesce(F.col(column).cast("double"), F.lit(0.0 if median is None else median))


def _log1p_nonneg(column: Column) -> Column:
    # Negative amounts (refund corrections) would make log1p undefined; they mean "no spend".
    return F.log1p(F.greatest(column, F.lit(0.0)))


def with_segmentation_features(
    snapshot_df: DataFrame,
    medians: Mapping[str, float | None],
    recency_cap_days: int = DEFAULT_RECENCY_CAP_DAYS,
) -> DataFrame:
    """customer_key, as_of, the profile columns and every f_* feature (see the module notes)."""
    has_ordered = F.col("recency_days").isNotNull()
    has_device_data = F.col("device_error_rate").isNotNull() | F.col("latest_battery").isNotNull()
    tenure = _filled("tenure_days", medians.get("tenure_days"))
    recency = F.when(has_ordered, F.col("recency_days").cast("double")).otherwise(
        F.least(tenure, F.lit(float(recency_cap_days)))
    )
    counts = {c: _filled(c, medians.get(c)) for c in COUNT_COLUMNS}
    monetary = _filled("monetary", medians.get("monetary"))
    avg_order_value = F.when(has_ordered, _filled("avg_order_value", medians.get("avg_order_value")))
    base_df = snapshot_df.select(
        F.col(KEY),
        F.col("as_of"),
        tenure.alias("tenure_days"),
        recency.alias("recency_days_filled"),
        monetary.alias("monetary"),
        F.coalesce(avg_order_value, F.lit(0.0)).alias("avg_order_value"),
        *[counts[c].alias(c) for c in COUNT_COLUMNS],
        has_ordered.cast("double").alias("has_ordered"),
        has_device_data.cast("double").alias("has_device_data"),
        *[_filled(c, medians.get(c)).alias(c) for c in DEVICE_COLUMNS],
    )
    return base_df.withColumns(
        {
            "f_recency": _log1p_nonneg(F.col("recency_days_filled")),
            "f_has_ordered": F.col("has_ordered"),
            "f_frequency": _log1p_nonneg(F.col("frequency")),
            "f_monetary": _log1p_nonneg(F.col("monetary")),
            "f_avg_order_value": _log1p_nonneg(F.col("avg_order_value")),
            "f_tenure": _log1p_nonneg(F.col("tenure_days")),
            "f_sessions": _log1p_nonneg(F.col("sessions")),
            "f_page_views": _log1p_nonneg(F.col("page_views")),
            "f_posts": _log1p_nonneg(F.col("posts")),
            "f_social_likes": _log1p_nonneg(F.col("social_likes")),
            "f_devices": _log1p_nonneg(F.col("devices")),
            "f_device_error_rate": F.col("device_error_rate"),
            "f_latest_battery": F.col("latest_battery"),
            "f_has_device_data": F.col("has_device_data"),
        }
    )


def build_features(
    customer_360_df: DataFrame,
    as_of: date,
    recency_cap_days: int = DEFAULT_RECENCY_CAP_DAYS,
) -> FeatureSet:
    """Check one snapshot of gold.customer_360 and build its features (see the module notes)."""
    check_input_columns(customer_360_df)
    snapshot_df = filter_as_of(customer_360_df, as_of)
    rows, nulls, medians = null_profile(snapshot_df)
    check_required_columns(rows, nulls, as_of)
    imputed = {c: nulls[c] for c in ("tenure_days", "monetary", *COUNT_COLUMNS) if nulls[c]}
    features_df = with_segmentation_features(snapshot_df, medians, recency_cap_days)
    return FeatureSet(
        features_df=features_df, as_of=as_of, rows=rows, medians=medians, imputed=imputed
    )


# A mean logged to MLflow (input example, segment profile) covers at least this many customers.
MIN_CUSTOMERS_PER_LOGGED_MEAN = 10


def mean_rows_example(features_df: DataFrame, columns: list[str], rows: int, customers: int):
    """A pandas frame of `columns` for the model's input example, whose rows are means over
    groups of customers, not customers' rows: the customers in customer_key order (a keyed
    pseudonym, so in no order of their figures) split into consecutive groups of equal size
    (ntile), one row per group, at most `rows` rows and each over at least
    MIN_CUSTOMERS_PER_LOGGED_MEAN customers (one row over all of them when there are fewer).

    Why: the artifact store is outside the lake, where an erasure does not reach; the first
    rows of the feature table were real customers' figures. Per-feature quantiles were tried
    and are not enough: on xs, three of five quantile rows were one customer's exact row, as
    the features move together (recency and tenure, sessions and page views).
    """
    import pandas as pd
    from pyspark.sql import Window

    groups = max(1, min(rows, customers // MIN_CUSTOMERS_PER_LOGGED_MEAN))
    # One ordered window over every customer (a key and the features: small); partitioned by a
    # constant only so that Spark does not warn about the single partition it takes anyway.
    in_key_order = Window.partitionBy(F.lit(0)).orderBy(KEY)
    means = (
        features_df.select(KEY, *columns)
        .withColumn("example_group", F.ntile(groups).over(in_key_order))
        .groupBy("example_group")
        .agg(*[F.avg(c).alias(c) for c in columns])
        .orderBy("example_group")
        .drop("example_group")
    )
    return pd.DataFrame([row.asDict() for row in means.collect()], columns=columns)
