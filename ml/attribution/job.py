"""The attribution job: gold.journeys -> gold.channel_attribution and an MLflow run.

Shape: pure DataFrame transforms (journeys -> paths, segments, bootstrap replicates, order-choice
sums), then driver-side solves on bounded tables only (transition tables, order-choice sums,
per-channel results), then the two edges: the Delta write and the MLflow run.

What reaches the driver, and why it is bounded: transition tables (states x successors, per
segment and replicate), the order-choice sums (orders x folds x last states) and per-channel
results. Never the journeys or the distinct paths.

Decisions:

* **Markov order.** ``order`` 1-4 is used as given; None chooses it on the overall journeys by
  held-out log-loss (markov.choose_order's method, with its sums computed in Spark). Segments
  and bootstrap replicates use the same order as the overall result, so rows are comparable.
* **Segments.** When gold.customer_segments exists, its latest snapshot not after ``as_of`` is
  joined on customer_key and each segment gets its own chain and heuristics; the overall result
  (segment ``all``) is always written. Customers without a segment count only in ``all``.
* **Bootstrap.** Each replicate weighs every journey by a Poisson(1) count drawn from a hash
  of (seed, replicate, journey_id, customer_key): deterministic, with no shuffle or sample
  state, and the same journey gets the same weight in the overall and its segment's chain.
  ``ci_low`` / ``ci_high`` are the percentile interval of ``attributed_conversions`` over the
  replicates (a channel missing from a replicate counts 0 there), for Markov and heuristics.
* **Write.** Delta overwrite with ``replaceWhere as_of = <as_of>``: the table keeps one answer
  per business date (a re-run, even under another run id, replaces that date's rows whole, so
  channels that disappeared do not linger), other dates are untouched, and every run stays
  reachable through Delta time travel and its MLflow run. A MERGE would need a key that
  includes run_id to be idempotent, and then re-runs would pile up answers for one date.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.asof import as_date, choose_snapshot
from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.faults import crash_point
from ml.attribution.heuristics import (
    DEFAULT_HALF_LIFE_DAYS,
    DEFAULT_HALF_LIFE_TOUCHES,
    DEFAULT_POSITION_WEIGHTS,
    MODELS,
    heuristic_attribution,
    time_decay_basis,
)
from ml.attribution.markov import (
    ORDERS,
    AttributionResult,
    OrderChoice,
    attribute,
    check_order,
    choose_order_from_sums,
)
from ml.attribution.spark_paths import (
    COUNT_TYPE,
    WEIGHT_TYPE,
    collapsed_channels,
    count_transitions_spark_by,
)
from ml.tracking import check_mlflow_store, delta_versions, use_experiment, version_params

EXPERIMENT = "channel_attribution"
INPUT_TABLE = "gold.journeys"
SEGMENTS_TABLE = "gold.customer_segments"
OUTPUT_TABLE = "gold.channel_attribution"
OVERALL = "all"
MARKOV = "markov"
OUTPUT_COLUMNS = (
    "run_id",
    "as_of",
    "model",
    "order",
    "segment",
    "channel",
    "removal_effect",
    "attributed_conversions",
    "attributed_value",
    "ci_low",
    "ci_high",
)
OUTPUT_SCHEMA = (
    "run_id string, as_of date, model string, order int, segment string, channel string, "
    "removal_effect double, attributed_conversions double, attributed_value double, "
    "ci_low double, ci_high double"
)
ORDER_CHOICE_FOLDS = 5
DEFAULT_CI_LEVEL = 0.95


# --------------------------------------------------------------------------- Column helpers


def _poisson_thresholds() -> list[float]:
    """CDF of Poisson(1) at 0, 1, 2, ... until it is 1 to double precision."""
    cdf, term, k, out = 0.0, math.exp(-1.0), 0, []
    while cdf + term < 1.0 and k < 30:
        cdf += term
        out.append(cdf)
        k += 1
        term /= k
    return out


_POISSON_CDF = _poisson_thresholds()


def poisson_weight(seed: int, replicate: Column, keys: Sequence[Column]) -> Column:
    """A Poisson(1) count per row, a pure function of (seed, replicate, keys): inverse CDF of a
    uniform taken from the 53 low bits of xxhash64 (no random state, so any partitioning and
    any re-run give the same weights)."""
    bits = F.xxhash64(F.lit(seed), replicate, *keys).bitwiseAND(F.lit((1 << 53) - 1))
    uniform = bits.cast("double") / float(1 << 53)
    return sum((F.when(uniform >= c, 1).otherwise(0) for c in _POISSON_CDF), F.lit(0))


def _exact_sum(column: Column) -> Column:
    """Sum as DECIMAL(38, 18) then double: identical whatever the partitioning."""
    return F.sum(column.cast(WEIGHT_TYPE)).cast(COUNT_TYPE).cast("double")


# --------------------------------------------------------------------------- transforms


def filter_as_of(journeys_df: DataFrame, as_of: date) -> DataFrame:
    return journeys_df.where(F.col("as_of") == F.lit(as_of))


def latest_segments(segments_df: DataFrame, as_of: date) -> DataFrame:
    """customer_key, segment: each customer's segment in the snapshots not after ``as_of``.

    The label is segment_name (the id when the name is missing). One row per customer even if
    the snapshot held two (the smallest label wins): a duplicate must not count a journey twice.
    """
    eligible = segments_df.where(F.col("as_of") <= F.lit(as_of))
    latest = eligible.agg(F.max("as_of").alias("latest"))
    label = F.coalesce(F.col("segment_name"), F.col("segment_id").cast("string"))
    return (
        eligible.join(latest, F.col("as_of") == F.col("latest"), how="inner")
        .where(F.col("customer_key").isNotNull() & label.isNotNull())
        .groupBy("customer_key")
        .agg(F.min(label).alias("segment"))
    )


def with_segments(journeys_df: DataFrame, segments_df: DataFrame | None = None) -> DataFrame:
    """The journeys once with segment 'all' and, given segments, once more under their segment."""
    overall = journeys_df.withColumn("segment", F.lit(OVERALL))
    if segments_df is None:
        return overall
    segmented = journeys_df.join(segments_df, on="customer_key", how="inner")
    return overall.unionByName(segmented.select(*journeys_df.columns, "segment"))


def with_bootstrap_replicates(journeys_df: DataFrame, replicates: int, seed: int) -> DataFrame:
    """Each journey once per replicate 1..B with its Poisson(1) ``weight``; weight-0 rows dropped."""
    if replicates < 1:
        raise ValueError(f"bootstrap replicates must be at least 1, got {replicates}")
    replicated = journeys_df.withColumn(
        "replicate", F.explode(F.sequence(F.lit(1), F.lit(replicates)))
    )
    weight = poisson_weight(seed, F.col("replicate"), [F.col("journey_id"), F.col("customer_key")])
    return replicated.withColumn("weight", weight).where(F.col("weight") > 0)


def journey_paths(
    journeys_df: DataFrame, by: Sequence[str] = (), weight: str | None = None
) -> DataFrame:
    """Journeys aggregated to paths: by..., channels, total_conversions, total_conversion_value,
    total_null (the path table spark_paths counts). Journeys without a channel array are left
    out; ``weight`` multiplies each journey (bootstrap)."""
    w = F.col(weight).cast("double") if weight else F.lit(1.0)
    converted = F.coalesce(F.col("converted"), F.lit(False))
    value = F.coalesce(F.col("conversion_value").cast("double"), F.lit(0.0))
    return (
        journeys_df.where(F.col("channels").isNotNull())
        .groupBy(*by, "channels")
        .agg(
            _exact_sum(F.when(converted, w).otherwise(0.0)).alias("total_conversions"),
            _exact_sum(F.when(converted, value * w).otherwise(0.0)).alias("total_conversion_value"),
            _exact_sum(F.when(converted, 0.0).otherwise(w)).alias("total_null"),
        )
    )


def order_choice_sums_df(
    paths_df: DataFrame, orders: Sequence[int] = ORDERS, folds: int = ORDER_CHOICE_FOLDS
) -> DataFrame:
    """Per (order, fold, last_state): conversions and nulls, for markov.choose_order_from_sums.

    The fold is markov.path_fold (CRC-32 of the collapsed channels joined by U+001F, mod folds);
    Spark's crc32 of the UTF-8 string is zlib's.
    """
    for order in orders:
        check_order(order)
    present = paths_df.select(
        F.filter(F.col("channels"), lambda x: x.isNotNull()).alias("present"),
        "total_conversions",
        "total_null",
    )
    collapsed = present.select(
        collapsed_channels(F.col("present")).alias("collapsed"),
        F.coalesce(F.col("total_conversions"), F.lit(0.0)).alias("conversions"),
        F.coalesce(F.col("total_null"), F.lit(0.0)).alias("nulls"),
    ).where((F.size("collapsed") > 0) & (F.col("conversions") + F.col("nulls") > 0))
    c = F.col("collapsed")
    last_states = F.array(
        *(
            F.struct(
                F.lit(k).alias("order"),
                F.when(F.size(c) <= k, c).otherwise(F.slice(c, -k, k)).alias("last_state"),
            )
            for k in sorted(set(orders))
        )
    )
    return (
        collapsed.select(
            F.pmod(F.crc32(F.array_join(c, "\x1f")), F.lit(folds)).alias("fold"),
            F.explode(last_states).alias("s"),
            "conversions",
            "nulls",
        )
        .groupBy("s.order", "s.last_state", "fold")
        .agg(
            _exact_sum(F.col("conversions")).alias("conversions"),
            _exact_sum(F.col("nulls")).alias("nulls"),
        )
    )


# --------------------------------------------------------------------------- driver side


def choose_order_spark(
    paths_df: DataFrame, orders: Sequence[int] = ORDERS, folds: int = ORDER_CHOICE_FOLDS
) -> OrderChoice:
    """markov.choose_order on a Spark path table; only the grouped sums reach the driver."""
    rows = order_choice_sums_df(paths_df, orders, folds).collect()
    sums = pd.DataFrame(
        [
            (r["order"], r["fold"], tuple(r["last_state"]), r["conversions"], r["nulls"])
            for r in rows
        ],
        columns=["order", "fold", "last_state", "conversions", "nulls"],
    )
    # A stable row order so the float sums of the scores do not depend on the shuffle.
    sums = sums.sort_values(["order", "fold", "last_state"], kind="mergesort")
    return choose_order_from_sums(sums, orders, folds=folds)


def markov_by_group(
    paths_df: DataFrame, order: int, by: Sequence[str]
) -> dict[tuple, AttributionResult]:
    """Markov attribution of every group of a path table (one Spark job for all groups)."""
    return {
        key: attribute(counts)
        for key, counts in count_transitions_spark_by(paths_df, order, by).items()
    }


def markov_rows(results: dict[tuple, AttributionResult]) -> pd.DataFrame:
    """segment, model, order, channel, removal_effect, attributed_* of per-segment results."""
    frames = []
    for (segment,), result in results.items():
        table = result.channels
        frames.append(
            pd.DataFrame(
                {
                    "model": MARKOV,
                    "order": result.order,
                    "segment": segment,
                    "channel": table["channel"],
                    "removal_effect": table["removal_effect"],
                    "attributed_conversions": table["total_conversions"],
                    "attributed_value": table["total_conversion_value"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else _empty_rows()


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "model",
            "order",
            "segment",
            "channel",
            "removal_effect",
            "attributed_conversions",
            "attributed_value",
        ]
    )


def percentile_intervals(
    point: pd.DataFrame, replicates: pd.DataFrame, n_replicates: int, level: float
) -> pd.DataFrame:
    """``point`` with ci_low / ci_high: percentile interval of attributed_conversions.

    ``replicates`` has model, segment, replicate, channel, attributed_conversions; a channel
    absent from a replicate (none of its journeys drawn) counts 0 there.
    """
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    keys = ["model", "segment", "channel"]
    grid = (
        point[keys]
        .drop_duplicates()
        .merge(pd.DataFrame({"replicate": range(1, n_replicates + 1)}), how="cross")
    )
    values = grid.merge(
        replicates[[*keys, "replicate", "attributed_conversions"]],
        on=[*keys, "replicate"],
        how="left",
    ).fillna({"attributed_conversions": 0.0})
    tail = (1 - level) / 2
    bounds = (
        values.groupby(keys)["attributed_conversions"]
        .quantile([tail, 1 - tail])
        .unstack()
        .set_axis(["ci_low", "ci_high"], axis=1)
        .reset_index()
    )
    return point.merge(bounds, on=keys, how="left")


def bootstrap_replicates(
    segmented_df: DataFrame,
    order: int,
    replicates: int,
    seed: int,
    heuristic_options: dict,
) -> pd.DataFrame:
    """attributed_conversions of every model, segment, replicate and channel."""
    boot = with_bootstrap_replicates(segmented_df, replicates, seed)
    by = ["segment", "replicate"]
    frames = []
    for (segment, replicate), result in markov_by_group(
        journey_paths(boot, by, weight="weight"), order, by
    ).items():
        frames.append(
            pd.DataFrame(
                {
                    "model": MARKOV,
                    "segment": segment,
                    "replicate": replicate,
                    "channel": result.channels["channel"],
                    "attributed_conversions": result.channels["total_conversions"],
                }
            )
        )
    heuristic = [
        (r["model"], r["segment"], r["replicate"], r["channel"], r["attributed_conversions"])
        for r in heuristic_attribution(boot, weight="weight", by=by, **heuristic_options).collect()
    ]
    frames.append(
        pd.DataFrame(
            heuristic,
            columns=["model", "segment", "replicate", "channel", "attributed_conversions"],
        )
    )
    return pd.concat(frames, ignore_index=True)


def attribution_table(
    markov: pd.DataFrame, heuristics: pd.DataFrame, run_id: str, as_of: date
) -> pd.DataFrame:
    """Every output row in contract column order, sorted by segment, model, channel."""
    heuristics = heuristics.assign(order=None, removal_effect=np.nan)
    table = pd.concat([markov, heuristics], ignore_index=True)
    for column in ("ci_low", "ci_high"):
        if column not in table.columns:
            table[column] = np.nan
    table = table.assign(run_id=run_id, as_of=as_of)
    model_rank = {MARKOV: 0, **{m: i + 1 for i, m in enumerate(MODELS)}}
    table = table.assign(
        _seg=(table["segment"] != OVERALL).astype(int), _model=table["model"].map(model_rank)
    ).sort_values(["_seg", "segment", "_model", "channel"], kind="mergesort")
    return table.loc[:, list(OUTPUT_COLUMNS)].reset_index(drop=True)


def _cell(column: str, value: object) -> object:
    """A plain Python value for createDataFrame: NaN/None -> NULL (pandas marks a missing
    interval or removal effect with NaN, the table with NULL), numpy scalars unwrapped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if column == "order":
        return int(value)  # pandas holds the order column as object/float next to NULLs
    return value.item() if isinstance(value, np.generic) else value


def _records(table: pd.DataFrame) -> list[tuple]:
    return [
        tuple(_cell(c, v) for c, v in zip(OUTPUT_COLUMNS, row, strict=True))
        for row in table.itertuples(index=False, name=None)
    ]


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class AttributionRun:
    """What run_attribute computed (also returned for notebooks and tests)."""

    as_of: date
    order: int
    order_reason: str
    table: pd.DataFrame
    input_versions: dict[str, int | None]
    mlflow_run_id: str
    output_version: int | None


def resolve_as_of(journeys_df: DataFrame, as_of: date | None) -> date:
    """The snapshot date to attribute: the given one (it must be in the table) or the latest."""
    return choose_snapshot(
        journeys_df, as_of, INPUT_TABLE, f"{INPUT_TABLE} has no journeys: run the gold stage first"
    )


def run_attribute(
    spark: SparkSession,
    config: Config,
    run_id: str,
    as_of: date | str | None = None,
    order: int | None = None,
    bootstrap: int = 0,
    seed: int = 42,
    *,
    ci_level: float = DEFAULT_CI_LEVEL,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    half_life_touches: float = DEFAULT_HALF_LIFE_TOUCHES,
    position_weights: Sequence[float] = DEFAULT_POSITION_WEIGHTS,
    log_to_mlflow: bool = True,
    input_versions: Mapping[str, int | None] | None = None,
) -> list[str]:
    """Attribute gold.journeys, write gold.channel_attribution, log an MLflow run.

    Returns summary lines for the pipeline. Raises TableNotFoundError when gold.journeys does
    not exist, InputDataError when it has no snapshot for ``as_of``.
    """
    return [
        *describe(
            attribute_journeys(
                spark,
                config,
                run_id,
                as_of,
                order,
                bootstrap,
                seed,
                ci_level=ci_level,
                half_life_days=half_life_days,
                half_life_touches=half_life_touches,
                position_weights=position_weights,
                log_to_mlflow=log_to_mlflow,
                input_versions=input_versions,
            )
        )
    ]


def attribute_journeys(
    spark: SparkSession,
    config: Config,
    run_id: str,
    as_of: date | str | None = None,
    order: int | None = None,
    bootstrap: int = 0,
    seed: int = 42,
    *,
    ci_level: float = DEFAULT_CI_LEVEL,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    half_life_touches: float = DEFAULT_HALF_LIFE_TOUCHES,
    position_weights: Sequence[float] = DEFAULT_POSITION_WEIGHTS,
    log_to_mlflow: bool = True,
    input_versions: Mapping[str, int | None] | None = None,
    output_config: Config | None = None,
) -> AttributionRun:
    """run_attribute's work, returning the full result instead of summary lines.

    ``input_versions`` reads gold.journeys / gold.customer_segments at those versions (None for
    a table: read as absent); ``output_config`` writes under another data root (a scratch copy).
    """
    started = time.monotonic()
    if order is not None:
        check_order(order)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int, got {bootstrap!r}")
    requested_as_of = as_date(as_of)
    if log_to_mlflow:
        # Before anything is read or written: an unreachable store must leave the table as it was.
        check_mlflow_store(config, EXPERIMENT, "gold.channel_attribution was left as it was")
    catalog = Catalog(config)

    # Pin the versions read, so the MLflow run names exactly the data behind the numbers.
    versions = delta_versions(spark, catalog, [INPUT_TABLE, SEGMENTS_TABLE])
    versions.update({k: v for k, v in (input_versions or {}).items() if k in versions})
    journeys_all = catalog.read(spark, INPUT_TABLE, version=versions[INPUT_TABLE])
    run_as_of = resolve_as_of(journeys_all, requested_as_of)
    journeys_df = filter_as_of(journeys_all, run_as_of)
    segments_df = None
    if versions[SEGMENTS_TABLE] is not None:
        segments_df = latest_segments(
            catalog.read(spark, SEGMENTS_TABLE, version=versions[SEGMENTS_TABLE]), run_as_of
        )
    segmented_df = with_segments(journeys_df, segments_df)
    heuristic_options = {
        "half_life_days": half_life_days,
        "half_life_touches": half_life_touches,
        "position_weights": tuple(position_weights),
    }

    # Paths are reused by the order choice and the Markov counting: aggregate them once.
    paths_df = journey_paths(segmented_df, by=["segment"]).cache()
    try:
        if order is None:
            choice = choose_order_spark(paths_df.where(F.col("segment") == OVERALL))
            chosen, reason = choice.order, choice.reason
            order_scores = choice.scores
        else:
            chosen, reason, order_scores = order, f"order {order} given", None
        markov = markov_rows(markov_by_group(paths_df, chosen, ["segment"]))
    finally:
        paths_df.unpersist()
    heuristics = (
        heuristic_attribution(segmented_df, by=["segment"], **heuristic_options)
        .toPandas()
        .loc[:, ["segment", "model", "channel", "attributed_conversions", "attributed_value"]]
    )
    table = attribution_table(markov, heuristics, run_id, run_as_of)
    if bootstrap > 0:
        replicates = bootstrap_replicates(segmented_df, chosen, bootstrap, seed, heuristic_options)
        table = percentile_intervals(
            table.drop(columns=["ci_low", "ci_high"]), replicates, bootstrap, ci_level
        ).loc[:, list(OUTPUT_COLUMNS)]

    output_catalog = Catalog(output_config) if output_config is not None else catalog
    output_version = write_attribution(spark, output_catalog, table, run_as_of)
    mlflow_run_id = ""
    if log_to_mlflow:
        mlflow_run_id = log_attribution_run(
            config,
            run_id=run_id,
            table=table,
            params={
                "order": chosen,
                "order_mode": "auto" if order is None else "fixed",
                "order_reason": reason,
                "as_of": run_as_of.isoformat(),
                "bootstrap": bootstrap,
                "seed": seed,
                "ci_level": ci_level,
                "segments": int(table["segment"].nunique()) - 1,
                "time_decay_basis": time_decay_basis(journeys_df),
                "half_life_days": half_life_days,
                "half_life_touches": half_life_touches,
                "position_weights": "/".join(f"{w:g}" for w in position_weights),
                "output_table_version": output_version,
                **version_params(versions),
            },
            order_scores=order_scores,
            seconds=time.monotonic() - started,
        )
    return AttributionRun(
        as_of=run_as_of,
        order=chosen,
        order_reason=reason,
        table=table,
        input_versions=versions,
        mlflow_run_id=mlflow_run_id,
        output_version=output_version,
    )


def describe(run: AttributionRun) -> list[str]:
    table = run.table
    overall = table[(table["segment"] == OVERALL) & (table["model"] == MARKOV)]
    top = overall.sort_values("attributed_conversions", ascending=False).head(3)
    lines = [
        f"  markov order {run.order}: {run.order_reason}",
        "  top channels (markov, all): "
        + ", ".join(f"{r.channel} {r.attributed_conversions:,.1f}" for r in top.itertuples()),
    ]
    segments = sorted(set(table["segment"]) - {OVERALL})
    if overall.empty or not overall["attributed_conversions"].sum() > 0:
        # Written all the same: the day's earlier figures would otherwise outlive the journeys
        # they came from (an erasure or a consent withdrawal can empty them).
        lines = [f"  warning: {INPUT_TABLE} at as_of {run.as_of} holds no converted journey "
                 f"with a channel touch, so there is nothing to attribute and that day's "
                 f"attribution now credits no channel (if unexpected, check gold.include_channels / "
                 f"exclude_channels and the gold stage's output)"]
    return [
        *lines,
        f"attribute: as_of {run.as_of}, {len(overall)} channels, "
        f"{len(segments)} segment(s), {len(table)} rows -> {OUTPUT_TABLE} "
        f"(version {run.output_version}), {INPUT_TABLE} version "
        f"{run.input_versions[INPUT_TABLE]}, mlflow run {run.mlflow_run_id or '-'}",
    ]


def write_attribution(
    spark: SparkSession, catalog: Catalog, table: pd.DataFrame, as_of: date
) -> int | None:
    """Replace the ``as_of`` rows of gold.channel_attribution (see the module notes)."""
    missing = [c for c in OUTPUT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"attribution table is missing column(s): {', '.join(missing)}")
    df = spark.createDataFrame(_records(table.loc[:, list(OUTPUT_COLUMNS)]), OUTPUT_SCHEMA)
    crash_point("attribute.before_write")
    # A table made before the statistics policy keeps its own (lakehouse.privacy.stats).
    catalog.narrow_statistics(spark, OUTPUT_TABLE, schema=df.schema)
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"as_of = DATE'{as_of.isoformat()}'")
        .options(**catalog.creation_options(df.schema))
        .save(catalog.path(OUTPUT_TABLE))
    )
    crash_point("attribute.after_write")
    return catalog.current_version(spark, OUTPUT_TABLE)


def comparison_chart(table: pd.DataFrame, path: Path, segment: str = OVERALL) -> Path:
    """PNG: attributed conversions per channel, Markov next to each heuristic (one segment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = table[table["segment"] == segment]
    wide = part.pivot_table(
        index="channel", columns="model", values="attributed_conversions", aggfunc="sum"
    ).fillna(0.0)
    models = [m for m in (MARKOV, *MODELS) if m in wide.columns]
    wide = wide.loc[:, models]
    if MARKOV in wide.columns:
        wide = wide.sort_values(MARKOV, ascending=False)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(wide) + 2), 4.5))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(wide))
    for i, model in enumerate(models):
        errors = None
        if model == MARKOV and part["ci_low"].notna().any():
            ci = part[part["model"] == MARKOV].set_index("channel").reindex(wide.index)
            errors = np.vstack(
                [
                    (wide[model] - ci["ci_low"]).clip(lower=0).fillna(0),
                    (ci["ci_high"] - wide[model]).clip(lower=0).fillna(0),
                ]
            )
        ax.bar(x + i * width, wide[model], width, label=model, yerr=errors, capsize=2)
    ax.set_xticks(x + width * (len(models) - 1) / 2, wide.index, rotation=45, ha="right")
    ax.set_ylabel("attributed conversions")
    ax.set_title(f"Channel attribution, segment {segment}: Markov vs heuristics")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_attribution_run(
    config: Config,
    *,
    run_id: str,
    table: pd.DataFrame,
    params: dict,
    order_scores: pd.DataFrame | None,
    seconds: float,
) -> str:
    """One MLflow run in experiment 'channel_attribution'; returns its MLflow run id."""
    import mlflow

    use_experiment(config, EXPERIMENT)
    overall = table[(table["segment"] == OVERALL) & (table["model"] == MARKOV)]
    with mlflow.start_run(run_name=run_id) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tag("lakehouse.run_id", run_id)
        # MLflow params are strings of at most 6000 characters.
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(
            {
                "total_conversions": float(overall["attributed_conversions"].sum()),
                "total_conversion_value": float(overall["attributed_value"].sum()),
                "channels": float(len(overall)),
                "seconds": seconds,
            }
        )
        folder = Path(tmp)
        csv = folder / "channel_attribution.csv"
        table.to_csv(csv, index=False, lineterminator="\n")
        mlflow.log_artifact(str(csv))
        mlflow.log_artifact(str(comparison_chart(table, folder / "attribution_comparison.png")))
        if order_scores is not None:
            scores = folder / "order_scores.csv"
            order_scores.to_csv(scores, index=False, lineterminator="\n")
            mlflow.log_artifact(str(scores))
        return run.info.run_id
