"""Heuristic (rule-based) attribution baselines, computed in Spark from journeys.

Every report shows Markov next to these: first touch, last touch, linear, time decay and
position based. Input is a journeys DataFrame with the gold.journeys columns ``channels``
(array<string>, time order), ``converted`` (boolean) and ``conversion_value`` (double); output
one row per (group keys, model, channel) with ``attributed_conversions`` and
``attributed_value``. Only built-in higher-order functions, no Python UDF.

Conventions (chosen on purpose):

* **Touches.** Null channel names are dropped; consecutive repeats are *kept* (unlike Markov,
  which collapses them): a rule credits touches, so ``A > A > B`` gives A two thirds under
  linear. First and last touch do not depend on it.
* **Only converted journeys are credited**, each with weight 1 (times an optional weight
  column, used by the bootstrap); a journey's credits sum to 1, so per model the attributed
  conversions add up to the converted journeys that have a channel. A converted journey with
  no channel (a null or empty array) cannot be credited to any channel and is left out, as
  Markov path counting leaves it out. ``converted`` null counts as not converted and
  ``conversion_value`` null as 0.
* **Position based** ``(first, middle, last)`` shares, default 40/20/40: one touch takes 100%,
  two touches split ``first : last`` (50/50 by default), from three on the middle share is
  split evenly over the middle touches.
* **Time decay**: weights ``2^(-age / half_life)``, normalised per journey. gold.journeys has
  no per-touch timestamps, so by default the age of a touch is its distance in touches from the
  conversion (the last touch has age 0) and the half-life is ``half_life_touches``. When the
  frame has a ``touch_ts array<timestamp>`` column aligned with ``channels`` (proposed for
  gold.journeys), the age is ``journey_end_ts - touch_ts`` in days and the half-life is
  ``half_life_days``.
* **Exact sums.** Credits are summed as DECIMAL(38, 18), as the Markov counter sums its
  weights: decimal addition is associative, so the totals are identical whatever the
  partitioning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ml.attribution.spark_paths import COUNT_TYPE, WEIGHT_TYPE

MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
JOURNEY_COLUMNS = ("channels", "converted", "conversion_value")
TOUCH_TS = "touch_ts"
RESULT_COLUMNS = ("model", "channel", "attributed_conversions", "attributed_value")

DEFAULT_POSITION_WEIGHTS = (0.4, 0.2, 0.4)
DEFAULT_HALF_LIFE_DAYS = 7.0
DEFAULT_HALF_LIFE_TOUCHES = 2.0
_SECONDS_PER_DAY = 86_400.0


# --------------------------------------------------------------------------- Column helpers


def _credit(channel: Column, share: Column) -> Column:
    return F.struct(channel.alias("channel"), share.cast("double").alias("share"))


def first_touch_credits(touches: Column) -> Column:
    """array<struct<channel, share>>: the whole conversion to the first touch."""
    return F.when(F.size(touches) > 0, F.array(_credit(F.get(touches, 0), F.lit(1.0)))).otherwise(
        F.array().cast("array<struct<channel:string,share:double>>")
    )


def last_touch_credits(touches: Column) -> Column:
    """array<struct<channel, share>>: the whole conversion to the last touch."""
    return F.when(
        F.size(touches) > 0, F.array(_credit(F.element_at(touches, -1), F.lit(1.0)))
    ).otherwise(F.array().cast("array<struct<channel:string,share:double>>"))


def linear_credits(touches: Column) -> Column:
    """array<struct<channel, share>>: an equal share per touch."""
    n = F.size(touches)
    return F.transform(touches, lambda x: _credit(x, F.lit(1.0) / n))


def position_credits(
    touches: Column, weights: Sequence[float] = DEFAULT_POSITION_WEIGHTS
) -> Column:
    """array<struct<channel, share>>: ``first / middle / last`` shares (see the module notes)."""
    first, middle, last = check_position_weights(weights)
    n = F.size(touches)
    # Two touches: no middle to give to, so first and last keep their ratio (50/50 by default).
    two_first = first / (first + last) if first + last > 0 else 0.5

    def share(i: Column) -> Column:
        return (
            F.when(n == 1, F.lit(1.0))
            .when(n == 2, F.when(i == 0, F.lit(two_first)).otherwise(F.lit(1.0 - two_first)))
            .when(i == 0, F.lit(first))
            .when(i == n - 1, F.lit(last))
            .otherwise(F.lit(middle) / (n - 2))
        )

    return F.transform(touches, lambda x, i: _credit(x, share(i)))


def decay_credits(touches: Column, ages: Column, half_life: float) -> Column:
    """array<struct<channel, share>>: shares ``2^(-age / half_life)`` normalised to sum to 1.

    ``ages`` is an array aligned with ``touches`` (negative ages count as 0: a touch logged
    after its conversion is treated as simultaneous with it).
    """
    check_half_life(half_life)
    raw = F.transform(ages, lambda a: F.pow(F.lit(0.5), F.greatest(a, F.lit(0.0)) / half_life))
    total = F.aggregate(raw, F.lit(0.0), lambda acc, w: acc + w)
    return F.transform(touches, lambda x, i: _credit(x, F.get(raw, i) / total))


def position_ages(touches: Column) -> Column:
    """Age of each touch in touches before the conversion: n-1, ..., 1, 0."""
    n = F.size(touches)
    return F.transform(touches, lambda _, i: (n - 1 - i).cast("double"))


# --------------------------------------------------------------------------- checks


def check_position_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """(first, middle, last): three non-negative numbers adding up to 1."""
    if len(weights) != 3:
        raise ValueError(f"position weights must be (first, middle, last), got {weights!r}")
    values = tuple(float(w) for w in weights)
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"position weights must be finite and non-negative, got {weights!r}")
    if abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"position weights must add up to 1, got {weights!r} (sum {sum(values)})")
    return values  # type: ignore[return-value]


def check_half_life(half_life: float) -> float:
    if isinstance(half_life, bool) or not isinstance(half_life, int | float):
        raise TypeError(f"half-life must be a number, got {type(half_life).__name__}")
    if not math.isfinite(half_life) or half_life <= 0:
        raise ValueError(f"half-life must be a positive number, got {half_life!r}")
    return float(half_life)


def check_models(models: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(
            f"unknown heuristic model(s) {unknown or models!r}: use {', '.join(MODELS)}"
        )
    return tuple(dict.fromkeys(models))


def time_decay_basis(journeys_df: DataFrame) -> str:
    """'days' when the frame has per-touch timestamps (touch_ts), else 'touches'."""
    return "days" if TOUCH_TS in journeys_df.columns else "touches"


# --------------------------------------------------------------------------- transforms


def with_touches(journeys_df: DataFrame) -> DataFrame:
    """Adds ``touches`` (the non-null channels) and ``ages`` (time-decay age of each touch)."""
    if TOUCH_TS in journeys_df.columns:
        # arrays_zip pads the shorter array with nulls; a touch without a time gets age 0.
        zipped = F.filter(
            F.arrays_zip(F.col("channels").alias("c"), F.col(TOUCH_TS).alias("t")),
            lambda z: z["c"].isNotNull(),
        )
        end = F.unix_seconds(F.col("journey_end_ts"))
        return journeys_df.withColumns(
            {
                "touches": F.transform(zipped, lambda z: z["c"]),
                "ages": F.transform(
                    zipped,
                    lambda z: F.coalesce(
                        (end - F.unix_seconds(z["t"])).cast("double") / _SECONDS_PER_DAY,
                        F.lit(0.0),
                    ),
                ),
            }
        )
    touches = F.filter(F.col("channels"), lambda x: x.isNotNull())
    return journeys_df.withColumn("touches", touches).withColumn(
        "ages", position_ages(F.col("touches"))
    )


def _labelled(credits: Column, model: str) -> Column:
    """Credits with the model's name in each struct (a one-argument lambda: Spark reads a
    second parameter as the element index)."""
    label = F.lit(model)
    return F.transform(
        credits,
        lambda c: F.struct(
            label.alias("model"), c["channel"].alias("channel"), c["share"].alias("share")
        ),
    )


def heuristic_attribution(
    journeys_df: DataFrame,
    models: Sequence[str] = MODELS,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    half_life_touches: float = DEFAULT_HALF_LIFE_TOUCHES,
    position_weights: Sequence[float] = DEFAULT_POSITION_WEIGHTS,
    weight: str | None = None,
    by: Sequence[str] = (),
) -> DataFrame:
    """Attributed conversions and value per (by..., model, channel) under each rule.

    ``weight`` names a numeric column multiplying each journey (the bootstrap's resampling
    counts); ``by`` names group keys (segment, replicate) kept in the output.
    """
    models = check_models(models)
    position = check_position_weights(position_weights)
    by = list(by)
    needed = [*JOURNEY_COLUMNS, *by, *([weight] if weight else [])]
    missing = [c for c in needed if c not in journeys_df.columns]
    if missing:
        raise ValueError(f"journeys DataFrame is missing column(s): {', '.join(missing)}")
    half_life = half_life_days if time_decay_basis(journeys_df) == "days" else half_life_touches

    journey_weight = F.col(weight).cast("double") if weight else F.lit(1.0)
    converted = (
        journeys_df.where(F.coalesce(F.col("converted"), F.lit(False)))
        .select(
            *by,
            "channels",
            *([TOUCH_TS, "journey_end_ts"] if TOUCH_TS in journeys_df.columns else []),
            journey_weight.alias("_weight"),
            (
                F.coalesce(F.col("conversion_value").cast("double"), F.lit(0.0)) * journey_weight
            ).alias("_value"),
        )
        .transform(with_touches)
    )
    touches, ages = F.col("touches"), F.col("ages")
    rules = {
        "first_touch": lambda: first_touch_credits(touches),
        "last_touch": lambda: last_touch_credits(touches),
        "linear": lambda: linear_credits(touches),
        "time_decay": lambda: decay_credits(touches, ages, half_life),
        "position_based": lambda: position_credits(touches, position),
    }
    # One explode over every model's credits: a single pass over the journeys for all rules.
    credits = F.concat(*(_labelled(rules[m](), m) for m in models))
    exploded = converted.select(
        *by, "_weight", "_value", F.explode(credits).alias("credit")
    ).select(
        *by,
        "credit.model",
        "credit.channel",
        (F.col("credit.share") * F.col("_weight")).alias("conversions"),
        (F.col("credit.share") * F.col("_value")).alias("value"),
    )
    return exploded.groupBy(*by, "model", "channel").agg(
        *(
            F.sum(F.col(c).cast(WEIGHT_TYPE)).cast(COUNT_TYPE).cast("double").alias(name)
            for c, name in (
                ("conversions", "attributed_conversions"),
                ("value", "attributed_value"),
            )
        )
    )
