"""Tables made before the file statistics policy (lakehouse.privacy.stats) stop keeping the
min/max of text at their writer's next write: the audit chains, gold.channel_attribution and
gold.customer_segments, publish's releases (bronze, silver and gold have their own tests in
test_erasure and test_gold_run).

Each table is made as an older lake would have it, with Delta's defaults (the first 32
columns indexed, text included); the expected columns are the policy written out by hand:
numbers, dates and the lake's run ids."""

from __future__ import annotations

from datetime import date

import pandas as pd
from conftest import XS_AS_OF, copy_lake, indexed_in_last_commit

from lakehouse.catalog import Catalog

AS_OF = date(2026, 1, 3)


def with_delta_defaults(spark, path: str) -> None:
    """The table's statistics as Delta keeps them without the lake's property."""
    from delta.tables import DeltaTable

    spark.sql(f"ALTER TABLE delta.`{path}` UNSET TBLPROPERTIES IF EXISTS "
              "('delta.dataSkippingStatsColumns', 'delta.dataSkippingNumIndexedCols')")
    properties = DeltaTable.forPath(spark, path).detail().first()["properties"]
    assert not [k for k in properties if k.startswith("delta.dataSkipping")], properties


def test_an_audit_chain_made_before_the_policy_keeps_no_text_statistics(spark, config):
    from lakehouse.audit.chain import append_chained

    catalog = Catalog(config)
    name = "audit.old_chain"
    records = spark.createDataFrame(
        [("run-1", "read silver.events at version 3", 1)], "run_id string, message string, n long")
    append_chained(spark, catalog, name, records, ["n"])
    with_delta_defaults(spark, catalog.path(name))

    append_chained(spark, catalog, name, records, ["n"])

    assert set(indexed_in_last_commit(catalog.path(name))) == {"run_id", "n", "record_seq"}
    assert [r["record_seq"] for r in catalog.read(spark, name).orderBy("record_seq").collect()] \
        == [1, 2]


def test_channel_attribution_made_before_the_policy_keeps_no_text_statistics(spark, config):
    from ml.attribution.job import OUTPUT_SCHEMA, OUTPUT_TABLE, write_attribution

    catalog = Catalog(config)
    path = catalog.path(OUTPUT_TABLE)
    spark.createDataFrame([], OUTPUT_SCHEMA).write.format("delta").save(path)
    table = pd.DataFrame([{
        "run_id": "run-1", "as_of": AS_OF, "model": "markov", "order": 1, "segment": "all",
        "channel": "email", "removal_effect": 0.5, "attributed_conversions": 2.0,
        "attributed_value": 20.0, "ci_low": 1.0, "ci_high": 3.0,
    }])

    write_attribution(spark, catalog, table, AS_OF)

    assert set(indexed_in_last_commit(path)) == {
        "run_id", "as_of", "order", "removal_effect", "attributed_conversions",
        "attributed_value", "ci_low", "ci_high"}
    assert catalog.read(spark, OUTPUT_TABLE).count() == 1


def test_customer_segments_made_before_the_policy_keep_no_text_statistics(spark, config):
    from ml.segment_job import OUTPUT_SCHEMA, OUTPUT_TABLE, write_segments

    catalog = Catalog(config)
    path = catalog.path(OUTPUT_TABLE)
    spark.createDataFrame([], OUTPUT_SCHEMA).write.format("delta").save(path)
    scored = spark.createDataFrame(
        [("k1", 0, "loyal", "3", AS_OF), ("k2", 1, "lapsed", "3", AS_OF)], OUTPUT_SCHEMA)

    write_segments(spark, catalog, scored, AS_OF)

    assert set(indexed_in_last_commit(path)) == {"segment_id", "as_of"}
    assert catalog.read(spark, OUTPUT_TABLE).count() == 2


def test_publish_narrows_a_release_table_made_before_the_policy(spark, xs_lake, tmp_path):
    """The release table is narrowed before the budget is spent; its later commits keep no
    statistics of the report's text (the country dimension, how it was released)."""
    from datetime import date

    from lakehouse.privacy.publish import COUNTRY, publish

    config = copy_lake(xs_lake, tmp_path / "lake").with_overrides(
        {"privacy.epsilon_per_report": 1.0, "privacy.epsilon_total": 10.0})
    catalog = Catalog(config)
    as_of = date.fromisoformat(XS_AS_OF)
    publish(spark, config, as_of=as_of, reports=[COUNTRY])
    with_delta_defaults(spark, catalog.path(COUNTRY))

    publish(spark, config, as_of=as_of, reports=[COUNTRY])

    schema = catalog.read(spark, COUNTRY).schema
    assert {f.name for f in schema if f.dataType.simpleString() == "string"} >= {
        "country", "mechanism", "release_id"}, "the report has text to keep out"
    assert set(indexed_in_last_commit(catalog.path(COUNTRY))) == {
        f.name for f in schema if f.dataType.simpleString() in ("bigint", "double", "date")}


def test_a_property_spark_would_redact_is_read_whole(spark, config):
    """SHOW TBLPROPERTIES hides a value that matches the lake's spark.redaction.regex, such as
    a stats column list naming token_count; narrowing read the mask as a column to drop and
    committed again at every write."""
    from pyspark.sql import types as T

    from lakehouse.silver.io import ensure_table

    catalog = Catalog(config)
    schema = T.StructType([T.StructField("event_id", T.StringType()),
                           T.StructField("token_count", T.IntegerType())])
    ensure_table(spark, catalog, "silver.tokens", schema)
    shown = {r["key"]: r["value"] for r in spark.sql(
        f"SHOW TBLPROPERTIES delta.`{catalog.path('silver.tokens')}`").collect()}
    assert "token_count" not in shown["delta.dataSkippingStatsColumns"], "Spark redacts it"
    version = catalog.current_version(spark, "silver.tokens")

    assert catalog.narrow_statistics(spark, "silver.tokens") == []
    assert catalog.current_version(spark, "silver.tokens") == version
