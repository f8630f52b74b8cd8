"""Quality rules on a hand-built batch: every kind, every severity, quarantine rows."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.errors import ConfigError, QualityRuleError
from lakehouse.quality import (
    check_fail_rules,
    parse_quality,
    quality_figures,
    to_quarantine_rows,
    with_rule_results,
)
from lakehouse.sources import SourceSpec

ORDERS = SourceSpec(
    "orders", "csv", "orders", ("order_id",), "order_ts", (),
    {"order_id": "string", "customer_key": "string", "order_ts": "timestamp",
     "amount": "double", "status": "string", "code": "string"},
)
RULES = {
    "sources": {
        "orders": {
            "rules": [
                {"kind": "not_null", "column": "customer_key", "severity": "warn"},
                {"kind": "range", "column": "amount", "min": 0, "max": 100, "severity": "drop"},
                {"kind": "regex", "column": "code", "pattern": "^[A-Z]+[0-9]*$",
                 "severity": "warn"},
                {"kind": "allowed_values", "column": "status", "values": ["done", "open"],
                 "severity": "drop"},
                {"kind": "unique", "columns": ["code"], "severity": "warn"},
                {"kind": "referential", "column": "customer_key", "ref_table": "silver.customers",
                 "ref_column": "customer_key", "severity": "warn"},
            ]
        }
    }
}
BATCH = [
    # order_id, customer_key, amount, status, code, cast errors
    ("o1", "c1", 10.0, "done", "WIN10", []),
    ("o2", None, 500.0, "done", "WIN10", []),          # null key, out of range, shared code
    ("o3", "c9", 5.0, "lost", "bad code", []),         # unknown customer, status, pattern
    ("o3", "c9", 5.0, "lost", "bad code", []),         # duplicate of the line above
    (None, "c1", None, "open", None, ["amount 'N/A' is not a valid double"]),
]


@pytest.fixture()
def evaluated(spark):
    rules = parse_quality(RULES, {"orders": ORDERS}, {})["orders"]
    batch = spark.createDataFrame(
        [(*r[:2], None, *r[2:]) for r in BATCH],
        "order_id string, customer_key string, order_ts timestamp, amount double, "
        "status string, code string, _cast_errors array<string>",
    ).withColumns({"_is_malformed": F.lit(False), "_rescued_data": F.lit(None).cast("string")})
    customers = spark.createDataFrame([("c1",), ("c2",)], "customer_key string")
    refs = {"silver.customers": customers}
    return rules, with_rule_results(batch, rules, ("order_id",), (), refs).persist()


def test_each_rule_kind_and_severity(evaluated):
    _, df = evaluated
    got = df.select(
        "order_id", F.transform("_failures", lambda f: f["rule"]).alias("rules"), "_drop_rule"
    )
    expected = got.sparkSession.createDataFrame(
        [
            ("o1", ["unique:code"], None),  # shares its code with o2
            ("o2", ["not_null:customer_key", "range:amount", "unique:code"], "range:amount"),
            ("o3", ["regex:code", "allowed_values:status", "referential:customer_key"],
             "allowed_values:status"),
            ("o3", ["regex:code", "allowed_values:status", "referential:customer_key"],
             "allowed_values:status"),
            (None, ["not_null:order_id", "castable"], "not_null:order_id"),
        ],
        "order_id string, rules array<string>, _drop_rule string",
    )
    assertDataFrameEqual(got, expected)
    reasons = {r["order_id"]: r["_drop_reason"] for r in df.collect()}
    assert reasons["o2"] == "amount = '500.0' is outside [0, 100]"
    assert reasons[None] == "order_id is missing; amount 'N/A' is not a valid double"


def test_figures_and_quarantine_rows(evaluated):
    rules, df = evaluated
    figures = quality_figures(df, rules, ORDERS.columns, ORDERS.natural_key).first().asDict()
    assert (figures["rows_in"], figures["dropped"], figures["warned"]) == (5, 4, 1)
    assert figures["nn__customer_key"] == 4 and figures["fail__unique:code"] == 2
    assert figures["distinct_keys"] == 3  # o1, o2, o3 (the null key is not a key)
    batch = df.withColumns({
        "_raw": F.lit("line"), "_source_file": F.lit("f.csv"), "_batch_id": F.lit(7),
        "_commit_version": F.lit(3), "_malformed_reason": F.lit(None).cast("string"),
    })
    rows = to_quarantine_rows(batch, "orders", ("order_id",), "run-1", F.col("_raw"))
    assert sorted((r["natural_key"] or "", r["rule"]) for r in rows.collect()) == [
        ("", "not_null:order_id"), ("o2", "range:amount"),
        ("o3", "allowed_values:status"), ("o3", "allowed_values:status"),
    ]


def test_fail_severity_raises_with_an_example(spark, evaluated):
    _, df = evaluated
    strict = dict(RULES["sources"]["orders"])
    strict["rules"] = [{"kind": "range", "column": "amount", "max": 100, "severity": "fail"}]
    rules = parse_quality({"sources": {"orders": strict}}, {"orders": ORDERS}, {})["orders"]
    checked = with_rule_results(df.select(*df.columns[:9]),
                                rules, ("order_id",))
    figures = quality_figures(checked, rules, ORDERS.columns, ORDERS.natural_key).first()
    with pytest.raises(QualityRuleError, match=r"range:amount.*1 row.*'o2'"):
        check_fail_rules(figures.asDict(), rules, checked, ("order_id",))


def test_bad_rule_declarations_are_refused():
    bad = {"sources": {"orders": {"rules": [{"kind": "unique_ish", "severity": "warn"}]}}}
    with pytest.raises(ConfigError, match="unique_ish"):
        parse_quality(bad, {"orders": ORDERS}, {})
    bad = {"sources": {"orders": {"rules": [
        {"kind": "not_null", "column": "nope", "severity": "drop"}]}}}
    with pytest.raises(ConfigError, match="nope"):
        parse_quality(bad, {"orders": ORDERS}, {})


def test_a_timestamp_later_than_its_arrival_is_dropped_with_the_arrival_named(spark):
    from datetime import datetime

    doc = {"sources": {"orders": {"rules": [
        {"kind": "not_after_arrival", "column": "order_ts", "severity": "drop",
         "tolerance_hours": 2},
    ]}}}
    rules = parse_quality(doc, {"orders": ORDERS}, {})["orders"]
    arrived = datetime(2026, 1, 6, 12, 0, 0)
    rows = [
        ("o1", datetime(2026, 1, 5, 9, 0, 0)),    # before its arrival
        ("o2", datetime(2026, 1, 6, 14, 0, 0)),   # exactly the tolerance later: kept
        ("o3", datetime(2026, 1, 6, 14, 0, 1)),   # one second more: dropped
        ("o3", datetime(2026, 1, 6, 14, 0, 1)),   # its duplicate
        ("o4", None),                             # missing: another rule's business
        ("o5", datetime(2027, 1, 6, 12, 0, 0)),   # a year ahead
    ]
    batch = spark.createDataFrame(rows, "order_id string, order_ts timestamp").withColumns({
        "_ingested_at": F.lit(arrived), "_cast_errors": F.array().cast("array<string>"),
    })
    got = with_rule_results(batch, rules, ("order_id",)).select("order_id", "_drop_reason")
    later = "is later than the record's arrival (2026-01-06 12:00:00 UTC) by more than 2 h"
    expected = spark.createDataFrame([
        ("o1", None), ("o2", None),
        ("o3", f"order_ts = '2026-01-06 14:00:01' {later}"),
        ("o3", f"order_ts = '2026-01-06 14:00:01' {later}"),
        ("o4", None),
        ("o5", f"order_ts = '2027-01-06 12:00:00' {later}"),
    ], "order_id string, _drop_reason string")
    assertDataFrameEqual(got, expected)


@pytest.mark.parametrize("rule, message", [
    ({"kind": "not_after_arrival", "column": "amount", "severity": "drop"},
     "not_after_arrival needs a timestamp column; amount is declared double"),
    ({"kind": "not_after_arrival", "column": "order_ts", "severity": "drop",
      "tolerance_hours": -1}, "tolerance_hours must be a number of hours >= 0"),
])
def test_not_after_arrival_configuration_errors_are_named(rule, message):
    with pytest.raises(ConfigError, match=message):
        parse_quality({"sources": {"orders": {"rules": [rule]}}}, {"orders": ORDERS}, {})
