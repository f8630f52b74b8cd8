"""ml/features.py on small hand-made customer_360 snapshots: the null policy, log transforms,
the checks that refuse unusable input, and the pure naming / gate helpers."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from lakehouse.errors import InputDataError
from ml.features import FEATURE_COLUMNS, build_features, resolve_as_of
from ml.registry import GatePolicy, evaluate_gate
from ml.segmentation import check_names, rank_clusters

AS_OF = date(2026, 1, 3)
SCHEMA = (
    "customer_key string, tenure_days int, recency_days int, frequency int, monetary double, "
    "avg_order_value double, sessions int, page_views int, posts int, social_likes int, "
    "devices int, device_error_rate double, latest_battery double, as_of date"
)
ROWS = [
    # key, tenure, recency, freq, monetary, aov, sessions, pv, posts, likes, devices, err, batt
    ("a", 400, 2, 2, 100.0, 50.0, 3, 9, 1, 4, 1, 0.10, 80.0),
    ("b", 30, None, 0, 0.0, None, 1, 2, 0, 0, 0, None, None),     # never ordered, no device
    ("c", 1000, None, 0, 0.0, None, 0, 0, 0, 0, 0, None, None),   # never ordered, old: cap
    ("d", None, 0, 1, 20.0, 20.0, 2, 3, 0, 0, 2, 0.30, 40.0),     # unknown tenure
    ("d", None, 0, 1, 20.0, 20.0, 2, 3, 0, 0, 2, 0.30, 40.0),     # a duplicate row
]
OLD_ROW = ("z", 10, 1, 1, 5.0, 5.0, 1, 1, 0, 0, 0, None, None)


def snapshot(spark, rows=ROWS, as_of=AS_OF):
    return spark.createDataFrame([(*r, as_of) for r in rows], SCHEMA)


def test_null_policy_and_transforms(spark):
    df = snapshot(spark).unionByName(snapshot(spark, [OLD_ROW], date(2026, 1, 1)))
    features = build_features(df, AS_OF, recency_cap_days=365)
    got = features.features_df.toPandas().set_index("customer_key")
    assert features.rows == 5 and len(got) == 5  # only the as_of snapshot, duplicates kept
    # Medians of the rows that have a value (percentile_approx: an actual value of the data).
    tenures = sorted([400, 30, 1000])
    assert features.medians["tenure_days"] == tenures[1]
    assert features.medians["device_error_rate"] in (0.10, 0.30)
    a, b, c = (got.loc[k] for k in "abc")
    d = got.loc["d"].iloc[0]

    assert a["f_recency"] == pytest.approx(math.log1p(2)) and a["f_has_ordered"] == 1.0
    assert a["f_monetary"] == pytest.approx(math.log1p(100.0))
    assert a["f_avg_order_value"] == pytest.approx(math.log1p(50.0))
    assert a["f_has_device_data"] == 1.0 and a["f_latest_battery"] == 80.0
    # Never ordered: recency = tenure (capped), flagged; aov 0 EUR with the flag at 0.
    assert b["f_recency"] == pytest.approx(math.log1p(30)) and b["f_has_ordered"] == 0.0
    assert b["f_avg_order_value"] == 0.0 and b["f_monetary"] == 0.0
    assert c["f_recency"] == pytest.approx(math.log1p(365))
    # No device readings: the median of those with readings, flagged.
    assert b["f_has_device_data"] == 0.0
    assert b["f_device_error_rate"] == features.medians["device_error_rate"]
    assert b["f_latest_battery"] == features.medians["latest_battery"]
    # Unknown tenure: the median tenure.
    assert d["f_tenure"] == pytest.approx(math.log1p(features.medians["tenure_days"]))
    assert got[list(FEATURE_COLUMNS)].notna().all().all()
    assert features.imputed == {"tenure_days": 2}


def test_latest_snapshot_is_the_default(spark):
    df = snapshot(spark).unionByName(snapshot(spark, [OLD_ROW], date(2026, 1, 1)))
    assert resolve_as_of(df, None) == AS_OF
    assert resolve_as_of(df, date(2026, 1, 1)) == date(2026, 1, 1)
    with pytest.raises(InputDataError, match="not 2026-01-02"):
        resolve_as_of(df, date(2026, 1, 2))


def test_empty_table_and_empty_snapshot_are_refused(spark):
    empty = spark.createDataFrame([], SCHEMA)
    with pytest.raises(InputDataError, match="empty: no customers"):
        resolve_as_of(empty, None)
    with pytest.raises(InputDataError, match="no customers at as_of 2026-01-03"):
        build_features(empty, AS_OF)


def test_a_required_column_entirely_null_is_refused(spark):
    rows = [(r[0], r[1], r[2], r[3], None, *r[5:]) for r in ROWS]
    with pytest.raises(InputDataError, match=r"monetary are null for all 5 customers"):
        build_features(snapshot(spark, rows), AS_OF)


def test_missing_input_columns_are_named(spark):
    with pytest.raises(InputDataError, match="lacks column\\(s\\) sessions, posts"):
        build_features(snapshot(spark).drop("sessions", "posts"), AS_OF)


def test_device_columns_entirely_null_carry_no_weight(spark):
    rows = [(*r[:11], None, None) for r in ROWS]
    got = build_features(snapshot(spark, rows), AS_OF).features_df.toPandas()
    assert set(got["f_device_error_rate"]) == {0.0} and set(got["f_has_device_data"]) == {0.0}


def test_clusters_are_ranked_by_monetary_then_recency():
    profile = pd.DataFrame(
        {
            "prediction": [0, 1, 2, 3],
            "monetary": [10.0, 200.0, 0.0, 0.0],
            "recency_days_filled": [5.0, 1.0, 400.0, 20.0],
            "sessions": [1.0, 3.0, 0.1, 0.5],
        }
    )
    assert rank_clusters(profile) == {1: 0, 0: 1, 3: 2, 2: 3}


def test_names_must_cover_k_max():
    assert check_names(["a", "b"], 2) == ["a", "b"]
    from lakehouse.errors import ConfigError

    with pytest.raises(ConfigError, match="at least k_max"):
        check_names(["a"], 2)
    with pytest.raises(ConfigError, match="must start with a letter"):
        check_names(["a", "x'; DROP"], 2)


def test_gate():
    policy = GatePolicy(silhouette_tolerance=0.05, min_segment_share=0.1)
    first = evaluate_gate(0.4, [0.5, 0.5], None, None, policy)
    assert first.promote and first.reason.startswith("first model")
    assert evaluate_gate(0.46, [0.5, 0.5], 0.5, "3", policy).promote
    worse = evaluate_gate(0.44, [0.5, 0.5], 0.5, "3", policy)
    assert not worse.promote and "below champion v3's 0.5000" in worse.reason
    tiny = evaluate_gate(0.9, [0.95, 0.05], 0.5, "3", policy)
    assert not tiny.promote and "5.00%" in tiny.reason
    first_small = evaluate_gate(0.9, [0.95, 0.05], None, None, policy)
    assert first_small.promote and "below the minimum 10.00%" in first_small.reason
    # A champion without a recorded silhouette (the alias moved by hand) is a champion still:
    # a small segment is refused, and nothing displaces it without a figure to compare.
    untagged_tiny = evaluate_gate(0.9, [0.999, 0.001], None, "3", policy)
    assert not untagged_tiny.promote and "0.10% of customers" in untagged_tiny.reason
    assert untagged_tiny.champion_version == "3"
    untagged = evaluate_gate(0.9, [0.5, 0.5], None, "3", policy)
    assert not untagged.promote and "champion v3 has no recorded silhouette" in untagged.reason


@pytest.mark.parametrize(("customers", "expected_groups"), [(7, 1), (25, 2), (80, 5)])
def test_input_example_rows_are_means_over_at_least_ten_customers(
    spark, customers, expected_groups
):
    """Fewer rows than asked when the customers are few: each row a mean over at least ten of
    them in customer_key order (one row over all when there are fewer than ten)."""
    from ml.features import mean_rows_example

    keys = [f"k{i:03d}" for i in range(customers)]
    values = [float((i * 37) % 11) for i in range(customers)]
    df = spark.createDataFrame(list(zip(reversed(keys), reversed(values), strict=True)),
                               "customer_key string, f_x double")
    example = mean_rows_example(df, ["f_x"], rows=5, customers=customers)
    sizes = [customers // expected_groups + (g < customers % expected_groups)
             for g in range(expected_groups)]
    starts = [sum(sizes[:g]) for g in range(expected_groups)]
    expected = [sum(values[s:s + n]) / n for s, n in zip(starts, sizes, strict=True)]
    assert list(example.columns) == ["f_x"]
    assert list(example["f_x"]) == pytest.approx(expected)
