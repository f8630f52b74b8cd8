"""scripts/bench_pipeline.py's plain day (the incremental day with no logic): the keys its
plain MERGEs match silver rows on."""

from __future__ import annotations

from pathlib import Path

from conftest import load_script

bench_pipeline = load_script("bench_pipeline")


def test_every_silver_table_has_a_plain_merge_key_that_names_one_row(spark, xs_lake):
    """A silver table without a key would be left out of the plain day (a floor too low); a key
    that two rows share would make its plain MERGE fail or match the wrong row."""
    keys = bench_pipeline.silver_merge_keys()
    tables = bench_pipeline.delta_tables(Path(xs_lake.data_dir) / "lake" / "silver")
    assert len(tables) >= 9
    assert {t.name for t in tables} <= set(keys)
    for table in tables:
        rows = spark.read.format("delta").load(str(table))
        assert rows.count() > 0, table.name
        repeated = rows.groupBy(*keys[table.name]).count().where("count > 1")
        assert repeated.isEmpty(), f"{table.name}: {keys[table.name]} names several rows"
