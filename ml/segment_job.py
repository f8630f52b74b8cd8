"""The segmentation job: gold.customer_360 -> K-means model (MLflow run + registry) ->
gold.customer_segments.

Order of work, and why:

1. **MLflow first.** The tracking store is checked (a server is probed with a short timeout)
   before any data is read: an unreachable store fails in seconds with one line, not after
   training.
2. **Features** of one as_of snapshot (ml/features.py; the latest snapshot when none is given),
   read at a pinned Delta version that the run records.
3. **Training** in one parent MLflow run (named after the pipeline run id): every k of
   ``k_min..k_max`` is a nested run (params, silhouette, inertia, sizes); the parent holds the
   choice, the segment profile (CSV + PNG), the silhouette-vs-k PNG and the model (Spark
   flavor, signature, an input example of means over groups of customers: no customer's row
   or key).
4. **Registry** only after the run logged everything (ml/registry.py): a failure earlier leaves
   no model version behind. The gate decides whether the new version becomes champion.
5. **Scoring** with ``models:/<model>@champion`` (which may be an older version when the gate
   rejected the new one) and a Delta MERGE into gold.customer_segments on
   (customer_key, as_of); rows of that as_of whose customer is no longer in the snapshot are
   deleted, so each as_of holds exactly one assignment per customer of that day. Segments are
   used for outreach, so only customers with marketing consent (gold.customer_360's
   ``marketing_consent``) get a row; the model is trained on every customer of the snapshot
   (the population's structure, see conf/data_usage.yaml) and scores them all in memory.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.asof import as_date
from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.errors import InputDataError, MlflowStoreError, TableNotFoundError
from lakehouse.faults import crash_point
from lakehouse.gold import has_marketing_consent
from ml.features import (
    FEATURE_COLUMNS,
    INPUT_TABLE,
    KEY,
    MIN_CUSTOMERS_PER_LOGGED_MEAN,
    PROFILE_COLUMNS,
    FeatureSet,
    build_features,
    check_input_columns,
    mean_rows_example,
    resolve_as_of,
)
from ml.registry import GateDecision, GatePolicy, register_and_gate
from ml.segmentation import (
    PREDICTION,
    VECTOR,
    Candidate,
    KMeansOptions,
    check_names,
    choose_k,
    cluster_profile,
    fit_best_start,
    fit_scaling,
    in_value_order,
    meeting_share,
    naming_stage,
    rank_clusters,
    segment_profile,
    segmentation_model,
    smallest_share,
)
from ml.tracking import (
    SCORED_TABLE,
    check_mlflow_store,
    delta_versions,
    version_params,
)

# The table whose rows name model versions, which the lost-store check looks for.
OUTPUT_TABLE = SCORED_TABLE
MODEL_ARTIFACT = "model"
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("customer_key", T.StringType()),
        T.StructField("segment_id", T.IntegerType()),
        T.StructField("segment_name", T.StringType()),
        T.StructField("model_version", T.StringType()),
        T.StructField("as_of", T.DateType()),
    ]
)


@dataclass(frozen=True)
class SegmentOptions:
    """The ``segment.*`` config keys, checked."""

    experiment: str
    model_name: str
    k_min: int
    k_max: int
    names: list[str]
    features: list[str]
    recency_cap_days: int
    kmeans: KMeansOptions
    gate: GatePolicy
    input_example_rows: int


def segment_options(config: Config) -> SegmentOptions:
    from lakehouse.errors import ConfigError

    raw = config.get("segment")
    try:
        k_min, k_max = int(raw["k_min"]), int(raw["k_max"])
    except (TypeError, ValueError):
        raise ConfigError(f"segment.k_min / k_max must be whole numbers, got {raw['k_min']!r} / "
                          f"{raw['k_max']!r}") from None
    if not 2 <= k_min <= k_max:
        raise ConfigError(f"segment.k_min / k_max must satisfy 2 <= k_min <= k_max, got "
                          f"{k_min} / {k_max}")
    # A config snapshot saved before segment.kmeans.partitions existed (reproduce of an older
    # run) fitted in as many partitions as its session shuffled into.
    kmeans = KMeansOptions(partitions=raw["kmeans"].get("partitions", int(
        config.get("spark.conf").get("spark.sql.shuffle.partitions")
        or config.get("spark.shuffle_partitions")
    )), **{k: raw["kmeans"][k] for k in
          ("seed", "max_iter", "tol", "init_steps", "solver", "cache", "starts")})
    kmeans.check()
    features = [str(f) for f in raw["features"]]
    unknown = [f for f in features if f not in FEATURE_COLUMNS]
    if unknown or not features or len(set(features)) != len(features):
        raise ConfigError(
            f"segment.features must be distinct names among {', '.join(FEATURE_COLUMNS)}; got "
            f"{', '.join(map(str, features)) or 'none'}"
        )
    try:
        gate = GatePolicy(
            silhouette_tolerance=float(raw["gate"]["silhouette_tolerance"]),
            min_segment_share=float(raw["gate"]["min_segment_share"]),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"segment.gate.silhouette_tolerance and min_segment_share must be "
                          f"numbers, got {raw['gate']!r}") from None
    if not gate.silhouette_tolerance >= 0:  # 2 or more: the silhouette never holds a model back
        raise ConfigError(f"segment.gate.silhouette_tolerance must be at least 0, "
                          f"got {gate.silhouette_tolerance!r}")
    # k_min segments cannot all hold more than 1 / k_min of the customers: no k could pass.
    if not 0 <= gate.min_segment_share <= 1 / k_min:
        raise ConfigError(f"segment.gate.min_segment_share must be between 0 and 1 / k_min "
                          f"({1 / k_min:.3f}), got {gate.min_segment_share!r}")
    return SegmentOptions(
        experiment=str(raw["experiment"]),
        model_name=str(raw["model_name"]),
        k_min=k_min,
        k_max=k_max,
        names=check_names(raw["names"], k_max),
        features=features,
        recency_cap_days=int(raw["recency_cap_days"]),
        kmeans=kmeans,
        gate=gate,
        input_example_rows=max(1, int(raw["input_example_rows"])),
    )


@dataclass(frozen=True)
class SegmentRun:
    """What segment_customers did (returned for notebooks and tests)."""

    as_of: date
    customers: int
    candidates: dict[int, float]        # k -> silhouette
    chosen_k: int
    silhouette: float
    profile: pd.DataFrame
    model_version: str
    decision: GateDecision
    champion_version: str | None        # the version that scored the customers (None: the
                                        # champion alias was missing, nothing scored)
    input_versions: dict[str, int | None]
    mlflow_run_id: str
    output_version: int | None
    seconds: float
    scored: int = 0                     # rows written: the customers with marketing consent
    passed_over: dict[int, float] = field(default_factory=dict)  # k -> its smallest segment's
                                        # share, for the k left out of the choice for it


# --------------------------------------------------------------------------- MLflow edge


def _silhouette_plot(candidates: Sequence[Candidate], chosen_k: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [c.k for c in candidates]
    ax.plot(ks, [c.silhouette for c in candidates], marker="o")
    ax.axvline(chosen_k, color="grey", linestyle="--", label=f"chosen k = {chosen_k}")
    ax.set_xlabel("k")
    ax.set_ylabel("silhouette (squared Euclidean)")
    ax.set_xticks(ks)
    ax.set_title("Silhouette vs number of segments")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def profile_without_small_segments(profile: pd.DataFrame) -> pd.DataFrame:
    """The segment profile as logged to MLflow: the means of a segment of fewer than
    MIN_CUSTOMERS_PER_LOGGED_MEAN customers are left empty (its size and share stay).

    A segment of one customer has that customer's figures as its means, and the artifact store
    is outside the lake, where an erasure does not reach. The gate's minimum share keeps such
    segments out of a promoted model on large data, not on small data or in the first model.
    """
    logged = profile.copy()
    columns = [c for c in PROFILE_COLUMNS if c in logged.columns]
    logged[columns] = logged[columns].astype(float)
    logged.loc[logged["customers"] < MIN_CUSTOMERS_PER_LOGGED_MEAN, columns] = float("nan")
    return logged


def _profile_plot(profile: pd.DataFrame, path: Path) -> Path:
    """Heat map of each segment's mean features, standardised across segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in PROFILE_COLUMNS if c in profile.columns]
    values = profile.loc[:, columns].astype(float)
    spread = values.std(ddof=0).replace(0.0, 1.0)
    z = (values - values.mean()) / spread
    labels = [f"{r.segment_name} ({r.share:.0%})" for r in profile.itertuples()]
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.5 * len(profile) + 2))
    image = ax.imshow(z.to_numpy(), cmap="RdBu_r", aspect="auto", vmin=-2, vmax=2)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(profile)):
        for j, column in enumerate(columns):
            value = values.iloc[i][column]
            text = f"{value:.3g}" if value == value else f"<{MIN_CUSTOMERS_PER_LOGGED_MEAN}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="z across segments")
    ax.set_title("Segment profile (means; colour: relative to other segments)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_candidate(candidate: Candidate) -> None:
    import mlflow

    mlflow.log_params({"k": candidate.k})
    mlflow.log_metrics(
        {
            "silhouette": candidate.silhouette,
            "inertia": candidate.inertia,
            "iterations": float(candidate.iterations),
            "seconds": candidate.seconds,
            **{f"cluster_size.{i}": float(s) for i, s in enumerate(candidate.sizes)},
        }
    )


# --------------------------------------------------------------------------- Delta edge


def write_segments(spark: SparkSession, catalog: Catalog, scored_df: DataFrame, as_of: date
                   ) -> int | None:
    """MERGE one as_of's assignments into gold.customer_segments (see the module notes)."""
    from delta.tables import DeltaTable

    missing = [f.name for f in OUTPUT_SCHEMA.fields if f.name not in scored_df.columns]
    if missing:
        raise ValueError(f"segment assignments lack column(s): {', '.join(missing)}")
    source_df = scored_df.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in OUTPUT_SCHEMA.fields]
    )
    path = catalog.path(OUTPUT_TABLE)
    if not catalog.exists(spark, OUTPUT_TABLE):
        # An empty append, not DeltaTable.createIfNotExists: a run killed while creating the
        # table leaves an empty _delta_log that the builder then refuses forever.
        spark.createDataFrame([], OUTPUT_SCHEMA).write.format("delta").mode("append").options(
            **catalog.creation_options(OUTPUT_SCHEMA)
        ).save(path)
    crash_point("segment.before_scores")
    # A table made before the statistics policy keeps its own (lakehouse.privacy.stats).
    catalog.narrow_statistics(spark, OUTPUT_TABLE, schema=OUTPUT_SCHEMA)
    this_day = f"t.as_of = DATE'{as_of.isoformat()}'"
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source_df.alias("s"), "t.customer_key = s.customer_key AND t.as_of = s.as_of")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete(condition=this_day)
        .execute()
    )
    crash_point("segment.after_scores")
    return catalog.current_version(spark, OUTPUT_TABLE)


# --------------------------------------------------------------------------- the job


def run_segment(
    spark: SparkSession,
    config: Config,
    run_id: str,
    as_of: date | str | None = None,
    *,
    input_versions: Mapping[str, int | None] | None = None,
) -> list[str]:
    """Train, register and gate a segmentation model, score every customer of the as_of
    snapshot with the champion into gold.customer_segments. Returns summary lines."""
    return describe(segment_customers(spark, config, run_id, as_of, input_versions=input_versions))


def segment_inputs(
    spark: SparkSession,
    catalog: Catalog,
    options: SegmentOptions,
    as_of: date | str | None,
    input_versions: Mapping[str, int | None] | None,
) -> tuple[dict[str, int | None], FeatureSet, list[int]]:
    """(input versions read, features of the as_of snapshot, candidate k) of one run."""
    requested_as_of = as_date(as_of)
    versions = delta_versions(spark, catalog, [INPUT_TABLE])
    versions.update({k: v for k, v in (input_versions or {}).items() if k in versions})
    if versions[INPUT_TABLE] is None:
        raise TableNotFoundError(
            f"table {INPUT_TABLE} does not exist yet at {catalog.path(INPUT_TABLE)}: run the "
            f"gold stage first"
        )
    customer_360_df = catalog.read(spark, INPUT_TABLE, version=versions[INPUT_TABLE])
    check_input_columns(customer_360_df)
    check_consent_column(customer_360_df)
    run_as_of = resolve_as_of(customer_360_df, requested_as_of)
    feature_set = build_features(customer_360_df, run_as_of, options.recency_cap_days)
    ks = [k for k in range(options.k_min, options.k_max + 1) if k < feature_set.rows]
    if not ks:
        raise InputDataError(
            f"{INPUT_TABLE} has {feature_set.rows} customer(s) at as_of {run_as_of}, fewer than "
            f"segment.k_min + 1 = {options.k_min + 1} needed to form {options.k_min} segments: "
            f"lower segment.k_min or segment a larger snapshot"
        )
    return versions, feature_set, ks


def segment_customers(
    spark: SparkSession,
    config: Config,
    run_id: str,
    as_of: date | str | None = None,
    *,
    input_versions: Mapping[str, int | None] | None = None,
) -> SegmentRun:
    """run_segment's work, returning the full result instead of summary lines."""
    started = time.monotonic()
    options = segment_options(config)
    catalog = Catalog(config)
    check_mlflow_store(config, options.experiment, "nothing was trained or registered")
    check_champion_files(options.model_name)
    versions, feature_set, ks = segment_inputs(spark, catalog, options, as_of, input_versions)
    run_as_of = feature_set.as_of

    features_df = feature_set.features_df.cache()
    try:
        trained = _train_and_log(spark, config, run_id, feature_set, features_df, ks, options,
                                 versions)
        crash_point("segment.before_register")
        model_version, decision = register_and_gate(
            trained["model_uri"],
            options.model_name,
            silhouette=trained["silhouette"],
            segment_shares=list(trained["profile"]["share"]),
            policy=options.gate,
            tags={"lakehouse.run_id": run_id, "mlflow_run_id": trained["mlflow_run_id"],
                  "as_of": run_as_of.isoformat(), "k": str(trained["chosen_k"])},
        )
        # The gate always promotes a first model, so a champion exists here unless its alias
        # was removed by hand meanwhile: then nothing may score the customers, the segment
        # table stays as it was, and the run goes on (attribution reports overall figures
        # only) and says why.
        champion_version, scored_df = score_with_champion(
            options.model_name, features_df, run_as_of
        )
        consenting_df = consenting_in_snapshot(
            catalog.read(spark, INPUT_TABLE, version=versions[INPUT_TABLE]), run_as_of
        )
        output_version, scored = None, 0
        if scored_df is not None:
            output_version = write_segments(
                spark, catalog, scored_df.join(consenting_df, "customer_key", "left_semi"),
                run_as_of,
            )
            scored = features_df.join(consenting_df, KEY, "left_semi").count()
    finally:
        features_df.unpersist()
    return SegmentRun(
        as_of=run_as_of,
        customers=feature_set.rows,
        candidates=trained["candidates"],
        passed_over=trained["passed_over"],
        chosen_k=trained["chosen_k"],
        silhouette=trained["silhouette"],
        profile=trained["profile"],
        model_version=model_version,
        decision=decision,
        champion_version=champion_version,
        input_versions=versions,
        mlflow_run_id=trained["mlflow_run_id"],
        output_version=output_version,
        seconds=time.monotonic() - started,
        scored=scored,
    )


def check_consent_column(customer_360_df: DataFrame) -> None:
    """Scoring writes only consenting customers: the column must be there before training."""
    if "marketing_consent" not in customer_360_df.columns:
        raise InputDataError(
            f"{INPUT_TABLE} lacks column marketing_consent, needed to keep segments to customers "
            f"who consent to marketing: rebuild it with `lakehouse run gold`"
        )


def consenting_in_snapshot(customer_360_df: DataFrame, as_of: date) -> DataFrame:
    """customer_key of the as_of snapshot's customers who consent to marketing."""
    return customer_360_df.where(
        (F.col("as_of") == F.lit(as_of)) & has_marketing_consent(F.col("marketing_consent"))
    ).select(F.col(KEY).alias("customer_key"))


@dataclass(frozen=True)
class TrainedSegmentation:
    """Every candidate fitted, the chosen one, and the model that names segments."""

    candidates: list[Candidate]
    best: Candidate
    ranks: dict[int, int]          # K-means cluster -> segment_id
    profile: pd.DataFrame          # segment_profile of the chosen k
    model: Any                     # PipelineModel: scaling, K-means, naming


def train_segmentation(
    features_df: DataFrame, ks: Sequence[int], options: SegmentOptions
) -> TrainedSegmentation:
    """Fit the scaler and a K-means per k, choose k, name the clusters. No MLflow, no I/O
    beyond reading ``features_df``: the job logs the result, `lakehouse reproduce` compares it."""
    features_df = in_value_order(features_df, options.features, options.kmeans.partitions)
    scaling = fit_scaling(features_df, options.features)
    scaled_df = scaling.transform(features_df).select(KEY, VECTOR)
    if options.kmeans.cache:
        scaled_df = scaled_df.cache()
    try:
        share = options.gate.min_segment_share
        candidates = [fit_best_start(scaled_df, k, options.kmeans, share) for k in ks]
        best = choose_k(candidates, share)
        profile = cluster_profile(features_df, best.model.transform(scaled_df), PROFILE_COLUMNS)
    finally:
        if options.kmeans.cache:
            scaled_df.unpersist()
    ranks = rank_clusters(profile)
    return TrainedSegmentation(
        candidates=candidates,
        best=best,
        ranks=ranks,
        profile=segment_profile(profile, ranks, options.names),
        model=segmentation_model(scaling, best.model, naming_stage(ranks, options.names)),
    )


def _train_and_log(
    spark: SparkSession,
    config: Config,
    run_id: str,
    feature_set: FeatureSet,
    features_df: DataFrame,
    ks: Sequence[int],
    options: SegmentOptions,
    versions: Mapping[str, int | None],
) -> dict[str, Any]:
    """Fit every candidate inside one parent MLflow run and log it all (nothing registered)."""
    import mlflow
    from mlflow.models import infer_signature

    started = time.monotonic()
    with mlflow.start_run(run_name=run_id) as parent, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tag("lakehouse.run_id", run_id)
        mlflow.log_params(
            {
                "as_of": feature_set.as_of.isoformat(),
                "customers": feature_set.rows,
                "k_min": options.k_min,
                "k_max": options.k_max,
                "k_tried": ",".join(map(str, ks)),
                "features": ",".join(options.features),
                "seed": options.kmeans.seed,
                "starts": options.kmeans.starts,
                "partitions": options.kmeans.partitions,
                "max_iter": options.kmeans.max_iter,
                "tol": options.kmeans.tol,
                "init_mode": "k-means||",
                "init_steps": options.kmeans.init_steps,
                "solver": options.kmeans.solver,
                "cache_scaled": options.kmeans.cache,
                "recency_cap_days": options.recency_cap_days,
                "names": ",".join(options.names),
                "gate.silhouette_tolerance": options.gate.silhouette_tolerance,
                "gate.min_segment_share": options.gate.min_segment_share,
                **{f"median.{c}": v for c, v in feature_set.medians.items()},
                **version_params(dict(versions)),
            }
        )
        mlflow.log_metrics(
            {f"imputed.{c}": float(n) for c, n in feature_set.imputed.items()} or
            {"imputed.total": 0.0}
        )
        trained = train_segmentation(features_df, ks, options)
        candidates, best = trained.candidates, trained.best
        ranks, named, model = trained.ranks, trained.profile, trained.model
        for candidate in candidates:
            with mlflow.start_run(run_name=f"{run_id} k={candidate.k}", nested=True):
                _log_candidate(candidate)
            # One series in the parent, so the UI plots silhouette against k.
            mlflow.log_metric("silhouette_by_k", candidate.silhouette, step=candidate.k)
            mlflow.log_metric("inertia_by_k", candidate.inertia, step=candidate.k)

        mlflow.log_params({"chosen_k": best.k, "chosen_seed": best.seed})
        mlflow.log_metrics(
            {
                "silhouette": best.silhouette,
                "inertia": best.inertia,
                "chosen_k": float(best.k),
                "min_segment_share": float(named["share"].min()),
                "train_seconds": time.monotonic() - started,
                **{f"segment_size.{r.segment_name}": float(r.customers)
                   for r in named.itertuples()},
            }
        )
        mlflow.set_tag("segment_map", json.dumps(
            {str(c): [r, options.names[r]] for c, r in sorted(ranks.items())}
        ))
        folder = Path(tmp)
        csv = folder / "segment_profile.csv"
        logged_profile = profile_without_small_segments(named)
        logged_profile.to_csv(csv, index=False, lineterminator="\n")
        candidates_csv = folder / "silhouette_by_k.csv"
        pd.DataFrame(
            [{"k": c.k, "silhouette": c.silhouette, "inertia": c.inertia,
              "iterations": c.iterations, "seconds": c.seconds,
              "sizes": " ".join(map(str, c.sizes))} for c in candidates]
        ).to_csv(candidates_csv, index=False, lineterminator="\n")
        for artifact in (
            csv,
            candidates_csv,
            _silhouette_plot(candidates, best.k, folder / "silhouette_vs_k.png"),
            _profile_plot(logged_profile, folder / "segment_profile.png"),
        ):
            mlflow.log_artifact(str(artifact))

        # Feature columns only, each row a mean over a group of customers, not a customer's.
        example = mean_rows_example(
            features_df, options.features, options.input_example_rows, feature_set.rows
        )
        output = model.transform(
            spark.createDataFrame(example)
        ).select(PREDICTION).toPandas()
        with warnings.catch_warnings():
            # MLflow hints that integer inputs cannot carry missing values: the features are
            # imputed (ml/features.py), so a scored row never has one.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            signature = infer_signature(example, output)
        info = mlflow.spark.log_model(
            model,
            MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            # Stated rather than inferred: MLflow infers them by loading the model again in a
            # child Python process, which starts a second Spark JVM (15-25 s per run on 2
            # cores) only to find that a Spark ML pipeline needs pyspark.
            pip_requirements=mlflow.spark.get_default_pip_requirements(),
        )
        return {
            "model_uri": info.model_uri,
            "mlflow_run_id": parent.info.run_id,
            "candidates": {c.k: c.silhouette for c in candidates},
            "passed_over": passed_over(candidates, options.gate.min_segment_share),
            "chosen_k": best.k,
            "silhouette": best.silhouette,
            "profile": named,
        }


def passed_over(candidates: Sequence[Candidate], min_segment_share: float) -> dict[int, float]:
    """k -> smallest segment share of the candidates choose_k left out for being below the
    minimum share (none when no candidate meets it: then all of them compete)."""
    meeting = {c.k for c in meeting_share(candidates, min_segment_share)}
    return {c.k: smallest_share(c) for c in candidates if c.k not in meeting}


def check_champion_files(model_name: str) -> None:
    """Raise one MlflowStoreError line when the champion's model files cannot be listed.

    Checked before training: a rejected challenger leaves the old champion to score the
    customers, and finding its files gone only then left a new version registered and a
    traceback."""
    import mlflow
    from mlflow import MlflowClient

    from ml.registry import champion

    client = MlflowClient()
    version = champion(client, model_name)[0]
    if version is None:
        return
    # The URI scoring loads (score_with_champion), so a registry that proxies artifacts is
    # asked the same way.
    uri = f"models:/{model_name}/{version}"
    try:
        files = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=uri)}
        reason = "no MLmodel file"
    except Exception as exc:  # noqa: BLE001 - any artifact store failure becomes one line
        files, reason = set(), (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    if "MLmodel" not in files:
        raise MlflowStoreError(
            f"the champion model {model_name} version {version} cannot be loaded ({reason}): "
            f"restore its files, move the champion alias to a version whose files exist, or "
            f"delete the alias (the next model is then promoted as a first one); nothing was "
            f"trained or registered"
        )


def score_with_champion(
    model_name: str, features_df: DataFrame, as_of: date
) -> tuple[str | None, DataFrame | None]:
    """(champion version, assignments) of every customer in ``features_df``; (None, None) when
    the registered model has no champion alias."""
    import mlflow
    from mlflow import MlflowClient

    from ml.registry import champion

    version = champion(MlflowClient(), model_name)[0]
    if version is None:
        return None, None
    # By version, not by alias: the model scored is the one whose version the rows carry.
    model = mlflow.spark.load_model(f"models:/{model_name}/{version}")
    scored_df = model.transform(features_df).select(
        F.col(KEY).alias("customer_key"),
        F.col("segment_id").cast("int").alias("segment_id"),
        F.col("segment_name"),
        F.lit(version).alias("model_version"),
        F.lit(as_of).alias("as_of"),
    )
    return version, scored_df


def describe(run: SegmentRun) -> list[str]:
    sizes = ", ".join(
        f"{r.segment_name} {r.customers:,} ({r.share:.0%})" for r in run.profile.itertuples()
    )
    tried = ", ".join(
        f"k={k} {s:.3f}" + (f" (passed over: smallest segment {run.passed_over[k]:.1%}, below "
                            f"segment.gate.min_segment_share)" if k in run.passed_over else "")
        for k, s in sorted(run.candidates.items())
    )
    if run.champion_version is None:
        outcome = (
            f"segment: as_of {run.as_of}, {run.customers:,} customers NOT scored: no champion "
            f"model (the champion alias is missing); {OUTPUT_TABLE} left as it was. Set the "
            f"alias on a model version in the MLflow UI or run segment again"
        )
    else:
        outcome = (
            f"segment: as_of {run.as_of}, {run.customers:,} customers scored with champion "
            f"v{run.champion_version}, the {run.scored:,} with marketing consent -> "
            f"{OUTPUT_TABLE} (version {run.output_version}), "
            f"{INPUT_TABLE} version {run.input_versions[INPUT_TABLE]}, mlflow run "
            f"{run.mlflow_run_id}, {run.seconds:.1f}s"
        )
    return [
        f"  silhouette by k: {tried}",
        f"  segments (k={run.chosen_k}): {sizes}",
        f"  model version {run.model_version} {run.decision.label}: {run.decision.reason}",
        outcome,
    ]
