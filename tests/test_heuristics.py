"""Heuristic attribution against hand counts on tiny journey frames."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction as Fr

import pytest

from ml.attribution.heuristics import (
    MODELS,
    check_position_weights,
    heuristic_attribution,
    time_decay_basis,
)

SCHEMA = "journey_id string, channels array<string>, converted boolean, conversion_value double"

ROWS = [
    ("j1", ["A", "B", "C"], True, 90.0),
    ("j1", ["A", "B", "C"], True, 90.0),  # a duplicate journey counts twice
    ("j3", ["B"], True, 10.0),
    ("j4", ["A", "A", "B"], True, 30.0),  # repeats are separate touches
    ("j5", None, True, 50.0),  # no channel: cannot be credited
    ("j6", ["C", None, "A"], False, 0.0),  # not converted: no credit
    ("j7", ["B", None, "C"], True, 20.0),  # the null touch is dropped
    ("j8", [], True, 5.0),
    ("j9", ["A"], None, 7.0),  # converted unknown: not a conversion
]

# Hand counts: (conversions, value) per model and channel.
W = Fr(1, 7)  # time decay, half-life 1 touch: ages 2, 1, 0 weigh 1/4, 1/2, 1 = 1/7, 2/7, 4/7
EXPECTED = {
    "first_touch": {"A": (3, 210), "B": (2, 30)},
    "last_touch": {"B": (2, 40), "C": (3, 200)},
    "linear": {
        "A": (Fr(4, 3), 80),
        "B": (Fr(5, 2), 90),
        "C": (Fr(7, 6), 70),
    },
    "position_based": {
        "A": (Fr(14, 10), 90),
        "B": (Fr(23, 10), 68),
        "C": (Fr(13, 10), 82),
    },
    "time_decay": {
        "A": (2 * W + 3 * W, 2 * 90 * W + 30 * 3 * W),
        "B": (2 * 2 * W + 1 + 4 * W + Fr(1, 3), 2 * 90 * 2 * W + 10 + 30 * 4 * W + 20 * Fr(1, 3)),
        "C": (2 * 4 * W + Fr(2, 3), 2 * 90 * 4 * W + 20 * Fr(2, 3)),
    },
}


def as_dict(df, keys=("model", "channel")) -> dict:
    return {
        tuple(r[k] for k in keys): (r["attributed_conversions"], r["attributed_value"])
        for r in df.collect()
    }


@pytest.fixture(scope="module")
def journeys_df(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


def test_every_model_matches_hand_counts(journeys_df):
    got = as_dict(heuristic_attribution(journeys_df, half_life_touches=1.0))
    expected = {
        (model, channel): (float(c), float(v))
        for model, channels in EXPECTED.items()
        for channel, (c, v) in channels.items()
    }
    assert set(got) == set(expected)
    for key, (conv, value) in expected.items():
        assert got[key][0] == pytest.approx(conv, abs=1e-12), key
        assert got[key][1] == pytest.approx(value, abs=1e-9), key


def test_each_model_sums_to_creditable_conversions(journeys_df):
    got = as_dict(heuristic_attribution(journeys_df))
    for model in MODELS:
        conversions = sum(c for (m, _), (c, _) in got.items() if m == model)
        value = sum(v for (m, _), (_, v) in got.items() if m == model)
        # j1 twice, j3, j4, j7: 5 converted journeys with a channel, 240 EUR.
        assert conversions == pytest.approx(5.0, abs=1e-12)
        assert value == pytest.approx(240.0, abs=1e-9)


def test_position_weights_are_configurable_and_two_touches_keep_their_ratio(spark):
    df = spark.createDataFrame(
        [("a", ["A", "B"], True, 10.0), ("b", ["A", "B", "C", "D"], True, 0.0)], SCHEMA
    )
    got = as_dict(heuristic_attribution(df, ["position_based"], position_weights=(0.3, 0.6, 0.1)))
    # Two touches: 0.3 : 0.1 -> 3/4, 1/4. Four touches: 0.3, 0.3, 0.3, 0.1.
    assert got[("position_based", "A")][0] == pytest.approx(0.75 + 0.3)
    assert got[("position_based", "A")][1] == pytest.approx(7.5)
    assert got[("position_based", "B")][0] == pytest.approx(0.25 + 0.3)
    assert got[("position_based", "C")][0] == pytest.approx(0.3)
    assert got[("position_based", "D")][0] == pytest.approx(0.1)


def test_time_decay_uses_touch_timestamps_when_present(spark):
    df = spark.createDataFrame(
        [
            (
                ["A", None, "B"],
                [datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 8)],
                datetime(2026, 1, 15),
                True,
                30.0,
            )
        ],
        "channels array<string>, touch_ts array<timestamp>, journey_end_ts timestamp, "
        "converted boolean, conversion_value double",
    )
    assert time_decay_basis(df) == "days"
    got = as_dict(heuristic_attribution(df, ["time_decay"], half_life_days=7.0))
    # 14 days old -> 1/4, 7 days old -> 1/2: shares 1/3 and 2/3.
    assert got[("time_decay", "A")] == pytest.approx((1 / 3, 10.0))
    assert got[("time_decay", "B")] == pytest.approx((2 / 3, 20.0))


def test_weights_and_group_keys(spark):
    df = spark.createDataFrame(
        [
            ("j1", ["A", "B"], True, 10.0, "x", 2),
            ("j2", ["B"], True, 4.0, "y", 0),
            ("j3", ["B"], True, 1.0, "x", 3),
        ],
        SCHEMA + ", segment string, w int",
    )
    got = as_dict(
        heuristic_attribution(df, ["linear"], weight="w", by=["segment"]),
        keys=("segment", "model", "channel"),
    )
    assert got == {
        ("x", "linear", "A"): pytest.approx((1.0, 10.0)),
        ("x", "linear", "B"): pytest.approx((4.0, 13.0)),
        ("y", "linear", "B"): pytest.approx((0.0, 0.0)),
    }


def test_same_totals_whatever_the_partitioning(journeys_df):
    one = as_dict(heuristic_attribution(journeys_df.repartition(1)))
    five = as_dict(heuristic_attribution(journeys_df.repartition(5)))
    assert one == five


def test_bad_parameters_are_rejected(journeys_df):
    with pytest.raises(ValueError, match="add up to 1"):
        check_position_weights((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown heuristic"):
        heuristic_attribution(journeys_df, ["u_shaped"])
    with pytest.raises(ValueError, match="half-life"):
        heuristic_attribution(journeys_df, ["time_decay"], half_life_touches=0.0)
    with pytest.raises(ValueError, match="missing column"):
        heuristic_attribution(journeys_df.drop("converted"))
