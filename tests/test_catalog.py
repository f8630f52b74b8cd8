from __future__ import annotations

import pytest

from lakehouse.catalog import Catalog, ensure_data_dir_writable, parse_table_name
from lakehouse.errors import DataDirError, InvalidTableNameError


@pytest.mark.parametrize("name", ["bronze.orders", "gold.customer_360", "audit.dq_metrics"])
def test_valid_names_map_under_the_data_root(config, name):
    path = Catalog(config).path(name)
    layer, table = name.split(".")
    assert path == f"{config.data_dir}/lake/{layer}/{table}"


@pytest.mark.parametrize(
    "name",
    [
        "../x", "bronze/../../etc", "bronze.../x", "gold.a.b", "orders", "", "GOLD.orders",
        "gold.Orders", "x; DROP TABLE y", "gold.x'--", 'gold."x"', "nolayer.orders",
        "gold.", ".orders", "gold.1abc", "gold.a b", "gold.a" + "b" * 80,
    ],
)
def test_invalid_names_are_refused(config, name):
    with pytest.raises(InvalidTableNameError, match="invalid table name"):
        Catalog(config).path(name)


def test_parse_gives_layer_and_table():
    tn = parse_table_name("silver.identity_map")
    assert (tn.layer, tn.table, str(tn)) == ("silver", "identity_map", "silver.identity_map")


def test_raw_and_checkpoint_folders_stay_inside_root(config):
    catalog = Catalog(config)
    assert catalog.raw_dir("orders") == f"{config.data_dir}/raw/orders"
    assert catalog.checkpoint_dir("bronze.orders") == f"{config.data_dir}/checkpoints/bronze/orders"
    with pytest.raises(InvalidTableNameError):
        catalog.raw_dir("../orders")


def test_unwritable_data_dir_is_one_clear_error():
    from lakehouse.config import load_config

    # /proc refuses new folders even to root (permission bits would not bind for root)
    config = load_config("local", overrides={"data_dir": "/proc/lakehouse-data"})
    with pytest.raises(DataDirError, match="cannot be created|not writable"):
        ensure_data_dir_writable(config)


def test_table_creation_survives_an_empty_log_left_by_a_killed_creator(spark, config):
    # A process killed between mkdir(_delta_log) and the first commit leaves this behind.
    from pathlib import Path

    from pyspark.sql import types as T

    from lakehouse.silver.io import ensure_table

    catalog = Catalog(config)
    (Path(catalog.path("silver.half_made")) / "_delta_log").mkdir(parents=True)
    assert not catalog.exists(spark, "silver.half_made")
    schema = T.StructType([T.StructField("id", T.LongType())])
    ensure_table(spark, catalog, "silver.half_made", schema)
    ensure_table(spark, catalog, "silver.half_made", schema)  # and again: a no-op
    assert catalog.current_version(spark, "silver.half_made") == 0
    assert catalog.read(spark, "silver.half_made").schema == schema
