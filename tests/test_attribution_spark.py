"""Spark transition counting == the plain-Python counter, whatever the partitioning."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from ml.attribution.markov import START, attribute, count_transitions
from ml.attribution.spark_paths import count_transitions_spark, transition_sums_df

SCHEMA = (
    "channels array<string>, total_conversions double, total_conversion_value double, "
    "total_null double"
)


def random_rows(seed: int, n: int = 400) -> list[tuple]:
    """Journeys with the awkward cases: repeats, revisits, null and empty channel lists,
    null/NaN/fractional weights, unicode and spaced names, duplicate rows, huge values."""
    rng = random.Random(seed)
    names = ["A", "B", "Paid Search", "Café", "e-mail", None]
    rows = []
    for _ in range(n):
        path = [rng.choice(names) for _ in range(rng.randint(0, 8))]
        conversions = rng.choice([0.0, 1.0, 2.0, rng.random() * 3, 1 / 3, None, math.nan])
        value = rng.choice([rng.uniform(0, 500), 0.1, None, 3.2e17])
        nulls = rng.choice([0.0, 1.0, rng.random() * 5, 0.1, None])
        rows.append((path, conversions, value, nulls))
    rows += rows[:5]  # exact duplicate rows
    return rows


@pytest.fixture(scope="module")
def rows() -> list[tuple]:
    return random_rows(seed=20240601)


@pytest.fixture(scope="module")
def paths_df(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_spark_counts_equal_python_counts_bit_for_bit(paths_df, rows, order):
    expected = count_transitions(rows, order)
    got = count_transitions_spark(paths_df, order)
    assert got.order == order
    assert got.transitions == expected.transitions
    assert got.conversions == expected.conversions
    assert got.conversion_value == expected.conversion_value
    assert got.nulls == expected.nulls
    assert len(expected.transitions) > 10


@pytest.mark.parametrize("order", [1, 3])
def test_spark_counts_identical_across_partition_counts(paths_df, order):
    one = count_transitions_spark(paths_df.repartition(1), order)
    seven = count_transitions_spark(paths_df.repartition(7), order)
    by_key = count_transitions_spark(paths_df.repartition(5, "total_null"), order)
    assert one == seven == by_key


def test_attribution_from_spark_counts_matches_python(paths_df, rows):
    python = attribute(count_transitions(rows, 2)).channels
    spark_side = attribute(count_transitions_spark(paths_df.repartition(3), 2)).channels
    pd.testing.assert_frame_equal(spark_side, python, check_exact=True)


def test_small_case_by_hand(spark):
    # A > A > B (repeat collapses) converts twice with value 10; B > A has one null journey;
    # an empty path and a row without journeys are skipped.
    df = spark.createDataFrame(
        [
            (["A", "A", "B"], 2.0, 10.0, 0.0),
            (["B", None, "A"], 0.0, 0.0, 1.0),
            ([], 1.0, 1.0, 1.0),
            (["C"], 0.0, 5.0, 0.0),
        ],
        SCHEMA,
    )
    counts = count_transitions_spark(df, 1)
    a, b = ("A",), ("B",)
    assert counts.transitions == {(START, a): 2.0, (START, b): 1.0, (a, b): 2.0, (b, a): 1.0}
    assert counts.conversions == {a: 0.0, b: 2.0}
    assert counts.conversion_value == {a: 0.0, b: 10.0}
    assert counts.nulls == {a: 1.0, b: 0.0}
    table = transition_sums_df(df, 2)
    assert table.columns == ["from_state", "to_state", "journeys", "conversions", "value", "nulls"]
    # Order 2: A > B is one state (A, B); B > A is (B, A); both are also last states.
    assert table.count() == 4


def test_negative_weights_fail_naming_the_path(spark):
    df = spark.createDataFrame([(["A", "B"], -1.0, 0.0, 0.0)], SCHEMA)
    with pytest.raises(Exception, match="negative total_conversions in path 'A > B'"):
        count_transitions_spark(df, 1)


def test_missing_columns_are_named(spark):
    df = spark.createDataFrame([(["A"], 1.0)], "channels array<string>, total_conversions double")
    with pytest.raises(ValueError, match="total_conversion_value, total_null"):
        count_transitions_spark(df, 1)
