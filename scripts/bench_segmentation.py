"""Benchmark: our Spark KMeans against scikit-learn's on the same standardised feature matrix.

    .venv/bin/python scripts/bench_segmentation.py --customers 100000 1000000 [--k 6] [--variants]

Data: N synthetic customers sampled directly from a mixture shaped like the generator's planted
archetypes (lakehouse.generate.population.ARCHETYPES: share, tenure range, sessions per day,
conversion logit, order value, browse depth, posting rate, device ownership) over a 30-day
window, not by running the generator and the pipeline (which takes far longer than the fits at
1M customers). Their customer_360-like columns go through the transforms of ml/features.py
(mirrored here in numpy: log1p of counts and amounts, recency = tenure for never-ordered, has_*
indicators, device medians) and are standardised (mean 0, sd 1). That matrix is written once to
Parquet and both libraries fit it:

* scikit-learn: KMeans(k, init="k-means++", n_init=starts, random_state=seed, max_iter,
  tol=1e-4) on the numpy array (its threads use both cores);
* Spark: ml.segmentation.fit_kmeans (k-means||) from each of the start seeds (seed, seed + 1,
  ...; ml.segmentation.start_seeds), keeping the lowest inertia, on vectors assembled from the
  Parquet file, with the solver / init_steps / caching of each variant; a cached variant's time
  includes materialising the cache.

Both use the same seed policy: ``starts`` starts (segment.kmeans.starts, or ``--starts``), the
best inertia kept, as the segment job does for its chosen k.

Printed per N: inertia of both and the relative difference, wall time of both and the ratio.
``--variants`` also times the solver x init_steps x cache grid (use it at 100k).
Needs the ``bench`` extra (scikit-learn): ``.venv/bin/pip install -c requirements.lock -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lakehouse.generate.population import (  # noqa: E402
    A_BROWSE,
    A_HANDLE,
    A_LOGIT,
    A_POSTS,
    A_SESSIONS,
    A_TENURE,
    A_VALUE,
    ARCHETYPES,
    AT_RISK,
    QUIET_FACTOR,
)

WINDOW_DAYS = 30
RECENCY_CAP_DAYS = 730


def sample_customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """customer_360-like columns of n customers and their archetype index."""
    rng = np.random.default_rng(seed)
    shares = np.array([a.share for a in ARCHETYPES])
    arch = rng.choice(len(ARCHETYPES), size=n, p=shares / shares.sum())
    low, high = A_TENURE[arch, 0], A_TENURE[arch, 1]
    tenure = (low + rng.random(n) * (high - low)).astype(np.int64) + WINDOW_DAYS
    rate = A_SESSIONS[arch] * rng.lognormal(0.0, 0.35, n) / np.exp(0.35**2 / 2)
    # at_risk customers go quiet part-way through the window.
    active_days = np.where(arch == AT_RISK, rng.integers(0, WINDOW_DAYS // 2 + 1, n), WINDOW_DAYS)
    expected = rate * (active_days + QUIET_FACTOR * (WINDOW_DAYS - active_days))
    sessions = rng.poisson(expected)
    conversion = 1.0 / (1.0 + np.exp(-(A_LOGIT[arch] + rng.normal(0.0, 0.3, n))))
    frequency = rng.binomial(sessions, conversion)
    value = A_VALUE[arch] * rng.lognormal(0.0, 0.25, n) / np.exp(0.25**2 / 2)
    monetary = frequency * value * rng.lognormal(0.0, 0.1, n)
    last_active = np.where(arch == AT_RISK, WINDOW_DAYS - active_days, 0)
    recency = np.where(
        frequency > 0, last_active + rng.integers(0, np.maximum(active_days, 1)), np.nan
    )
    page_views = sessions + rng.poisson(A_BROWSE[arch] * np.maximum(sessions, 0))
    has_handle = rng.random(n) < A_HANDLE[arch]
    posts = np.where(has_handle, rng.poisson(A_POSTS[arch] * WINDOW_DAYS), 0)
    likes = rng.poisson(3.0 * posts)
    devices = (rng.random(n) < 0.30).astype(int) * (1 + (rng.random(n) < 0.30))
    error_rate = np.where(devices > 0, rng.beta(1.0, 30.0, n), np.nan)
    battery = np.where(devices > 0, rng.uniform(5.0, 100.0, n), np.nan)
    frame = pd.DataFrame({
        "tenure_days": tenure, "recency_days": recency, "frequency": frequency,
        "monetary": monetary, "sessions": sessions, "page_views": page_views, "posts": posts,
        "social_likes": likes, "devices": devices, "device_error_rate": error_rate,
        "latest_battery": battery,
    })
    return frame, arch


def feature_matrix(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """ml/features.py's f_* columns named in ``features`` (the model's, from config), in that
    order, standardised like StandardScaler (mean 0, sample sd 1)."""
    has_ordered = frame["recency_days"].notna().to_numpy(float)
    recency = np.where(
        has_ordered > 0, frame["recency_days"], np.minimum(frame["tenure_days"], RECENCY_CAP_DAYS)
    )
    aov = np.where(has_ordered > 0, frame["monetary"] / np.maximum(frame["frequency"], 1), 0.0)
    built = {
        "f_recency": np.log1p(recency),
        "f_has_ordered": has_ordered,
        "f_frequency": np.log1p(frame["frequency"]),
        "f_monetary": np.log1p(frame["monetary"]),
        "f_avg_order_value": np.log1p(aov),
        "f_tenure": np.log1p(frame["tenure_days"]),
        "f_sessions": np.log1p(frame["sessions"]),
        "f_page_views": np.log1p(frame["page_views"]),
        "f_posts": np.log1p(frame["posts"]),
        "f_social_likes": np.log1p(frame["social_likes"]),
        "f_devices": np.log1p(frame["devices"]),
        "f_device_error_rate": frame["device_error_rate"].fillna(
            frame["device_error_rate"].median()
        ),
        "f_latest_battery": frame["latest_battery"].fillna(frame["latest_battery"].median()),
        "f_has_device_data": frame["device_error_rate"].notna().to_numpy(float),
    }
    matrix = np.column_stack([np.asarray(built[f], dtype=float) for f in features])
    std = matrix.std(axis=0, ddof=1)
    return (matrix - matrix.mean(axis=0)) / np.where(std > 0, std, 1.0)


def fit_sklearn(
    matrix: np.ndarray, k: int, seed: int, max_iter: int, starts: int
) -> tuple[float, float]:
    from sklearn.cluster import KMeans as SkKMeans

    started = time.perf_counter()
    model = SkKMeans(n_clusters=k, init="k-means++", n_init=starts, random_state=seed,
                     max_iter=max_iter, tol=1e-4, algorithm="lloyd").fit(matrix)
    return float(model.inertia_), time.perf_counter() - started


def fit_spark(spark, parquet: str, k: int, options) -> tuple[float, float, int]:
    from pyspark.ml.feature import VectorAssembler

    from ml.segmentation import VECTOR, fit_kmeans, start_seeds

    started = time.perf_counter()
    raw_df = spark.read.parquet(parquet)
    vectors_df = VectorAssembler(inputCols=raw_df.columns, outputCol=VECTOR).transform(raw_df)
    vectors_df = vectors_df.select(VECTOR)
    if options.cache:
        vectors_df = vectors_df.cache()
        vectors_df.count()
    try:
        fits = [fit_kmeans(vectors_df, k, replace(options, seed=seed))
                for seed in start_seeds(options)]
        model = min(fits, key=lambda m: m.summary.trainingCost)
        cost = float(model.summary.trainingCost)
        iterations = int(model.summary.numIter)
    finally:
        if options.cache:
            vectors_df.unpersist()
    return cost, time.perf_counter() - started, iterations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=len(ARCHETYPES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-iter", type=int, default=None,
                        help="default: segment.kmeans.max_iter")
    parser.add_argument("--starts", type=int, default=None,
                        help="starts per fit, best inertia kept (default: segment.kmeans.starts)")
    parser.add_argument("--variants", action="store_true",
                        help="also time solver x init_steps x cache (slow at 1M)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the figures as JSON here (make bench: data/bench/)")
    args = parser.parse_args(argv)
    results: list[dict] = []

    from lakehouse.config import load_config
    from lakehouse.session import get_spark
    from ml.segment_job import segment_options
    from ml.segmentation import KMeansOptions

    config = load_config("local", overrides={"spark.show_progress": False})
    options = segment_options(config)
    chosen = options.kmeans
    args.max_iter = args.max_iter or chosen.max_iter
    args.starts = args.starts or chosen.starts
    chosen = KMeansOptions(seed=args.seed, max_iter=args.max_iter, tol=chosen.tol,
                           init_steps=chosen.init_steps, solver=chosen.solver,
                           cache=chosen.cache, starts=args.starts)
    default = KMeansOptions(seed=args.seed, max_iter=args.max_iter, tol=chosen.tol,
                            init_steps=2, solver="auto", cache=False, starts=args.starts)
    spark = get_spark(config, app_name="bench-segmentation")
    print(f"k={args.k} seed={args.seed} starts={args.starts} max_iter={args.max_iter}; "
          f"config KMeans: "
          f"solver={chosen.solver} init_steps={chosen.init_steps} cache={chosen.cache}")
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the JVM (class loading, first job) so it is not charged to the first variant.
        warm = str(Path(tmp) / "warm.parquet")
        pd.DataFrame(np.random.default_rng(0).normal(size=(500, 3)),
                     columns=["a", "b", "c"]).to_parquet(warm, index=False)
        fit_spark(spark, warm, 3, chosen)
        for n in args.customers:
            frame, _ = sample_customers(n, args.seed)
            matrix = feature_matrix(frame, options.features)
            parquet = str(Path(tmp) / f"features_{n}.parquet")
            pd.DataFrame(matrix, columns=[f"f{i}" for i in range(matrix.shape[1])]).to_parquet(
                parquet, index=False
            )
            sk_inertia, sk_seconds = fit_sklearn(matrix, args.k, args.seed, args.max_iter,
                                                 args.starts)
            runs = [("config", chosen), ("spark default", default)]
            if args.variants:
                runs += [
                    (f"solver={s} init_steps={i} cache={c}",
                     KMeansOptions(seed=args.seed, max_iter=args.max_iter, tol=chosen.tol,
                                   init_steps=i, solver=s, cache=c, starts=args.starts))
                    for s, i, c in itertools.product(("row", "block"), (1, 2), (False, True))
                ]
            print(f"\nN={n:,} customers x {matrix.shape[1]} features")
            print(f"  scikit-learn : inertia {sk_inertia:,.1f}  time {sk_seconds:7.2f}s")
            # Not `options`: that is the segment options the next N's features come from.
            for label, kmeans_options in runs:
                inertia, seconds, iterations = fit_spark(spark, parquet, args.k, kmeans_options)
                if label == "config":
                    results.append({
                        "customers": n, "k": args.k, "starts": args.starts,
                        "sklearn_inertia": sk_inertia,
                        "spark_inertia": inertia,
                        "inertia_rel_diff": (inertia - sk_inertia) / sk_inertia,
                        "sklearn_seconds": sk_seconds, "spark_seconds": seconds,
                        "time_ratio": seconds / sk_seconds, "iterations": iterations,
                    })
                print(
                    f"  spark {label:<34}: inertia {inertia:,.1f} "
                    f"({(inertia - sk_inertia) / sk_inertia:+.3%} vs sklearn)  time "
                    f"{seconds:7.2f}s  ratio {seconds / sk_seconds:5.1f}x  iterations {iterations}"
                )
    spark.stop()
    if args.out:
        import json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"benchmark": "segmentation", "results": results},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
