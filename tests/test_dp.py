"""Differential privacy: the noise source (Mironov check, KS), the budget, the published reports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import XS_AS_OF, copy_lake
from scipy import stats

from lakehouse.catalog import Catalog
from lakehouse.errors import InputDataError, PrivacyBudgetError
from lakehouse.privacy.dp import (
    Release,
    check_budget,
    count_measurement,
    discrete_laplace_cdf,
    noisy_counts,
)
from lakehouse.privacy.publish import (
    CHANNEL_WEEK,
    REVENUE_WEEK,
    SEGMENT_COUNTRY,
    publish,
    revenue_by_channel_week_cells,
)

N = 20_000


def _distinguishing_share(outputs_at_0: np.ndarray) -> float:
    """Share of releases at true value 0 that could not have come from true value 1.

    The mechanism returns ``fl(value + noise)``. An output x is reachable from value 1 only if
    some double n gives fl(1 + n) == x; n = fl(x - 1) is the candidate (Mironov 2012). When
    fl(1 + fl(x - 1)) != x, x carries low-order bits that no release at 1 can have: seeing it
    proves the true value was 0.
    """
    x = outputs_at_0.astype(np.float64)
    reachable = (1.0 + (x - 1.0)) == x
    return float(np.mean(~reachable))


def test_mironov_numpy_float_laplace_leaks_the_true_value():
    rng = np.random.default_rng(7)
    at_0 = 0.0 + rng.laplace(0.0, 1.0, N)
    # Measured: 42% of single releases at scale 1 reveal that the true value was 0.
    assert _distinguishing_share(at_0) > 0.3


def test_mironov_opendp_integer_noise_never_distinguishes_neighbours():
    at_0 = np.array(noisy_counts([0] * N, epsilon=1.0, l1_sensitivity=1.0))
    at_1 = np.array(noisy_counts([1] * N, epsilon=1.0, l1_sensitivity=1.0))
    assert at_0.dtype.kind == "i" and at_1.dtype.kind == "i"
    assert _distinguishing_share(at_0) == 0.0
    # Every output seen for one input has positive probability for the other: the discrete
    # Laplace puts mass on every integer, and the ratio of the two is bounded by e^epsilon.
    for k in set(at_0.tolist()) | set(at_1.tolist()):
        p0 = discrete_laplace_cdf(k, 1.0) - discrete_laplace_cdf(k - 1, 1.0)
        p1 = discrete_laplace_cdf(k - 1, 1.0) - discrete_laplace_cdf(k - 2, 1.0)
        assert p0 > 0 and p1 > 0 and max(p0 / p1, p1 / p0) <= math.e * (1 + 1e-9)


def _ks_pvalue(sample: np.ndarray, scale: float) -> float:
    """KS distance between the sample and the discrete Laplace CDF over its support.

    For a discrete law the continuous KS null distribution is conservative, so its p-value
    is an upper bound on the true one: a small p still rejects.
    """
    support = np.arange(sample.min() - 1, sample.max() + 1)
    empirical = np.searchsorted(np.sort(sample), support, side="right") / len(sample)
    model = np.array([discrete_laplace_cdf(k, scale) for k in support])
    d = float(np.max(np.abs(empirical - model)))
    return float(stats.kstwo.sf(d, len(sample)))


def test_noise_matches_the_discrete_laplace_distribution_ks():
    scale = 2.0  # epsilon 0.5 at sensitivity 1
    noise = np.array(noisy_counts([0] * N, epsilon=0.5, l1_sensitivity=1.0))
    assert _ks_pvalue(noise, scale) > 1e-4
    # The same test rejects a wrong scale, so it has the power to catch a wrong sampler.
    assert _ks_pvalue(noise, scale * 1.5) < 1e-6
    # Mean 0, variance 2a/(1-a)^2 with a = e^(-1/scale).
    a = math.exp(-1 / scale)
    assert abs(noise.mean()) < 0.1
    assert noise.var() == pytest.approx(2 * a / (1 - a) ** 2, rel=0.1)


def test_opendp_accounts_the_epsilon_it_is_asked_for():
    measurement = count_measurement(5, epsilon=0.5, l1_sensitivity=3)
    assert measurement.map(3) == pytest.approx(0.5)


def test_budget_check_per_report_and_total():
    check_budget([Release("a", 1.0, 1.0)], spent=8.0, per_report=1.0, total=10.0)
    with pytest.raises(PrivacyBudgetError, match="per-report"):
        check_budget([Release("a", 1.5, 1.0)], spent=0.0, per_report=1.0, total=10.0)
    with pytest.raises(PrivacyBudgetError, match="total budget"):
        check_budget([Release("a", 1.0, 1.0), Release("b", 1.0, 1.0)], spent=8.5,
                     per_report=1.0, total=10.0)


def test_an_epsilon_whose_noise_overflows_the_counts_is_refused():
    # OpenDP adds the noise to 32-bit integers and saturates: epsilon 1e-300 once published
    # 2147483647 in every cell. Scale = l1 / epsilon; the limit is 2^31 / 100.
    with pytest.raises(PrivacyBudgetError, match="32-bit"):
        check_budget([Release("r", 1e-300, 1.0)], spent=0.0, per_report=1.0, total=10.0)
    with pytest.raises(PrivacyBudgetError, match="32-bit"):
        check_budget([Release("r", 1e-4, 5000.0)], spent=0.0, per_report=1.0, total=10.0)
    check_budget([Release("r", 1e-4, 2000.0)], spent=0.0, per_report=1.0, total=10.0)


# -- published reports on a copy of the xs lake ----------------------------------------------


@pytest.fixture(scope="module")
def lake(spark, xs_lake, tmp_path_factory):
    cfg = copy_lake(xs_lake, tmp_path_factory.mktemp("dp") / "lake")
    return cfg.with_overrides({"privacy.epsilon_per_report": 1.0, "privacy.epsilon_total": 4.0})


def test_publish_writes_noisy_reports_with_their_epsilon_and_a_ledger(spark, lake):
    from datetime import date

    lines = publish(spark, lake, as_of=date.fromisoformat(XS_AS_OF))
    assert any("customer_segments does not exist" in line for line in lines)
    catalog = Catalog(lake)
    by_country = catalog.read(spark, SEGMENT_COUNTRY).toPandas()
    customers = catalog.read(spark, "gold.customer_360").select("customer_key", "country").toPandas()
    expected = customers.drop_duplicates("customer_key").groupby("country").size()
    assert set(by_country["epsilon"]) == {1.0} and set(by_country["l1_sensitivity"]) == {1.0}
    assert by_country["noisy_count"].min() >= 0
    for country, true_count in expected.items():
        noisy = by_country.loc[by_country["country"] == country, "noisy_count"]
        # P(|noise| > 15) at scale 1 is below 1e-6.
        assert len(noisy) == 1 and abs(int(noisy.iloc[0]) - true_count) <= 15, country

    by_week = catalog.read(spark, CHANNEL_WEEK).toPandas()
    journeys = catalog.read(spark, "gold.journeys").toPandas()
    converted = journeys[journeys["converted"]]
    assert set(by_week["l1_sensitivity"]) == {float(lake.get("privacy.max_rows_per_customer"))}
    assert by_week["contribution_bound"].str.contains("at most").all()
    # Nine channels (eight plus 'other') x eight public weeks, whatever the data holds.
    assert len(by_week) == 9 * 8
    last_channel = converted["channels"].map(lambda c: c[-1] if len(c) else "other")
    week = pd.to_datetime(converted["journey_end_ts"]).dt.to_period("W-SUN").dt.start_time.dt.date
    expected_weeks = pd.DataFrame({"channel": last_channel, "week": week}).value_counts()
    noisy_weeks = by_week.set_index(["channel", "week"])["noisy_count"]
    for (channel, wk), true_count in expected_weeks.items():
        # Scale 10 (cap 10 / epsilon 1): P(|noise| > 150) is below 1e-6.
        assert abs(int(noisy_weeks.loc[(channel, wk)]) - true_count) <= 150
    revenue = catalog.read(spark, REVENUE_WEEK).toPandas()
    cap, max_value = (int(lake.get(k)) for k in ("privacy.max_rows_per_customer",
                                                 "privacy.max_value_per_conversion_eur"))
    assert len(revenue) == 9 * 8 and revenue["noisy_revenue_eur"].min() >= 0
    assert set(revenue["l1_sensitivity"]) == {float(cap * max_value)}
    assert revenue["contribution_bound"].str.contains(f"0..{max_value} whole EUR").all()
    ledger = catalog.read(spark, "audit.privacy_ledger").toPandas()
    assert sorted(ledger["report"]) == sorted([SEGMENT_COUNTRY, CHANNEL_WEEK, REVENUE_WEEK])
    assert ledger["epsilon"].sum() == pytest.approx(3.0)


def test_a_date_gold_does_not_hold_is_refused_before_any_budget_is_spent(spark, lake):
    from datetime import date

    catalog = Catalog(lake)
    names = (SEGMENT_COUNTRY, CHANNEL_WEEK, REVENUE_WEEK, "audit.privacy_ledger")
    versions = {n: catalog.current_version(spark, n) for n in names}
    for wrong in ("1999-01-01", "2026-01-02"):
        with pytest.raises(InputDataError, match=f"holds as_of {XS_AS_OF}, not {wrong}"):
            publish(spark, lake, as_of=date.fromisoformat(wrong))
    assert {n: catalog.current_version(spark, n) for n in names} == versions


def test_budget_exhaustion_raises_and_writes_nothing(spark, lake):
    from datetime import date

    catalog = Catalog(lake)
    if not catalog.exists(spark, "audit.privacy_ledger"):
        publish(spark, lake, as_of=date.fromisoformat(XS_AS_OF))
    versions = {n: catalog.current_version(spark, n)
                for n in (SEGMENT_COUNTRY, CHANNEL_WEEK, REVENUE_WEEK, "audit.privacy_ledger")}
    # 3.0 of 4.0 spent: three more reports (3.0) do not fit.
    with pytest.raises(PrivacyBudgetError, match="nothing was published"):
        publish(spark, lake, as_of=date.fromisoformat(XS_AS_OF))
    with pytest.raises(PrivacyBudgetError, match="per-report"):
        publish(spark, lake, as_of=date.fromisoformat(XS_AS_OF), epsilon=2.0,
                reports=[SEGMENT_COUNTRY])
    assert {n: catalog.current_version(spark, n) for n in versions} == versions


def test_float_contrast_is_not_an_artifact_of_the_check():
    # Integers written as floats pass the same check: the leak is numpy's, not the test's.
    assert _distinguishing_share(np.arange(-50, 50, dtype=np.float64)) == 0.0


def test_revenue_cells_clamp_each_value_and_cap_each_customer(spark):
    """True (pre-noise) revenue cells on hand-built journeys, worked out by hand."""
    from datetime import date, datetime

    def journey(jid, customer, day, channels, value, converted=True):
        return (jid, customer, datetime(2026, 1, day, 12), channels, converted, value)

    journeys = spark.createDataFrame([
        journey("a1", "A", 5, ["email"], 50.0),              # A's oldest of 3: over the cap
        journey("a2", "A", 6, ["email"], 999.0),             # clamped to 100
        journey("a3", "A", 7, ["email"], 70.4),              # rounded to 70
        journey("b1", "B", 5, ["paid_search"], -20.0),       # negative: 0
        journey("b2", "B", 6, ["email"], float("nan")),      # NaN: 0
        journey("c1", "C", 5, ["tiktok"], 10.6),             # unknown channel: other, 11
        journey("c2", "C", 5, ["email"], 30.0, False),       # not converted: not counted
        journey("d1", None, 5, ["email"], 40.0),             # nobody's: not counted
    ], "journey_id string, customer_key string, journey_end_ts timestamp, "
       "channels array<string>, converted boolean, conversion_value double")
    week = date(2026, 1, 5)  # the Monday of that ISO week
    grid = spark.createDataFrame(
        [(c, week) for c in ("email", "paid_search", "other", "display")],
        "channel string, week date",
    )
    cells = revenue_by_channel_week_cells(journeys, grid, max_rows_per_customer=2, max_value=100)
    got = {r["channel"]: r["true_count"] for r in cells.collect()}
    # A keeps its latest two (a3 = 70 and a2 = 100); a1 is the one over the cap.
    assert got == {"email": 100 + 70 + 0, "paid_search": 0, "other": 11, "display": 0}


def test_publish_waits_for_no_other_run_and_refuses_in_one_line(spark, lake, capsys,
                                                                 monkeypatch):
    """Two publishes side by side would each read the ledger before the other appends to it:
    the command holds the data root's lock, and refuses while another run has it."""
    from lakehouse.cli import main
    from lakehouse.locks import pipeline_lock

    catalog = Catalog(lake)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", lake.data_dir)
    before = catalog.current_version(spark, "audit.privacy_ledger")
    with pipeline_lock(lake, "another publish"):
        assert main(["publish", "--as-of", XS_AS_OF]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another pipeline run is working on" in err[0], err
    assert catalog.current_version(spark, "audit.privacy_ledger") == before
