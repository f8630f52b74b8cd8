"""K-means segmentation: a Spark ML pipeline (assembler, scaler, KMeans, naming) over the
features of ml/features.py, k chosen by silhouette, clusters named from their centroids.

Decisions:

* **One scaling for every k.** The assembler and the StandardScaler (mean 0, sd 1; a constant
  feature scales to 0) are fitted once; the scaled vectors are cached and each candidate k fits
  only KMeans on them. The chosen model is then the PipelineModel
  ``[assembler, scaler, kmeans, naming]``, so scoring applies exactly the training scaling.
* **Speed without changing the answer.** ``solver`` ("block": GEMM-based distances, "row":
  one point at a time, "auto": Spark's choice), ``init_steps`` of k-means|| and caching the
  scaled vectors are config (``segment.kmeans``); scripts/bench_segmentation.py measures them.
* **k by silhouette** (ClusteringEvaluator, squared Euclidean) over ``k_min..k_max``; a tie goes
  to the smaller k. Candidates with k >= the number of customers are skipped.
* **Several starts for every k.** Which local optimum K-means ends in depends on its start:
  on one 1M-customer matrix, eight k-means|| seeds ended between the best inertia and +10.4%
  (scikit-learn's k-means++ seeds spread as widely), so one start is a lottery. Each k is
  fitted from ``seed .. seed + starts - 1`` and the start with the lowest inertia is kept
  (among starts whose smallest cluster meets the minimum share, if any does; a tie keeps the
  earlier seed); only that start's silhouette is computed, and k is chosen among these best
  starts. Refitting only the chosen k (the earlier design, ``starts - 1`` fits instead of
  ``(starts - 1) * len(ks)``) let the k choice itself follow the luck of one start: on the xs
  lake, k 5's first start from seed 42 ended at silhouette 0.816 where its best start reaches
  0.884, so k 4 was chosen and the planted archetypes were recovered at ARI 0.05 instead of
  0.15; with every k's best start, seeds 1-5 and 42 all chose k 5 or 6 at ARI 0.15.
* **Stable names.** Cluster indices of K-means are arbitrary and change between retrains.
  Clusters are ranked by their mean monetary value (EUR, descending, to the cent), then mean
  recency (days, ascending), then mean sessions (descending); rank r becomes ``segment_id`` r
  and ``segment_name`` = ``names[r]`` from config. Retraining on similar data reproduces the
  same ranking, so "champions" stays the biggest spenders. The mapping is a SQLTransformer
  stage inside the model, so the registered model itself outputs segment_id / segment_name,
  and as an MLflow pyfunc it predicts the segment_name.
* **The fit sees rows in an order set by their values alone.** k-means|| samples its start
  per partition, in row order, so the same customers arriving in another order (another
  pseudonymisation key orders them differently, another upstream plan partitions them
  differently) could end in another local optimum: on a few hundred customers, another key
  changed the chosen k. ``in_value_order`` hash-partitions the rows by their feature values
  into ``segment.kmeans.partitions`` partitions (config, not the session's shuffle
  partitions: 8 on a laptop and 200 on a cluster changed the chosen k and 110 of 300
  customers' segments) and sorts each by those values, so the fit depends on the feature
  values and the run's config only. Identical rows may still swap, which K-means cannot see.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.errors import ConfigError

RAW_VECTOR = "features_raw"
VECTOR = "features"
PREDICTION = "prediction"
# The registered model's raw K-means output column (its `prediction` is the segment name).
CLUSTER = "kmeans_cluster"
SOLVERS = ("auto", "row", "block")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,62}$")
# Profile columns the ranking uses (raw units from ml/features.py).
RANK_MONETARY, RANK_RECENCY, RANK_SESSIONS = "monetary", "recency_days_filled", "sessions"


@dataclass(frozen=True)
class KMeansOptions:
    seed: int = 42
    max_iter: int = 20
    tol: float = 1e-4
    init_steps: int = 2
    solver: str = "auto"
    cache: bool = True
    starts: int = 1
    partitions: int = 8

    def check(self) -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(
                f"segment.kmeans.solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}"
            )
        if (min(self.init_steps, self.max_iter, self.starts, self.partitions) < 1
                or self.tol < 0):
            raise ConfigError(
                "segment.kmeans: init_steps, max_iter, starts and partitions must be >= 1 and "
                f"tol >= 0, got init_steps={self.init_steps}, max_iter={self.max_iter}, "
                f"starts={self.starts}, partitions={self.partitions}, tol={self.tol}"
            )


@dataclass
class Candidate:
    """One fitted k: its KMeans model and quality figures (sizes by K-means cluster index)."""

    k: int
    model: KMeansModel
    silhouette: float
    inertia: float
    sizes: list[int]
    iterations: int
    seconds: float = 0.0
    seed: int = 0


def check_names(names: Sequence[str], k_max: int) -> list[str]:
    """Segment names from config: at least k_max of them, distinct, plain words."""
    names = [str(n) for n in names]
    bad = [n for n in names if not NAME_PATTERN.match(n)]
    if bad:
        raise ConfigError(
            f"segment.names: {', '.join(map(repr, bad))} must start with a letter and hold only "
            f"letters, digits, spaces, '_' or '-'"
        )
    if len(set(names)) != len(names):
        raise ConfigError("segment.names must be distinct")
    if len(names) < k_max:
        raise ConfigError(
            f"segment.names has {len(names)} names but segment.k_max is {k_max}: give at least "
            f"k_max names (best segment first)"
        )
    return names


def in_value_order(
    features_df: DataFrame, feature_columns: Sequence[str], partitions: int
) -> DataFrame:
    """``features_df`` in ``partitions`` partitions chosen by a hash of the feature values and
    sorted by them: the same set of rows gives the same partitions, in the same order, however
    it arrived. An explicit partition count keeps adaptive execution from coalescing by bytes
    (compressed sizes depend on the arrival order)."""
    columns = list(feature_columns)
    return features_df.repartition(partitions, *columns).sortWithinPartitions(*columns)


def fit_scaling(features_df: DataFrame, feature_columns: Sequence[str]) -> PipelineModel:
    """Assembler + StandardScaler fitted on the features (the model's first two stages)."""
    assembler = VectorAssembler(
        inputCols=list(feature_columns), outputCol=RAW_VECTOR, handleInvalid="error"
    )
    scaler = StandardScaler(inputCol=RAW_VECTOR, outputCol=VECTOR, withMean=True, withStd=True)
    return Pipeline(stages=[assembler, scaler]).fit(features_df)


def kmeans_estimator(k: int, options: KMeansOptions) -> KMeans:
    return KMeans(
        k=k,
        seed=options.seed,
        maxIter=options.max_iter,
        tol=options.tol,
        initMode="k-means||",
        initSteps=options.init_steps,
        solver=options.solver,
        featuresCol=VECTOR,
        predictionCol=PREDICTION,
    )


def fit_kmeans(scaled_df: DataFrame, k: int, options: KMeansOptions) -> KMeansModel:
    """One K-means fit from ``options.seed`` (``options.starts`` is applied by best_start)."""
    return kmeans_estimator(k, options).fit(scaled_df)


def silhouette(predictions_df: DataFrame) -> float:
    evaluator = ClusteringEvaluator(
        featuresCol=VECTOR, predictionCol=PREDICTION, metricName="silhouette",
        distanceMeasure="squaredEuclidean",
    )
    return float(evaluator.evaluate(predictions_df))


def fit_candidate(
    scaled_df: DataFrame, k: int, options: KMeansOptions, *, with_silhouette: bool = True
) -> Candidate:
    """Fit KMeans for one k on the (cached) scaled vectors; silhouette, inertia, sizes.

    ``with_silhouette=False`` leaves silhouette NaN: it is a pass over every customer, not
    needed to compare the inertia of starts."""
    started = time.monotonic()
    model = fit_kmeans(scaled_df, k, options)
    summary = model.summary
    return Candidate(
        k=k,
        model=model,
        silhouette=silhouette(model.transform(scaled_df)) if with_silhouette else math.nan,
        inertia=float(summary.trainingCost),
        sizes=[int(s) for s in summary.clusterSizes],
        iterations=int(summary.numIter),
        seconds=time.monotonic() - started,
        seed=options.seed,
    )


def start_seeds(options: KMeansOptions) -> list[int]:
    """The seeds of the starts: ``seed``, ``seed + 1``, ... (``starts`` of them)."""
    return [options.seed + i for i in range(options.starts)]


def best_start(
    scaled_df: DataFrame,
    first: Candidate,
    options: KMeansOptions,
    min_segment_share: float = 0.0,
) -> Candidate:
    """``first`` (fitted from ``options.seed``) or a refit of its k from the other start seeds,
    whichever has the lowest inertia among the starts whose smallest cluster holds at least
    ``min_segment_share`` (all starts compete when none does); ties keep the earlier seed."""
    starts = [first] + [
        fit_candidate(scaled_df, first.k, replace(options, seed=seed), with_silhouette=False)
        for seed in start_seeds(options)[1:]
    ]
    best = min(meeting_share(starts, min_segment_share), key=lambda c: c.inertia)
    if math.isnan(best.silhouette):
        best = replace(best, silhouette=silhouette(best.model.transform(scaled_df)))
    return best


def fit_best_start(
    scaled_df: DataFrame, k: int, options: KMeansOptions, min_segment_share: float = 0.0
) -> Candidate:
    """The best of ``options.starts`` fits of one k (see best_start), with its silhouette."""
    first = fit_candidate(scaled_df, k, options, with_silhouette=options.starts == 1)
    return best_start(scaled_df, first, options, min_segment_share)


def smallest_share(candidate: Candidate) -> float:
    total = sum(candidate.sizes)
    return min(candidate.sizes) / total if total else 0.0


def meeting_share(candidates: Sequence[Candidate], min_segment_share: float) -> list[Candidate]:
    """The candidates whose smallest cluster holds at least ``min_segment_share`` of the
    customers; all of them when none does (the gate then says why the winner is rejected)."""
    return [c for c in candidates if smallest_share(c) >= min_segment_share] or list(candidates)


def choose_k(candidates: Sequence[Candidate], min_segment_share: float = 0.0) -> Candidate:
    """Highest silhouette among the candidates whose smallest cluster holds at least
    ``min_segment_share`` of the customers; ties (to 1e-9) go to the smaller k.

    Why the share first: the registry gate rejects a model with a near-empty segment, so picking
    such a k by silhouette alone would train a model that can never be promoted while an
    acceptable k was at hand. When no candidate meets the share, all compete (and the gate says
    why the winner is rejected).
    """
    if not candidates:
        raise ValueError("no candidate models to choose from")
    return max(meeting_share(candidates, min_segment_share),
               key=lambda c: (round(c.silhouette, 9), -c.k))


def cluster_profile(
    features_df: DataFrame, predictions_df: DataFrame, profile_columns: Sequence[str]
) -> pd.DataFrame:
    """Per K-means cluster: customers and the mean of every profile column (k rows)."""
    return (
        predictions_df.select("customer_key", PREDICTION)
        .join(features_df.select("customer_key", *profile_columns), "customer_key", how="inner")
        .groupBy(PREDICTION)
        .agg(
            F.count(F.lit(1)).alias("customers"),
            *[F.avg(c).alias(c) for c in profile_columns],
        )
        .toPandas()
        .sort_values(PREDICTION)
        .reset_index(drop=True)
    )


def rank_clusters(profile: pd.DataFrame) -> dict[int, int]:
    """K-means cluster index -> segment_id (rank; see the module notes)."""
    ordered = profile.assign(
        _monetary=-profile[RANK_MONETARY].round(2),
        _recency=profile[RANK_RECENCY].round(2),
        _sessions=-profile[RANK_SESSIONS].round(4),
    ).sort_values(["_monetary", "_recency", "_sessions", PREDICTION], kind="mergesort")
    return {int(cluster): rank for rank, cluster in enumerate(ordered[PREDICTION])}


def naming_stage(ranks: dict[int, int], names: Sequence[str]) -> SQLTransformer:
    """SQL stage: kmeans_cluster -> segment_id int, segment_name string and `prediction` (the
    segment_name again: MLflow's pyfunc of a Spark model returns the `prediction` column, so a
    registered model scored as a pyfunc gives the segment, not the raw cluster index). Names
    are checked upstream."""
    ids = " ".join(f"WHEN {c} THEN {r}" for c, r in sorted(ranks.items()))
    labels = " ".join(f"WHEN {c} THEN '{names[r]}'" for c, r in sorted(ranks.items()))
    return SQLTransformer(
        statement=(
            f"SELECT *, CAST(CASE {CLUSTER} {ids} END AS INT) AS segment_id, "
            f"CASE {CLUSTER} {labels} END AS segment_name, "
            f"CASE {CLUSTER} {labels} END AS {PREDICTION} FROM __THIS__"
        )
    )


def segmentation_model(
    scaling: PipelineModel, kmeans: KMeansModel, naming: SQLTransformer
) -> PipelineModel:
    """The model registered: scaling, K-means writing `kmeans_cluster`, naming (see above)."""
    clustering = kmeans.copy().setPredictionCol(CLUSTER)
    return PipelineModel(stages=[*scaling.stages, clustering, naming])


def segment_profile(profile: pd.DataFrame, ranks: dict[int, int], names: Sequence[str]
                    ) -> pd.DataFrame:
    """The cluster profile by segment (segment_id order) with names and shares."""
    total = float(profile["customers"].sum())
    out = profile.assign(
        segment_id=profile[PREDICTION].map(ranks).astype(int),
        segment_name=profile[PREDICTION].map(lambda c: names[ranks[int(c)]]),
        share=profile["customers"] / total if total else 0.0,
    ).rename(columns={PREDICTION: "kmeans_cluster"})
    first = ["segment_id", "segment_name", "customers", "share", "kmeans_cluster"]
    rest = [c for c in out.columns if c not in first]
    return out.loc[:, first + rest].sort_values("segment_id").reset_index(drop=True)
