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
    with pytest.raises(QualityRuleError, match=r"range:amount.*1 row.*'o2': amount = '.*' is "
                                               r"outside \[, 100\]\)"):
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


# -- a rule file's mistakes: one ConfigError naming the place, before any data is read ------

CUSTOMERS = SourceSpec(
    "crm_customers", "csv", "crm_customers", ("customer_id",), "updated_at", ("email",),
    {"customer_id": "string", "email": "string", "updated_at": "timestamp"},
)
PRODUCED = {"silver.orders": "orders", "silver.customers": "crm_customers"}


def _rules_doc(*rules, **entry):
    return {"sources": {"orders": {"rules": list(rules), **entry}}}


@pytest.mark.parametrize("doc, message", [
    ({"defaults": {"completeness_threshold": "95%"}},
     r"defaults.completeness_threshold must be a number between 0 and 1.*'95%'"),
    ({"defaults": {"completeness_threshold": 95}}, "between 0 and 1"),
    ({"defaults": ["drop"]}, "defaults must be a mapping"),
    ({"defaults": {"castable_severty": "warn"}}, r"unknown key\(s\) castable_severty"),
    ({"sources": {"orders": [{"kind": "not_null"}]}}, "sources.orders must be a mapping"),
    ({"sources": {"orders": {"rule": []}}}, r"sources.orders: unknown key\(s\) rule"),
    ({"sourcs": {}}, r"unknown key\(s\) sourcs"),
    (_rules_doc({"kind": "not_null", "column": "amount", "severity": "warn"}, rules=None,
                completeness={"status": "high"}), r"orders.completeness.status must be a number"),
    ({"sources": {"orders": {"rules": {"kind": "not_null"}}}}, "orders.rules must be a list"),
    (_rules_doc({"kind": "not_null", "column": None, "severity": "warn"}),
     r"orders.rules\[0\]: column must be a column name"),
    (_rules_doc({"kind": "not_null", "column": "amount", "severity": "warn", "threshold": "high"}),
     r"orders.rules\[0\]: threshold must be a number between 0 and 1"),
    (_rules_doc({"kind": "not_null", "column": "amount", "severity": "warn", "threshold": 5}),
     "threshold must be a number between 0 and 1"),
    (_rules_doc({"kind": "range", "column": "amount", "maximum": 5, "severity": "warn"}),
     r"unknown key\(s\) maximum"),
    (_rules_doc({"kind": "range", "column": "amount", "min": "zero", "severity": "warn"}),
     "min must be a number, not 'zero'"),
    (_rules_doc({"kind": "range", "column": "amount", "min": 5, "max": 1, "severity": "warn"}),
     "min 5 is above max 1"),
    (_rules_doc({"kind": "range", "column": "order_ts", "min": "last year", "severity": "warn"}),
     "min must be a date"),
    (_rules_doc({"kind": "range", "column": "status", "min": 1, "severity": "warn"}),
     "a range rule needs a numeric, date or timestamp column, and this one is declared string"),
    (_rules_doc({"kind": "allowed_values", "column": "status", "values": "done",
                 "severity": "warn"}), "values must be a non-empty list"),
    (_rules_doc({"kind": "unique", "columns": [], "severity": "warn"}),
     "columns must be a non-empty list"),
    (_rules_doc({"kind": "regex", "column": "code", "pattern": None, "severity": "warn"}),
     "pattern must be a non-empty"),
    (_rules_doc({"kind": "referential", "column": "customer_key", "ref_table": "silver.custmers",
                 "ref_column": "customer_key", "severity": "warn"}),
     "ref_table silver.custmers is not a silver table a source writes"),
    (_rules_doc({"kind": "referential", "column": "customer_key", "ref_table": "silver.customers",
                 "ref_column": "email", "severity": "warn"}),
     "ref_column email is not a column of silver.customers"),
    (_rules_doc({"kind": "not_null", "column": "amount", "severity": "warn", "name": "a`b"}),
     "name must be one line of text without backticks"),
])
def test_a_mistake_in_the_rule_file_is_one_config_error_naming_it(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_quality(doc, {"orders": ORDERS, "crm_customers": CUSTOMERS},
                      {"crm_customers": ("customer_key",)}, "quality.yaml", PRODUCED)


def test_a_valid_reference_and_dated_range_are_accepted():
    from datetime import date

    doc = _rules_doc(
        {"kind": "referential", "column": "customer_key", "ref_table": "silver.customers",
         "ref_column": "customer_key", "severity": "warn"},
        {"kind": "range", "column": "order_ts", "min": date(2020, 1, 1), "severity": "warn"},
    )
    rules = parse_quality(doc, {"orders": ORDERS, "crm_customers": CUSTOMERS},
                          {"crm_customers": ("customer_key",)}, "quality.yaml", PRODUCED)
    assert [r.kind for r in rules["orders"].rules][-2:] == ["referential", "range"]


def test_an_invalid_java_pattern_is_named_before_any_data_is_read(spark):
    from lakehouse.quality import check_patterns

    # A valid pattern first: the one named is the one that does not compile.
    doc = _rules_doc({"kind": "regex", "column": "code", "pattern": "[A-Z]+", "name": "fine",
                      "severity": "warn"},
                     {"kind": "regex", "column": "code", "pattern": "[A-Z", "name": "code_form",
                      "severity": "warn"})
    rules = parse_quality(doc, {"orders": ORDERS}, {})
    with pytest.raises(ConfigError, match=r"quality.yaml: orders rule 'code_form': pattern "
                                          r"'\[A-Z' is not a valid Java regular expression"):
        check_patterns(spark, rules, "quality.yaml")
    # Java syntax Python's re does not know is valid here.
    ok = parse_quality(_rules_doc({"kind": "regex", "column": "code", "pattern": r"\p{Lu}+",
                                   "severity": "warn"}), {"orders": ORDERS}, {})
    check_patterns(spark, ok, "quality.yaml")


# -- rule semantics ----------------------------------------------------------------------------

TYPED = SourceSpec(
    "orders", "csv", "orders", ("order_id",), "order_ts", (),
    {"order_id": "string", "order_ts": "timestamp", "code": "string", "paid": "boolean",
     "score": "double"},
)


def _drop_reasons(spark, rules_list, rows):
    rules = parse_quality({"sources": {"orders": {"rules": rules_list}}}, {"orders": TYPED}, {})
    batch = spark.createDataFrame(
        rows, "order_id string, code string, paid boolean, score double"
    ).withColumns({"order_ts": F.lit(None).cast("timestamp"),
                   "_cast_errors": F.array().cast("array<string>")})
    out = with_rule_results(batch, rules["orders"], ("order_id",))
    return {r["order_id"]: r["_drop_reason"] for r in out.collect()}


def test_a_regex_must_match_the_whole_value(spark):
    got = _drop_reasons(spark, [{"kind": "regex", "column": "code", "pattern": "[0-9]{5}",
                                 "severity": "drop"}],
                        [("o1", "12345", True, 1.0), ("o2", "abc123456789xyz", True, 1.0),
                         ("o3", None, True, 1.0)])
    assert got == {"o1": None, "o2": "code 'abc123456789xyz' does not match the pattern",
                   "o3": None}


def test_allowed_values_compare_booleans_and_numbers_as_their_type(spark):
    got = _drop_reasons(spark, [
        {"kind": "allowed_values", "column": "paid", "values": [True], "severity": "drop"},
        {"kind": "allowed_values", "column": "score", "values": [1, 2.5], "severity": "drop"},
    ], [("o1", "x", True, 1.0), ("o2", "x", True, 2.5), ("o3", "x", False, 2.0),
        ("o4", "x", None, None)])
    assert got == {
        "o1": None, "o2": None,
        "o3": "paid = 'false' is not one of true; score = '2.0' is not one of 1, 2.5",
        "o4": None,
    }


def test_a_rule_name_with_dots_and_spaces_works(spark):
    got = _drop_reasons(spark, [{"kind": "unique", "columns": ["code"], "severity": "drop",
                                 "name": "code.unique per run"}],
                        [("o1", "A", True, 1.0), ("o2", "A", True, 1.0), ("o3", "B", True, 1.0)])
    assert got == {"o1": "code shared by 2 records with different keys",
                   "o2": "code shared by 2 records with different keys", "o3": None}
