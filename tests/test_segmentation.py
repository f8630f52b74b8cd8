"""run_segment end to end on a copy of the xs lake: gold.customer_segments, the MLflow run
(nested candidates, params, artifacts, model), the registry (aliases, gate tags), how well
the segments recover the generator's planted archetypes (adjusted Rand index), and retraining:
names stay with the same customers when the data changes slightly, every version carries its
gate decision, and a rejected challenger leaves the champion (and the scores) alone.

One lake copy and three training runs for the whole module (the runs dominate its time)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections import Counter
from dataclasses import replace
from datetime import date
from math import comb
from pathlib import Path

import pandas as pd
import pytest
from conftest import XS_AS_OF, copy_lake, crm_customer_key
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from ml.registry import GateDecision
from ml.segment_job import (
    OUTPUT_TABLE,
    SegmentRun,
    describe,
    passed_over,
    segment_customers,
    segment_inputs,
    segment_options,
    train_segmentation,
)
from ml.segmentation import VECTOR, Candidate, KMeansOptions, best_start, choose_k, fit_candidate

# Measured on the xs lake (3 days of behaviour: few orders, so tenure and browsing carry most of
# the signal): ARI 0.15. The floor leaves room for another k being chosen.
ARI_FLOOR = 0.10
MODEL = "customer_segmentation"
TEST_OVERRIDES = {
    "segment.k_min": 4,
    "segment.k_max": 6,
    # "row" is faster than "block" on a few hundred rows (block pays off from ~100k rows).
    "segment.kmeans.solver": "row",
}


def adjusted_rand_index(labels_a: list, labels_b: list) -> float:
    """Hubert & Arabie's ARI from the contingency table (pure Python, independent of sklearn)."""
    n = len(labels_a)
    assert n == len(labels_b) and n > 1
    pairs = sum(comb(c, 2) for c in Counter(zip(labels_a, labels_b, strict=True)).values())
    rows = sum(comb(c, 2) for c in Counter(labels_a).values())
    cols = sum(comb(c, 2) for c in Counter(labels_b).values())
    expected = rows * cols / comb(n, 2)
    best = (rows + cols) / 2
    return 1.0 if best == expected else (pairs - expected) / (best - expected)


def test_adjusted_rand_index_helper():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    # Worked example (sklearn's docs): [0, 0, 1, 2] vs [0, 0, 1, 1] -> 0.5714...
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714)
    assert adjusted_rand_index([0, 1, 0, 1], [0, 0, 1, 1]) == pytest.approx(-0.5)


@pytest.fixture(scope="module")
def segmented(spark, xs_lake, tmp_path_factory):
    config = copy_lake(xs_lake, tmp_path_factory.mktemp("segment") / "data").with_overrides(
        TEST_OVERRIDES
    )
    run = segment_customers(spark, config, "seg-test-1", None)
    # Snapshot of the output now: the retrain tests below change the table afterwards.
    out = Catalog(config).read(spark, OUTPUT_TABLE).toPandas()
    return config, run, out


def _store_uri(config) -> str:
    return f"sqlite:///{Path(config.data_dir) / 'mlflow' / 'mlflow.db'}"


def _client(config):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=_store_uri(config), registry_uri=_store_uri(config))


def test_every_consenting_customer_gets_one_named_segment(spark, segmented):
    config, run, out = segmented
    c360 = Catalog(config).read(spark, "gold.customer_360").toPandas()
    assert str(run.as_of) == XS_AS_OF
    assert list(out.columns) == [
        "customer_key", "segment_id", "segment_name", "model_version", "as_of"
    ]
    # Segments are for outreach: only customers with marketing consent get a row; the model
    # still learned from (and profiles) every customer of the snapshot.
    consenting = c360.loc[c360["marketing_consent"].fillna(False).astype(bool), "customer_key"]
    assert 0 < len(consenting) < len(c360)      # the xs data has both kinds
    assert sorted(out["customer_key"]) == sorted(consenting)
    assert run.scored == len(out) and run.customers == len(c360)
    assert out["customer_key"].is_unique
    assert set(out["model_version"]) == {"1"} and set(map(str, out["as_of"])) == {XS_AS_OF}
    names = segment_options(config).names
    # segment_id r is the r-th configured name; ids are 0..k-1.
    assert set(out["segment_id"]) == set(range(run.chosen_k))
    assert all(names[i] == n for i, n in zip(out["segment_id"], out["segment_name"], strict=True))
    # The logged profile counts every customer; the table holds the consenting part of each.
    counts = out.groupby("segment_name").size().to_dict()
    profile = dict(zip(run.profile["segment_name"], run.profile["customers"], strict=True))
    assert sum(profile.values()) == run.customers
    assert all(0 < n <= profile[name] for name, n in counts.items())
    assert run.chosen_k == max(run.candidates, key=run.candidates.get)
    # Names are ranked by mean monetary value: non-increasing along segment_id.
    monetary = list(run.profile.sort_values("segment_id")["monetary"])
    assert monetary == sorted(monetary, reverse=True)


def test_segments_recover_planted_archetypes(spark, segmented):
    """Measured on every customer of the snapshot, as the model assigns them: the table holds
    only the consenting ones, and consent rates differ between archetypes."""
    import mlflow

    from ml.features import build_features
    from ml.tracking import configure_mlflow

    config, run, _ = segmented
    configure_mlflow(config)
    model = mlflow.spark.load_model(f"models:/{MODEL}/{run.model_version}")
    features = build_features(Catalog(config).read(spark, "gold.customer_360"), run.as_of)
    out = model.transform(features.features_df).select("customer_key", "segment_id").toPandas()
    assert len(out) == run.customers
    with open(Path(config.data_dir) / "raw" / "_ground_truth" / "archetypes.csv") as f:
        truth = {crm_customer_key(r["customer_id"]): r["archetype"] for r in csv.DictReader(f)}
    matched = [
        (truth[key], segment)
        for key, segment in zip(out["customer_key"], out["segment_id"], strict=True)
        if key in truth
    ]
    assert len(matched) == len(out)  # every segmented customer is a generated one
    ari = adjusted_rand_index([a for a, _ in matched], [s for _, s in matched])
    print(f"adjusted Rand index vs planted archetypes (xs lake): {ari:.3f}")
    assert ari >= ARI_FLOOR


def test_mlflow_run_has_candidates_params_artifacts_and_model(segmented):
    config, run, _ = segmented
    client = _client(config)
    parent = client.get_run(run.mlflow_run_id)
    params = parent.data.params
    assert params["as_of"] == XS_AS_OF and params["chosen_k"] == str(run.chosen_k)
    assert params["input_version.gold.customer_360"] == str(run.input_versions["gold.customer_360"])
    assert params["k_min"] == "4" and params["k_max"] == "6" and params["seed"] == "42"
    assert parent.data.metrics["silhouette"] == pytest.approx(run.silhouette)
    assert sum(
        v for k, v in parent.data.metrics.items() if k.startswith("segment_size.")
    ) == run.customers
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run.mlflow_run_id}'",
    )
    assert sorted(int(c.data.params["k"]) for c in children) == [4, 5, 6]
    for child in children:
        k = int(child.data.params["k"])
        assert child.data.metrics["silhouette"] == pytest.approx(run.candidates[k])
        assert child.data.metrics["inertia"] > 0
        sizes = [v for m, v in child.data.metrics.items() if m.startswith("cluster_size.")]
        assert len(sizes) == k and sum(sizes) == run.customers
    files = {a.path for a in client.list_artifacts(run.mlflow_run_id)}
    assert {"segment_profile.csv", "segment_profile.png", "silhouette_vs_k.png"} <= files

    import mlflow

    from ml.tracking import configure_mlflow

    configure_mlflow(config)
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/customer_segmentation/{run.model_version}"
    ))
    mlmodel = (local / "MLmodel").read_text()
    assert "spark" in mlmodel and "signature" in mlmodel
    example = json.loads((local / "input_example.json").read_text())
    # Feature columns only: no customer key (or any other identifier) in the example.
    assert example["columns"] == segment_options(config).features


def test_model_input_example_holds_means_over_customers_not_customers_rows(spark, segmented):
    """The artifact store is outside the lake (an erasure does not reach it), so the model's
    input example is no customer's row: the run's customers in customer_key order, split into
    five consecutive groups of equal size, one row of feature means per group."""
    import mlflow
    import numpy as np

    from ml.tracking import configure_mlflow

    config, run, _ = segmented
    options = segment_options(config)
    configure_mlflow(config)
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/customer_segmentation/{run.model_version}"
    ))
    example = json.loads((local / "input_example.json").read_text())
    _, feature_set, _ = segment_inputs(spark, Catalog(config), options, None, None)
    features = (feature_set.features_df.select("customer_key", *options.features).toPandas()
                .sort_values("customer_key"))
    assert len(features) >= 50 and options.input_example_rows == 5
    groups = np.array_split(features[options.features].to_numpy(), 5)
    assert example["columns"] == options.features
    assert np.array(example["data"]) == pytest.approx(np.array([g.mean(axis=0) for g in groups]))
    held = {tuple(r) for r in features[options.features].itertuples(index=False)}
    assert not any(tuple(r) in held for r in example["data"])


def test_registered_model_as_pyfunc_predicts_the_segment_name(spark, segmented):
    """Scored through MLflow's generic pyfunc interface (as a model reviewer or a serving
    endpoint would), the model gives each customer the segment_name the job wrote for them,
    not K-means' arbitrary cluster index."""
    import mlflow

    from ml.tracking import configure_mlflow

    config, run, out = segmented
    options = segment_options(config)
    _, feature_set, _ = segment_inputs(spark, Catalog(config), options, None, None)
    features = feature_set.features_df.orderBy("customer_key").limit(40).toPandas()
    configure_mlflow(config)
    model = mlflow.pyfunc.load_model(f"models:/customer_segmentation/{run.model_version}")
    predicted = list(model.predict(features[options.features]))
    written = dict(zip(out["customer_key"], out["segment_name"], strict=True))
    expected = [written.get(key) for key in features["customer_key"]]
    assert sum(e is not None for e in expected) >= 10  # customers with consent are written
    assert [p for p, e in zip(predicted, expected, strict=True) if e is not None] == [
        e for e in expected if e is not None
    ]
    assert set(predicted) <= set(options.names)


def test_first_model_is_champion_with_gate_tags(segmented):
    config, run, _ = segmented
    champion = _client(config).get_model_version("customer_segmentation", "1")
    assert run.model_version == "1" and run.decision.promote
    assert champion.tags["gate.decision"] == "promoted"
    assert champion.tags["gate.reason"].startswith("first model")
    assert float(champion.tags["silhouette"]) == pytest.approx(run.silhouette, abs=1e-6)
    assert run.champion_version == "1"


def test_choose_k_prefers_a_k_whose_segments_all_meet_the_minimum_share():
    def candidate(k, silhouette, sizes):
        return Candidate(k=k, model=None, silhouette=silhouette, inertia=0.0, sizes=sizes,
                         iterations=1)

    tiny_best = candidate(5, 0.60, [1, 30, 30, 20, 19])        # smallest share 1%
    balanced = candidate(4, 0.50, [25, 25, 25, 25])
    assert choose_k([tiny_best, balanced]).k == 5              # silhouette alone
    assert choose_k([tiny_best, balanced], min_segment_share=0.02).k == 4
    # No candidate qualifies: all compete again (the gate then rejects and says why).
    assert choose_k([tiny_best], min_segment_share=0.02).k == 5
    # The summary says which k was passed over and why.
    assert passed_over([tiny_best, balanced], 0.02) == {5: 0.01}
    assert passed_over([tiny_best], 0.02) == {}
    run = SegmentRun(
        as_of=date(2026, 1, 3), customers=100, candidates={4: 0.5, 5: 0.6}, chosen_k=4,
        silhouette=0.5, profile=pd.DataFrame(
            {"segment_name": ["a", "b", "c", "d"], "customers": [25] * 4, "share": [0.25] * 4}),
        model_version="1", decision=GateDecision(True, "first model", None), champion_version="1",
        input_versions={"gold.customer_360": 0}, mlflow_run_id="r", output_version=0,
        seconds=1.0, passed_over={5: 0.01},
    )
    assert describe(run)[0] == (
        "  silhouette by k: k=4 0.500, k=5 0.600 (passed over: smallest segment 1.0%, below "
        "segment.gate.min_segment_share)"
    )


def _squared_distance_cost(points: list[tuple[float, float]], centers) -> float:
    """K-means inertia computed here: each point's squared distance to its nearest center."""
    return sum(min((x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centers) for x, y in points)


def test_best_start_keeps_the_lowest_inertia_of_its_seeds(spark):
    import random

    from pyspark.ml.linalg import Vectors

    # Seven blobs of unequal size for k = 4: starts end in different optima.
    rng = random.Random(7)
    centres = [(0, 0), (6, 0), (0, 6), (6, 6), (3, 12), (12, 3), (14, 14)]
    points = [(cx + rng.gauss(0, 1.2), cy + rng.gauss(0, 1.2))
              for i, (cx, cy) in enumerate(centres) for _ in range(20 + 15 * i)]
    df = spark.createDataFrame([(Vectors.dense(p),) for p in points], [VECTOR])
    options = KMeansOptions(seed=3, max_iter=20, tol=1e-4, init_steps=1, solver="row",
                            cache=False, starts=5)
    # Each seed on its own, its inertia recomputed from the centers.
    costs = {}
    for seed in range(3, 8):
        model = fit_candidate(df, 4, replace(options, seed=seed, starts=1),
                              with_silhouette=False).model
        costs[seed] = _squared_distance_cost(points, [tuple(c) for c in model.clusterCenters()])
    # The first seed is not the best one here, so the refits must matter.
    assert costs[3] > min(costs.values()) * (1 + 1e-6), "pick data where seed 3 is not best"

    first = fit_candidate(df, 4, options)
    best = best_start(df, first, options)
    lowest = min(costs.values())
    assert best.inertia == pytest.approx(lowest, rel=1e-9)
    assert costs[best.seed] == pytest.approx(lowest, rel=1e-9)
    assert best.seed == min(s for s, c in costs.items() if c <= lowest * (1 + 1e-9))
    assert 0 < best.silhouette <= 1                          # computed for the winner
    # One start: the first fit is kept as it is.
    single = replace(options, starts=1)
    assert best_start(df, first, single) is first


def test_training_depends_on_feature_values_not_on_keys_or_row_order(spark, xs_lake):
    """The same customers under other keys (as another pseudonymisation key gives them), in
    another order and partitioning, in a session with other shuffle partitions (a cluster's
    200, a laptop's 8), get the same segments: K-means must not follow any of them."""
    options = segment_options(xs_lake.with_overrides(TEST_OVERRIDES))
    options = replace(options, kmeans=replace(options.kmeans, starts=2))
    _, feature_set, _ = segment_inputs(spark, Catalog(xs_lake), options, None, None)
    features_df = feature_set.features_df.cache()
    # Rekeyed by a one-way function of the key, so the new keys sort in an unrelated order;
    # then shuffled into three partitions.
    rekeyed_df = (
        features_df.withColumn("customer_key", F.sha2("customer_key", 256))
        .orderBy(F.rand(11)).repartition(3)
    )
    try:
        plain = train_segmentation(features_df, [4, 5], options)
        shuffle_partitions = spark.conf.get("spark.sql.shuffle.partitions")
        spark.conf.set("spark.sql.shuffle.partitions", "7")
        try:
            rekeyed = train_segmentation(rekeyed_df, [4, 5], options)
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", shuffle_partitions)
        # The same fit: its inertia, summed in another order by the other session, to the
        # last bits of a double.
        assert [c.inertia for c in rekeyed.candidates] == pytest.approx(
            [c.inertia for c in plain.candidates], rel=1e-12)
        assert rekeyed.best.k == plain.best.k and rekeyed.best.seed == plain.best.seed

        def segment_of(model) -> dict[str, int]:
            rows = model.transform(features_df).select("customer_key", "segment_id").collect()
            return {r["customer_key"]: r["segment_id"] for r in rows}

        # Both models score the same customers: same segment for every one, by id (the
        # naming ranks clusters by their profile, so ids compare across fits).
        plain_segments = segment_of(plain.model)
        assert len(plain_segments) == feature_set.rows
        assert segment_of(rekeyed.model) == plain_segments
    finally:
        features_df.unpersist()


def test_a_config_snapshot_older_than_kmeans_partitions_fits_as_its_session_did():
    """reproduce reads a run's saved config: one from before segment.kmeans.partitions fitted
    in the session's shuffle partitions, which that config set."""
    import copy

    from lakehouse.config import Config, load_config

    config = load_config("local")
    values = copy.deepcopy(dict(config.values))
    del values["segment"]["kmeans"]["partitions"]
    values["spark"]["shuffle_partitions"] = 3
    older = Config(config.env, values, config.conf_dir, config.files)
    assert segment_options(older).kmeans.partitions == 3
    values["spark"]["conf"] = {"spark.sql.shuffle.partitions": "5"}  # wins in the session too
    assert segment_options(older).kmeans.partitions == 5
    assert segment_options(config).kmeans.partitions == config.get("segment.kmeans.partitions")


def test_kmeans_starts_below_one_is_a_config_error():
    from lakehouse.errors import ConfigError

    with pytest.raises(ConfigError, match="starts=0"):
        KMeansOptions(starts=0).check()


def test_first_model_is_champion_even_below_the_minimum_share(spark, xs_lake, tmp_path_factory):
    config = copy_lake(xs_lake, tmp_path_factory.mktemp("segment-first-small") / "data")
    config = config.with_overrides({**TEST_OVERRIDES, "segment.k_max": 4,
                                    "segment.gate.min_segment_share": 0.25})
    run = segment_customers(spark, config, "seg-first-small", None)
    assert run.decision.promote and run.champion_version == run.model_version == "1"
    # 4 segments: the smallest holds at most a quarter, less unless all four are equal
    assert "below the minimum 25.00%" in run.decision.reason
    scored = Catalog(config).read(spark, OUTPUT_TABLE).count()
    assert scored == run.scored > 0


# --------------------------------------------------------------------------- retraining


def _assignments(spark, config) -> dict[str, str]:
    rows = Catalog(config).read(spark, OUTPUT_TABLE).select("customer_key", "segment_name")
    return {r["customer_key"]: r["segment_name"] for r in rows.collect()}


def _drop_some_customers(spark, config) -> int:
    """A new version of gold.customer_360 without the customers whose key starts with '0'
    or '1' (about 1 in 8): slightly different data for the retrain."""
    catalog = Catalog(config)
    kept = catalog.read(spark, "gold.customer_360").where(
        ~F.substring("customer_key", 1, 1).isin("0", "1")
    ).toPandas()
    schema = catalog.read(spark, "gold.customer_360").schema
    spark.createDataFrame(kept, schema).write.format("delta").mode("overwrite").save(
        catalog.path("gold.customer_360")
    )
    return len(kept)


@pytest.fixture(scope="module")
def three_runs(spark, segmented):
    base, first, out = segmented
    # The first run's k for the retrains, so names are compared between equal numbers of
    # segments (a different k legitimately regroups customers).
    config = base.with_overrides({"segment.k_min": first.chosen_k, "segment.k_max": first.chosen_k})
    first_assignments = dict(zip(out["customer_key"], out["segment_name"], strict=True))
    kept = _drop_some_customers(spark, config)
    told = io.StringIO()
    with contextlib.redirect_stderr(told):
        second = segment_customers(spark, config, "reg-2", None)
    second_assignments = _assignments(spark, config)
    # A gate no model of k unequal segments can pass: each would need 1 / k of the customers
    # (the most the config allows), rounded down to 4 digits.
    share = math.floor(10_000 / first.chosen_k) / 10_000
    strict = config.with_overrides({"segment.gate.min_segment_share": share})
    third = segment_customers(spark, strict, "reg-3", None)
    return {
        "config": config, "runs": (first, second, third), "kept": kept, "share": share,
        "second_stderr": told.getvalue(),
        "assignments": (first_assignments, second_assignments, _assignments(spark, config)),
    }


def test_retrain_keeps_names_with_customers(three_runs):
    first_map, second_map, _ = three_runs["assignments"]
    first, second, _ = three_runs["runs"]
    assert second.customers == three_runs["kept"] < first.customers
    assert len(second_map) == second.scored < len(first_map)  # dropped customers' rows deleted
    both = set(first_map) & set(second_map)
    assert both == set(second_map)
    same = sum(first_map[k] == second_map[k] for k in both)
    print(f"customers keeping their segment name after the retrain: {same / len(both):.1%}")
    assert same / len(both) >= 0.9


def test_registering_a_second_version_is_quiet(three_runs):
    """MLflow says "Registered model '...' already exists. Creating a new version of this
    model..." on every registration after the first; the job's summary says what was
    registered."""
    assert "already exists" not in three_runs["second_stderr"], three_runs["second_stderr"]
    assert three_runs["runs"][1].model_version == "2"


def test_every_version_has_gate_tags_and_aliases(three_runs):
    client = _client(three_runs["config"])
    first, second, third = three_runs["runs"]
    assert (first.model_version, second.model_version, third.model_version) == ("1", "2", "3")
    v1, v2, v3 = (client.get_model_version(MODEL, v) for v in ("1", "2", "3"))
    assert v1.tags["gate.decision"] == "promoted" and v1.tags["gate.compared_with"] == "none"
    assert v2.tags["gate.decision"] == second.decision.label
    assert v2.tags["gate.compared_with"] == "1" and v2.tags["gate.reason"]
    assert v3.tags["gate.decision"] == "rejected"
    share = three_runs["share"]
    assert f"below the minimum {share:.2%}" in v3.tags["gate.reason"]
    assert v3.tags["gate.min_segment_share"] == f"{share:g}"
    expected_champion = "2" if second.decision.promote else "1"
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(champion.version) == expected_champion and str(challenger.version) == "3"


def test_rejected_challenger_keeps_old_champion_scores(three_runs):
    _, second, third = three_runs["runs"]
    _, second_map, third_map = three_runs["assignments"]
    assert not third.decision.promote
    assert third.champion_version == second.champion_version
    # The old champion scored the same snapshot again: the same assignments.
    assert third_map == second_map


def test_merge_is_keyed_on_customer_and_as_of(spark, three_runs):
    out = Catalog(three_runs["config"]).read(spark, OUTPUT_TABLE)
    assert out.count() == out.select("customer_key", "as_of").distinct().count()
    versions = {r["model_version"] for r in out.select("model_version").distinct().collect()}
    assert versions == {three_runs["runs"][2].champion_version}


def test_logged_model_states_its_requirements(segmented):
    """The model's requirements are stated, not inferred by reloading it in a child process
    (which starts a second JVM): the pinned pyspark and mlflow of this environment."""
    from importlib.metadata import version

    import mlflow

    config, _, _ = segmented
    # Through this store's client, not mlflow.set_registry_uri: a process-wide registry URI
    # would send later tests' model registrations into this test's store.
    source = _client(config).get_model_version(MODEL, "1").source
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/requirements.txt",
                                               tracking_uri=_store_uri(config))
    requirements = Path(path).read_text().split()
    assert f"pyspark=={version('pyspark')}" in requirements
    assert any(r.startswith("mlflow") for r in requirements), requirements


def test_logged_segment_profile_leaves_the_means_of_a_small_segment_empty(tmp_path):
    """A segment of fewer than ten customers has its members' figures as its means: the
    profile logged to MLflow (CSV and heat map) keeps its size and share, not its means."""
    from ml.features import PROFILE_COLUMNS
    from ml.segment_job import _profile_plot, profile_without_small_segments

    profile = pd.DataFrame({
        "segment_id": [0, 1, 2], "segment_name": ["a", "b", "c"],
        "customers": [1, 9, 10], "share": [0.05, 0.45, 0.5],
        **{c: [10.0 + i, 20.0 + i, 30.0 + i] for i, c in enumerate(PROFILE_COLUMNS)},
    })
    logged = profile_without_small_segments(profile)
    assert logged[list(PROFILE_COLUMNS)].iloc[:2].isna().all().all()
    assert list(logged[list(PROFILE_COLUMNS)].iloc[2]) == [30.0 + i for i in range(len(PROFILE_COLUMNS))]
    assert logged[["segment_id", "segment_name", "customers", "share"]].equals(
        profile[["segment_id", "segment_name", "customers", "share"]])
    assert _profile_plot(logged, tmp_path / "p.png").stat().st_size > 0
