"""run_attribute end to end on tiny Delta tables: output rows, totals, idempotent writes,
segments, bootstrap intervals and a real MLflow store under tmp_path."""

from __future__ import annotations

import math
import time
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.errors import InputDataError, MlflowStoreError, TableNotFoundError
from ml.attribution.job import (
    EXPERIMENT,
    OUTPUT_COLUMNS,
    attribute_journeys,
    choose_order_spark,
    journey_paths,
    poisson_weight,
    run_attribute,
)
from ml.attribution.markov import choose_order

AS_OF = date(2026, 1, 7)
JOURNEY_SCHEMA = (
    "journey_id string, customer_key string, journey_start_ts timestamp, "
    "journey_end_ts timestamp, channels array<string>, touchpoints int, converted boolean, "
    "conversion_value double, order_id string, as_of date"
)
PATHS = [
    (["search", "email", "search"], True, 40.0),
    (["social", "search"], True, 25.0),
    (["social"], False, 0.0),
    (["email", "email"], True, 10.0),
    (["display", "social"], False, 0.0),
    (["search"], True, 30.0),
    (["display"], False, 0.0),
    (["email", "display", "search"], True, 55.0),
    (["social", "email"], False, 0.0),
    (None, True, 12.0),  # an order without touchpoints: no channel to credit
    (["search", None, "social"], False, 0.0),
    ([], False, 0.0),
]


def journey_rows(copies: int = 2) -> list[tuple]:
    ts = datetime(2026, 1, 5, 12, 0)
    rows = []
    for c in range(copies):
        for i, (channels, converted, value) in enumerate(PATHS):
            key = f"cust{(i + c) % 6}"
            jid = f"j{c}-{i}"
            rows.append(
                (
                    jid,
                    key,
                    ts,
                    ts,
                    channels,
                    len(channels or []),
                    converted,
                    value,
                    f"o{c}-{i}" if converted else None,
                    AS_OF,
                )
            )
    rows.append(rows[0])  # a duplicate journey row: counted twice, as written
    return rows


def converted_with_channels(rows: list[tuple]) -> tuple[float, float]:
    kept = [r for r in rows if r[6] and r[4] and any(ch is not None for ch in r[4])]
    return float(len(kept)), math.fsum(r[7] for r in kept)


@pytest.fixture()
def journeys(spark, config):
    rows = journey_rows()
    spark.createDataFrame(rows, JOURNEY_SCHEMA).write.format("delta").save(
        Catalog(config).path("gold.journeys")
    )
    return rows


def read_output(spark, config):
    return Catalog(config).read(spark, "gold.channel_attribution").toPandas()


def test_run_writes_rows_that_add_up_and_logs_mlflow(
    spark, config, journeys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would appear here
    lines = run_attribute(spark, config, "run-1")
    assert lines[-1].startswith("attribute: as_of 2026-01-07")

    out = read_output(spark, config)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert set(out["run_id"]) == {"run-1"} and set(out["as_of"]) == {AS_OF}
    assert set(out["segment"]) == {"all"}
    assert set(out["model"]) == {
        "markov",
        "first_touch",
        "last_touch",
        "linear",
        "time_decay",
        "position_based",
    }
    conversions, value = converted_with_channels(journeys)
    for model, part in out.groupby("model"):  # every model credits every conversion
        assert math.fsum(part["attributed_conversions"]) == pytest.approx(conversions, abs=1e-9), (
            model
        )
        assert math.fsum(part["attributed_value"]) == pytest.approx(value, abs=1e-9)
    markov = out[out["model"] == "markov"]
    assert markov["order"].notna().all() and markov["removal_effect"].between(0, 1).all()
    assert math.fsum(markov["attributed_conversions"]) == conversions  # exact, by share_out
    assert set(markov["channel"]) == {"search", "email", "social", "display"}
    assert out[out["model"] != "markov"]["order"].isna().all()

    import mlflow
    from mlflow.tracking import MlflowClient

    db = Path(config.data_dir) / "mlflow" / "mlflow.db"
    assert db.is_file() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location.startswith(
        (Path(config.data_dir) / "mlflow" / "artifacts").as_uri()
    )
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    params = runs[0].data.params
    assert params["order_mode"] == "auto" and "chosen" in params["order_reason"]
    assert params["input_version.gold.journeys"] == "0"
    assert params["input_version.gold.customer_segments"] == "missing"
    assert params["as_of"] == "2026-01-07" and params["bootstrap"] == "0"
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {
        "channel_attribution.csv",
        "attribution_comparison.png",
        "order_scores.csv",
    } <= artifacts
    png = Path(
        mlflow.artifacts.download_artifacts(
            run_id=runs[0].info.run_id,
            artifact_path="attribution_comparison.png",
            tracking_uri=f"sqlite:///{db}",
            dst_path=str(tmp_path / "dl"),
        )
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A re-run for the same as_of replaces that date's rows: no duplicates, new run id.
    attribute_journeys(spark, config, "run-2", as_of="2026-01-07", order=2, log_to_mlflow=False)
    again = read_output(spark, config)
    assert len(again) == len(out) - len(markov) + len(again[again["model"] == "markov"])
    assert set(again["run_id"]) == {"run-2"}
    assert set(again.loc[again["model"] == "markov", "order"]) == {2}


def test_segments_and_bootstrap_intervals(spark, config, journeys):
    catalog = Catalog(config)
    segments = [(f"cust{i}", i % 2, "loyal" if i % 2 else "new", "v1", AS_OF) for i in range(6)] + [
        ("cust0", 1, "stale", "v0", date(2026, 1, 1))
    ]  # an older snapshot is ignored
    spark.createDataFrame(
        segments,
        "customer_key string, segment_id int, segment_name string, model_version string, "
        "as_of date",
    ).write.format("delta").save(catalog.path("gold.customer_segments"))

    result = attribute_journeys(
        spark, config, "run-b", order=1, bootstrap=6, seed=7, log_to_mlflow=False
    )
    out = result.table
    assert set(out["segment"]) == {"all", "loyal", "new"}
    for segment in ("loyal", "new"):
        part = out[(out["segment"] == segment) & (out["model"] == "markov")]
        keys = {f"cust{i}" for i in range(6) if ("loyal" if i % 2 else "new") == segment}
        expected, _ = converted_with_channels([r for r in journeys if r[1] in keys])
        assert math.fsum(part["attributed_conversions"]) == pytest.approx(expected)
    assert out["ci_low"].notna().all() and out["ci_high"].notna().all()
    assert (out["ci_low"] <= out["ci_high"]).all()
    assert (out["ci_low"] >= 0).all()

    stored = read_output(spark, config)
    assert len(stored) == len(out)


def test_unreachable_mlflow_store_stops_before_any_write(spark, config, journeys):
    unreachable = config.with_overrides({"mlflow.tracking_uri": "http://127.0.0.1:9"})
    started = time.monotonic()
    with pytest.raises(MlflowStoreError) as caught:
        run_attribute(spark, unreachable, "run-down")
    assert time.monotonic() - started < 30  # not MLflow's minutes of retries
    message = str(caught.value)
    assert "\n" not in message
    assert "MLflow tracking server http://127.0.0.1:9 cannot be reached" in message
    assert "gold.channel_attribution was left as it was" in message
    assert not Catalog(config).exists(spark, "gold.channel_attribution")


def test_missing_input_and_unknown_as_of(spark, config):
    with pytest.raises(TableNotFoundError, match="gold.journeys"):
        run_attribute(spark, config, "run-x")
    spark.createDataFrame(journey_rows(1), JOURNEY_SCHEMA).write.format("delta").save(
        Catalog(config).path("gold.journeys")
    )
    with pytest.raises(InputDataError, match="not 2026-02-01"):
        run_attribute(spark, config, "run-x", as_of=date(2026, 2, 1))
    with pytest.raises(ValueError, match="order"):
        run_attribute(spark, config, "run-x", order=7)


def test_spark_order_choice_matches_plain_python(spark):
    rows = journey_rows(3)
    df = spark.createDataFrame(rows, JOURNEY_SCHEMA)
    paths = journey_paths(df)
    plain = choose_order(
        [(r[4] or [], 1.0 if r[6] else 0.0, r[7], 0.0 if r[6] else 1.0) for r in rows]
    )
    got = choose_order_spark(paths.repartition(3))
    assert got.order == plain.order
    assert ("no order beats" in got.reason) == ("no order beats" in plain.reason)
    for column in ("log_loss", "auc", "unseen_share", "test_journeys"):
        assert got.scores[column].tolist() == pytest.approx(plain.scores[column].tolist())


def test_poisson_weights_are_deterministic_with_mean_one(spark):
    df = spark.range(4000).select(F.col("id").cast("string").alias("k"))
    weighted = df.select(poisson_weight(3, F.lit(1), [F.col("k")]).alias("w"))
    stats = weighted.agg(F.avg("w").alias("mean"), F.variance("w").alias("var")).first()
    assert stats["mean"] == pytest.approx(1.0, abs=0.06)
    assert stats["var"] == pytest.approx(1.0, abs=0.1)

    def weights(frame):
        w = poisson_weight(3, F.lit(1), [F.col("k")]).alias("w")
        return {r["k"]: r["w"] for r in frame.select("k", w).collect()}

    assert weights(df) == weights(df.repartition(3))


def test_a_day_without_conversions_is_written_empty_and_said_so(spark, config, journeys):
    run_attribute(spark, config, "run-full", log_to_mlflow=False)
    assert len(read_output(spark, config)) > 0
    # The same day rebuilt without any conversion (say every converting customer withdrew
    # consent): the earlier figures must not outlive the journeys they came from.
    unconverted = [(*r[:6], False, 0.0, None, r[9]) for r in journey_rows()]
    spark.createDataFrame(unconverted, JOURNEY_SCHEMA).write.format("delta").mode(
        "overwrite").save(Catalog(config).path("gold.journeys"))
    lines = run_attribute(spark, config, "run-empty", log_to_mlflow=False)
    assert any("holds no converted journey with a channel touch" in line for line in lines)
    assert read_output(spark, config)["attributed_conversions"].sum() == 0
