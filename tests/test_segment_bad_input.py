"""Bad input to the segmentation job: each fails with one clear line before training, and
leaves no model version and no gold.customer_segments behind."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import copy_lake
from pyspark.sql import functions as F

from lakehouse.catalog import Catalog
from lakehouse.errors import InputDataError, LakehouseError, MlflowStoreError
from ml.segment_job import OUTPUT_TABLE, run_segment

OVERRIDES = {"segment.k_min": 4, "segment.k_max": 5, "segment.kmeans.solver": "row"}


@pytest.fixture()
def lake(xs_lake, tmp_path):
    return copy_lake(xs_lake, tmp_path / "data").with_overrides(OVERRIDES)


def _replace_customer_360(spark, config, change) -> None:
    catalog = Catalog(config)
    df = catalog.read(spark, "gold.customer_360")
    rows = change(df).toPandas()
    spark.createDataFrame(rows, df.schema).write.format("delta").mode("overwrite").save(
        catalog.path("gold.customer_360")
    )


def _assert_nothing_written(spark, config) -> None:
    assert not Catalog(config).exists(spark, OUTPUT_TABLE)
    db = Path(config.data_dir) / "mlflow" / "mlflow.db"
    if db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        assert client.search_registered_models() == []


def _one_line(error: LakehouseError) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 400
    return text


def test_empty_feature_table(spark, lake):
    _replace_customer_360(spark, lake, lambda df: df.limit(0))
    with pytest.raises(InputDataError) as caught:
        run_segment(spark, lake, "bad-empty", None)
    assert "is empty: no customers to segment" in _one_line(caught.value)
    _assert_nothing_written(spark, lake)


def test_fewer_customers_than_k(spark, lake):
    _replace_customer_360(spark, lake, lambda df: df.orderBy("customer_key").limit(3))
    with pytest.raises(InputDataError) as caught:
        run_segment(spark, lake, "bad-few", None)
    assert "has 3 customer(s) at as_of 2026-01-03, fewer than" in _one_line(caught.value)
    _assert_nothing_written(spark, lake)


def test_feature_column_entirely_null(spark, lake):
    _replace_customer_360(
        spark, lake, lambda df: df.withColumn("sessions", F.lit(None).cast("int"))
    )
    with pytest.raises(InputDataError) as caught:
        run_segment(spark, lake, "bad-null", None)
    assert "sessions are null for all 300 customers" in _one_line(caught.value)
    _assert_nothing_written(spark, lake)


def test_unknown_as_of(spark, lake):
    with pytest.raises(InputDataError, match="not 2025-12-31"):
        run_segment(spark, lake, "bad-date", "2025-12-31")
    _assert_nothing_written(spark, lake)


def test_unreachable_mlflow_store_fails_fast_before_training(spark, lake):
    config = lake.with_overrides({"mlflow.tracking_uri": "http://127.0.0.1:9"})
    started = time.monotonic()
    with pytest.raises(MlflowStoreError) as caught:
        run_segment(spark, config, "bad-store", None)
    assert time.monotonic() - started < 30
    assert "MLflow tracking server http://127.0.0.1:9 cannot be reached" in _one_line(
        caught.value
    )
    assert not Catalog(lake).exists(spark, OUTPUT_TABLE)
    assert not (Path(lake.data_dir) / "mlflow").exists()


def test_champion_without_model_files_stops_before_training(spark, lake, capfd):
    from mlflow import MlflowClient

    from ml.tracking import configure_mlflow

    config = lake.with_overrides({"segment.k_max": 4})
    capfd.readouterr()
    run_segment(spark, config, "first", None)
    # A normal run is quiet: MLflow's own chatter is not what a user needs to read.
    noise = capfd.readouterr().err
    for line in ("Successfully registered model", "Created version", "Hint: Inferred schema",
                 "Creating initial MLflow database tables", "already on DFS"):
        assert line not in noise, noise
    model_name = config.get("segment.model_name")
    configure_mlflow(config)
    client = MlflowClient()
    location = client.get_model_version_download_uri(model_name, "1")
    assert location.startswith("file://")
    shutil.rmtree(location.removeprefix("file://"))  # the files are gone, the registry remains
    before = Catalog(config).current_version(spark, OUTPUT_TABLE)
    with pytest.raises(MlflowStoreError) as caught:
        run_segment(spark, config, "second", None)
    message = _one_line(caught.value)
    assert f"champion model {model_name} version 1 cannot be loaded" in message
    assert "nothing was trained or registered" in message
    assert [str(v.version) for v in client.search_model_versions(f"name = '{model_name}'")] == ["1"]
    assert Catalog(config).current_version(spark, OUTPUT_TABLE) == before


def test_a_lost_mlflow_store_is_not_silently_started_anew(spark, full_xs_lake, tmp_path):
    config = copy_lake(full_xs_lake, tmp_path / "data").with_overrides(OVERRIDES)
    catalog = Catalog(config)
    assert catalog.exists(spark, OUTPUT_TABLE)  # scored by the store about to be lost
    before = catalog.current_version(spark, OUTPUT_TABLE)
    shutil.rmtree(Path(config.data_dir) / "mlflow")
    with pytest.raises(MlflowStoreError) as caught:
        run_segment(spark, config, "lost-store", None)
    message = _one_line(caught.value)
    assert "mlflow.db is missing but gold.customer_segments names model versions" in message
    assert not (Path(config.data_dir) / "mlflow").exists()  # no new, empty registry
    # Nor may another job create it, letting the next segment run through.
    from ml.attribution.job import run_attribute

    with pytest.raises(MlflowStoreError, match="mlflow.db is missing"):
        run_attribute(spark, config, "lost-store-attribute")
    assert not (Path(config.data_dir) / "mlflow").exists()
    assert catalog.current_version(spark, OUTPUT_TABLE) == before
    # A mistyped configured store is the same case.
    typo = config.with_overrides({"mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlfow.db"})
    with pytest.raises(MlflowStoreError, match="mlfow.db is missing"):
        run_segment(spark, typo, "typo-store", None)
    assert not (tmp_path / "mlfow.db").exists()
