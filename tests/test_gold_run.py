"""run_gold end to end: silver Delta tables in tmp_path in, gold Delta tables out, twice."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import indexed_in_last_commit
from goldlib import SILVER, ts, with_a_shared_browser, write_silver
from pyspark.testing import assertDataFrameEqual

from lakehouse.catalog import Catalog
from lakehouse.errors import TableNotFoundError
from lakehouse.gold import GOLD_TABLES, gold_options, run_gold


def test_run_gold_names_a_missing_silver_table(spark, config):
    with pytest.raises(TableNotFoundError, match="silver.customers"):
        run_gold(spark, config, "run-0", date(2026, 1, 2))


def test_run_gold_twice_gives_identical_tables_without_duplicates(spark, config):
    catalog = Catalog(config)
    write_silver(spark, catalog, SILVER)

    first = run_gold(spark, config, "run-1", None)
    second = run_gold(spark, config, "run-2", None)

    # Latest event (e3) and order (o2) are on 2026-01-02: the derived as_of, said so.
    assert first[0] == "gold: as_of 2026-01-02 (latest event/order day in silver; no --as-of given)"
    # customer_360: c1 (duplicate once), c2. journeys: c1 e1 -> o1, then e2 open = 2.
    # kpi_daily: 2026-01-01 and 2026-01-02. kpi_channel_daily: (01-01 search),
    # (01-02 email), (01-02 search, anonymous e3) = 3. The second run replaces, never appends.
    expected_rows = {"customer_360": 2, "journeys": 2, "kpi_daily": 2, "kpi_channel_daily": 3}
    for lines in (first, second):
        counts = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
        assert counts == {f"gold.{t}": n for t, n in expected_rows.items()}
    for table in GOLD_TABLES:
        name = f"gold.{table}"
        assertDataFrameEqual(catalog.read(spark, name), catalog.read(spark, name, version=0))


def test_gold_options_fall_back_to_defaults(config):
    # Without a gold section in conf/base.yaml (or with the proposed defaults) these are used.
    assert gold_options(config) == {
        "lookback_days": 30, "include_channels": None, "exclude_channels": None, "top_keywords": 5
    }


def test_journeys_leave_out_customers_without_marketing_consent(spark, config):
    """c2 has no marketing consent: a search touch then a completed order would be a journey,
    but journeys are a marketing output. KPIs are not: c2's order still counts there."""
    catalog = Catalog(config)
    silver = dict(SILVER)
    schema, rows = SILVER["events"]
    silver["events"] = (schema, [*rows, ("e4", ts("2026-01-02 10:00"), "k2", "c2", "s4", "/",
                                         "page_view", "search", None, 1, "r")])
    schema, rows = SILVER["orders"]
    silver["orders"] = (schema, [*rows, ("o3", "c2", ts("2026-01-02 11:00"), 7.0, "EUR", 7.0,
                                         "completed", 1, 1, "r")])
    write_silver(spark, catalog, silver)

    run_gold(spark, config, "run-1", date(2026, 1, 2))

    journeys = catalog.read(spark, "gold.journeys").collect()
    assert {r["customer_key"] for r in journeys} == {"c1"}
    assert "o3" not in {r["order_id"] for r in journeys}
    day2 = {str(r["day"]): r for r in catalog.read(spark, "gold.kpi_daily").collect()}["2026-01-02"]
    assert day2["orders"] == 1 and float(day2["revenue_eur"]) == 7.0


def test_an_as_of_before_the_first_event_or_order_is_refused_and_gold_left_as_it_was(
    spark, config
):
    """Silver's first event and order are on 2026-01-01 (SILVER above): gold for 2025-12-31
    would count no event, order or KPI (most likely a mistyped year), so nothing is written."""
    from lakehouse.errors import InputDataError

    catalog = Catalog(config)
    write_silver(spark, catalog, SILVER)
    run_gold(spark, config, "run-1", date(2026, 1, 1))
    versions = {t: catalog.current_version(spark, f"gold.{t}") for t in GOLD_TABLES}
    with pytest.raises(InputDataError, match=r"--as-of 2025-12-31 is before the first event or "
                                             r"order in silver \(2026-01-01\)"):
        run_gold(spark, config, "run-2", date(2025, 12, 31))
    assert {t: catalog.current_version(spark, f"gold.{t}") for t in GOLD_TABLES} == versions
    # The first day itself is fine (it is the date run-1 used).
    assert run_gold(spark, config, "run-3", date(2026, 1, 1))[0] == "gold: as_of 2026-01-01 (given)"
    # An erasure's rebuild passes refuse_before_data=False: written. Only the profiles of c1 and
    # c2 (signed up 2025-12-01 and 2025-12-05) are there, without any figure.
    run_gold(spark, config, "run-4", date(2025, 12, 31), refuse_before_data=False)
    counts = {t: catalog.read(spark, f"gold.{t}").count() for t in GOLD_TABLES}
    assert counts == {"customer_360": 2, "journeys": 0, "kpi_daily": 0, "kpi_channel_daily": 0}


def test_a_gold_folder_that_cannot_be_made_is_one_line_naming_table_path_and_reason(
    spark, config, monkeypatch, capsys
):
    """A file where the gold layer's folder belongs (it stops root too, whom permission bits
    would not): `run gold` said only Delta's "Cannot create .../_delta_log"; now which table,
    where and why, in one line, exit 2, and silver as it was."""
    from pathlib import Path

    from lakehouse.cli import main

    catalog = Catalog(config)
    write_silver(spark, catalog, SILVER)
    versions = {name: catalog.current_version(spark, f"silver.{name}") for name in SILVER}
    gold = Path(config.data_dir) / "lake" / "gold"
    gold.write_text("not a folder")
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", config.data_dir)
    monkeypatch.delenv("LAKEHOUSE_DEBUG", raising=False)
    assert main(["run", "gold", "--as-of", "2026-01-02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lakehouse: error: gold.customer_360: "), err
    assert f"{gold} is a file, not a folder: move it away" in err[0], err
    assert {name: catalog.current_version(spark, f"silver.{name}") for name in SILVER} == versions
    assert gold.read_text() == "not a folder"
    # A later table that cannot be written is refused before the first is: customer_360 (the
    # first written) kept a new version when journeys then failed.
    import shutil

    gold.unlink()
    assert main(["run", "gold", "--as-of", "2026-01-02"]) == 0
    capsys.readouterr()
    journeys = gold / "journeys"
    shutil.rmtree(journeys)
    journeys.write_text("not a folder")
    before = {t: catalog.current_version(spark, t) for t in
              ("gold.customer_360", "gold.kpi_daily", "gold.kpi_channel_daily")}
    assert main(["run", "gold", "--as-of", "2026-01-02"]) == 2
    assert {t: catalog.current_version(spark, t) for t in before} == before
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lakehouse: error: gold.journeys: {journeys}/_delta_log: {journeys} is a "
                   f"file, not a folder: move it away, then run again"], err


def test_channel_lists_naming_channels_no_event_has_are_warned(spark):
    from lakehouse.gold import unseen_channel_warnings

    schema, rows = SILVER["events"]
    events = spark.createDataFrame(rows, schema)  # channels: search, email
    assert unseen_channel_warnings(events, None, ["email"]) == []
    lines = unseen_channel_warnings(events, ["search", "serach"], ["display", "email"])
    assert lines == [
        "  warning: gold.include_channels names channel(s) no event has: serach "
        "(events have: email, search)",
        "  warning: gold.exclude_channels names channel(s) no event has: display "
        "(events have: email, search)",
    ]


def test_run_gold_builds_journeys_and_channel_kpis_with_the_configured_window_and_channels(
    spark, config
):
    """run_gold cuts one timeline for gold.journeys and kpi_channel_daily: both must still get
    the look-back and channel lists, as each builder applies them on its own. The data makes
    the options matter: e5 (display) is excluded, and with a 1-day look-back c1's email touch
    two days before o4 has expired while the social one the same morning has not."""
    from conftest import PSEUDONYM_KEY

    from lakehouse.gold import consenting_customers
    from lakehouse.gold.journeys import build_journeys
    from lakehouse.gold.kpis import build_kpi_channel_daily

    catalog = Catalog(config)
    silver = dict(SILVER)
    schema, rows = SILVER["events"]
    silver["events"] = (schema, [
        *rows,
        ("e4", ts("2026-01-04 08:00"), "k1", "c1", "s5", "/", "page_view", "social", None, 1, "r"),
        ("e5", ts("2026-01-04 09:00"), "k1", "c1", "s5", "/", "page_view", "display", None, 1,
         "r"),
    ])
    schema, rows = SILVER["orders"]
    silver["orders"] = (schema, [*rows, ("o4", "c1", ts("2026-01-04 12:00"), 9.0, "EUR", 9.0,
                                         "completed", 1, 1, "r")])
    frames = {name: spark.createDataFrame(rows, schema) for name, (schema, rows) in silver.items()}
    for name, df in frames.items():
        df.write.format("delta").save(catalog.path(f"silver.{name}"))
    as_of = date(2026, 1, 4)
    options = {"lookback_days": 1, "include_channels": None, "exclude_channels": ["display"]}

    run_gold(spark, config, "run-1", as_of, **options)

    consenting = consenting_customers(frames["customers"])
    expected = {
        "journeys": build_journeys(
            frames["events"], frames["orders"], consenting, as_of, **options, key=PSEUDONYM_KEY
        ),
        "kpi_channel_daily": build_kpi_channel_daily(
            frames["events"], frames["orders"], consenting, as_of, **options
        ),
    }
    defaults = build_journeys(frames["events"], frames["orders"], consenting, as_of, key=PSEUDONYM_KEY)
    assert sorted(r["channels"] for r in expected["journeys"].collect()) != sorted(
        r["channels"] for r in defaults.collect()
    )
    for table, df in expected.items():
        assertDataFrameEqual(catalog.read(spark, f"gold.{table}"), df)


@pytest.mark.parametrize("joined_once_above", [100_000, 0], ids=["joined-by-each", "joined-once"])
def test_run_gold_gives_a_shared_browsers_visit_to_the_customer_who_logs_in_next(
    spark, config, monkeypatch, joined_once_above
):
    """Browser k1 is c1's first (e1), so silver looked c3's visit before logging in (e6, from
    an email) up to c1. c3 then logs in (e7) and orders (o5): the email touch is in c3's
    journey to o5, and in c3's sessions, not in c1's. The same whether each reader joins the
    given keys or run_gold joins them once (many shared browsers)."""
    import lakehouse.gold

    monkeypatch.setattr(lakehouse.gold, "GIVEN_KEYS_JOINED_ONCE_ABOVE", joined_once_above)
    catalog = Catalog(config)
    write_silver(spark, catalog, with_a_shared_browser(SILVER))

    run_gold(spark, config, "run-1", date(2026, 1, 2))

    journeys = {(r["customer_key"], r["order_id"]): r["channels"]
                for r in catalog.read(spark, "gold.journeys").collect()}
    # c1: e1 -> o1, then e2 (email, from k1 on 01-02 09:00) open; c3: e6 -> o5.
    assert journeys == {("c1", "o1"): ["search"], ("c1", None): ["email"],
                        ("c3", "o5"): ["email"]}
    sessions = {r["customer_key"]: r["sessions"]
                for r in catalog.read(spark, "gold.customer_360").collect()}
    assert sessions["c3"] == 1 and sessions["c1"] == 2


def test_a_gold_table_created_with_deltas_defaults_stops_indexing_its_strings(spark, config):
    """A gold table made before the statistics policy (here with Delta's defaults: every
    column indexed) keeps its property through overwrites; run_gold narrows it first, so the
    snapshot it writes keeps no min/max of a customer key or a country in the log. Its column
    old_metric is not in the contract any more: named in the property, it would fail the
    overwrite that drops it."""
    catalog = Catalog(config)
    write_silver(spark, catalog, SILVER)
    path = catalog.path("gold.customer_360")
    spark.createDataFrame([("old", "DE", 1, 2)],
                          "customer_key string, country string, posts int, old_metric int") \
        .write.format("delta").save(path)

    run_gold(spark, config, "run-1", date(2026, 1, 2))

    indexed = set(indexed_in_last_commit(path))
    assert indexed and not {"customer_key", "country", "old_metric"} & indexed
