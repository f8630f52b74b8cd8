"""Gold transforms on one small hand-built silver set (contract columns of docs/tables.md).

as_of = 2026-01-20, so rows count when their timestamp is before 2026-01-21 00:00 UTC.
Every expected value below is worked out by hand in the comments, not by the code under test.
The set holds duplicates (a customer, an order, an event, a post and a reading delivered twice),
nulls (a null customer_key, event_ts, session_id, country, likes, keywords, battery) and rows
just after the cut-off.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.gold import activity_days, as_of_cutoff, utc_day
from lakehouse.gold.customer_360 import build_customer_360
from lakehouse.gold.journeys import build_journeys
from lakehouse.gold.kpis import build_kpi_channel_daily, build_kpi_daily
from lakehouse.privacy.pseudonym import DEV_KEY

AS_OF = date(2026, 1, 20)
LOOKBACK = 7


def ts(text: str) -> datetime:
    """A UTC instant (aware, so the test does not depend on the machine's time zone)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


# -- silver input ----------------------------------------------------------------------------
CUSTOMERS_SCHEMA = (
    "customer_key string, email_pseudonym string, phone_pseudonym string, "
    "handle_pseudonym string, country string, signup_date date, marketing_consent boolean, "
    "data_expiry_date date, updated_at timestamp, _bronze_version long, _run_id string"
)
CUSTOMERS = [
    ("c1", "e1", "p1", "h1", "DE", d("2025-12-01"), True, d("2028-12-01"), ts("2025-12-01"), 1, "r"),
    ("c2", "e2", None, "h2", None, d("2026-01-10"), False, None, ts("2026-01-10"), 1, "r"),
    # c3 delivered twice: the later version (country FR) wins.
    ("c3", "e3", None, None, "XX", d("2026-01-01"), True, d("2029-01-01"), ts("2026-01-01"), 1, "r"),
    ("c3", "e3", None, None, "FR", d("2026-01-01"), True, d("2029-01-01"), ts("2026-01-03"), 2, "r"),
    # c4 signs up after as_of: not a customer yet on 2026-01-20.
    ("c4", "e4", None, None, "ES", d("2026-02-01"), True, None, ts("2026-02-01"), 1, "r"),
]

ORDERS_SCHEMA = (
    "order_id string, customer_key string, order_ts timestamp, amount double, currency string, "
    "amount_eur double, status string, n_items int, _bronze_version long, _run_id string"
)
ORDERS = [
    ("o1", "c1", ts("2026-01-05 10:00"), 100.0, "EUR", 100.0, "completed", 1, 1, "r"),
    ("o2", "c1", ts("2026-01-15 12:00"), 50.5, "EUR", 50.5, "completed", 1, 1, "r"),
    ("o2", "c1", ts("2026-01-15 12:00"), 50.5, "EUR", 50.5, "completed", 1, 2, "r"),  # duplicate
    ("o3", "c1", ts("2026-01-14 09:00"), 999.0, "EUR", 999.0, "cancelled", 9, 1, "r"),
    ("o4", "c1", ts("2026-01-25 09:00"), 70.0, "EUR", 70.0, "completed", 1, 1, "r"),  # after
    ("o5", "c2", ts("2026-01-20 23:59:59"), 22.0, "USD", 20.0, "Completed", 1, 1, "r"),
    ("o6", "c2", ts("2026-01-21 00:00:00"), 30.0, "EUR", 30.0, "completed", 1, 1, "r"),  # after
    ("o7", None, ts("2026-01-20 08:00"), 40.0, "EUR", 40.0, "completed", 1, 1, "r"),  # no customer
    # o8: the newer version is cancelled, so the older 'completed' copy must not count.
    ("o8", "c3", ts("2026-01-08 10:00"), 25.0, "EUR", 25.0, "completed", 1, 1, "r"),
    ("o8", "c3", ts("2026-01-08 10:00"), 25.0, "EUR", 25.0, "cancelled", 1, 2, "r"),
]

EVENTS_SCHEMA = (
    "event_id string, event_ts timestamp, cookie_id string, customer_key string, "
    "session_id string, page string, event_type string, channel string, campaign string, "
    "_bronze_version long, _run_id string"
)


def ev(event_id, when, customer, session, event_type, channel, version=1):
    return (event_id, ts(when) if when else None, "k", customer, session, "/p", event_type,
            channel, None, version, "r")


EVENTS = [
    ev("ev01", "2025-12-28 10:00", "c1", "s1", "page_view", "search"),
    ev("ev02", "2025-12-29 10:00", "c1", "s2", "page_view", "display"),
    # ev04 listed before ev03 at the same instant: the tie is broken by event_id.
    ev("ev04", "2026-01-03 08:00", "c1", "s3", "page_view", "email"),
    ev("ev03", "2026-01-03 08:00", "c1", "s3", "page_view", "search"),
    ev("ev05", "2026-01-03 08:05", "c1", "s3", "product_view", None),
    ev("ev06", "2026-01-05 10:00", "c1", "s4", "page_view", "social"),  # same instant as o1
    ev("ev07", "2026-01-10 09:00", "c1", "s5", "page_view", "affiliate"),
    ev("ev08", "2026-01-12 09:00", "c1", "s6", "page_view", "email"),
    ev("ev08", "2026-01-12 09:00", "c1", "s6", "page_view", "email", version=2),  # duplicate
    ev("ev09", "2026-01-18 20:00", "c1", "s7", "search", "search"),
    ev("ev10", "2026-01-20 23:00", "c1", "s8", "page_view", "display"),
    ev("ev11", "2026-01-21 01:00", "c1", "s9", "page_view", "email"),  # after as_of
    ev("ev12", "2026-01-19 12:00", "c1", None, "page_view", None),  # null session
    ev("ev14", None, "c1", "s10", "page_view", "email"),  # null timestamp: counts nowhere
    ev("ev20", "2026-01-20 22:00", "c2", "s20", "page_view", "search"),
    ev("ev30", "2026-01-20 21:00", None, "s30", "page_view", "search"),  # anonymous
    ev("ev40", "2026-01-02 10:00", "c3", "s40", "page_view", None),
    ev("ev41", "2026-01-02 10:05", "c3", "s40", "product_view", "social"),
]

SOCIAL_SCHEMA = (
    "post_id string, handle_pseudonym string, customer_key string, post_ts timestamp, "
    "text string, keywords array<string>, likes int, shares int, _bronze_version long, "
    "_run_id string"
)
SOCIAL = [
    ("p1", "h1", "c1", ts("2026-01-10"), "t", ["shoes", "running", "Shoes"], 10, 0, 1, "r"),
    ("p2", "h1", "c1", ts("2026-01-12"), "t", ["running", "trail"], 5, 0, 1, "r"),
    ("p2", "h1", "c1", ts("2026-01-12"), "t", ["running", "trail"], 5, 0, 2, "r"),  # duplicate
    ("p3", "h1", "c1", ts("2026-01-22"), "t", ["yoga"], 100, 0, 1, "r"),  # after as_of
    ("p4", "h1", "c1", ts("2026-01-15"), "t", None, None, None, 1, "r"),
    ("p5", "hx", None, ts("2026-01-11"), "t", ["spam"], 3, 0, 1, "r"),  # stranger
    ("p6", "h2", "c2", ts("2026-01-19"), "t", ["coffee"], 0, 0, 1, "r"),
]

IOT_SCHEMA = (
    "reading_id string, device_id string, customer_key string, reading_ts timestamp, "
    "temperature double, vibration double, battery double, error_code string, "
    "_bronze_version long, _run_id string"
)
IOT = [
    ("r1", "d1", "c1", ts("2026-01-10"), 20.0, 0.1, 80.0, None, 1, "r"),
    ("r2", "d1", "c1", ts("2026-01-15"), 21.0, 0.1, 70.0, "E1", 1, "r"),
    ("r2", "d1", "c1", ts("2026-01-15"), 21.0, 0.1, 70.0, "E1", 2, "r"),  # duplicate
    ("r3", "d1", "c1", ts("2026-01-18"), 22.5, 0.1, None, None, 1, "r"),  # no battery value
    ("r4", "d1", "c1", ts("2026-01-22"), 30.0, 0.1, 10.0, None, 1, "r"),  # after as_of
    ("r5", "d2", "c1", ts("2026-01-16"), 19.0, 0.2, 90.0, None, 1, "r"),
    ("r6", "d3", "c3", ts("2026-01-05"), 18.0, 0.3, 50.0, "E2", 1, "r"),
]


@pytest.fixture(scope="module")
def silver(spark):
    return {
        "customers": spark.createDataFrame(CUSTOMERS, CUSTOMERS_SCHEMA),
        "orders": spark.createDataFrame(ORDERS, ORDERS_SCHEMA),
        "events": spark.createDataFrame(EVENTS, EVENTS_SCHEMA),
        "social": spark.createDataFrame(SOCIAL, SOCIAL_SCHEMA),
        "iot": spark.createDataFrame(IOT, IOT_SCHEMA),
    }


def c360(silver, as_of=AS_OF):
    return build_customer_360(
        silver["customers"], silver["orders"], silver["events"], silver["social"], silver["iot"],
        as_of,
    )


def journeys(silver, **kwargs):
    return build_journeys(
        silver["events"], silver["orders"], silver["customers"], AS_OF,
        **{"lookback_days": LOOKBACK, "key": DEV_KEY, **kwargs},
    )


def jid(customer_key: str, order_id: str | None) -> str:
    """HMAC-SHA256 under the key (the development key here), as the standard library makes it."""
    marker = f"order:{order_id}" if order_id else "open"
    return hmac.new(DEV_KEY, f"journey:{customer_key}|{marker}".encode(),
                    hashlib.sha256).hexdigest()


# -- customer_360 -----------------------------------------------------------------------------
C360_SCHEMA = (
    "customer_key string, country string, signup_date date, marketing_consent boolean, "
    "data_expiry_date date, tenure_days int, recency_days int, frequency int, monetary double, "
    "avg_order_value double, first_order_ts timestamp, last_order_ts timestamp, sessions int, "
    "page_views int, last_seen_ts timestamp, posts int, social_likes int, "
    "interest_keywords array<string>, devices int, device_error_rate double, "
    "latest_battery double, latest_temperature double, as_of date"
)


def test_customer_360_rfm_behaviour_social_iot(spark, silver):
    expected = spark.createDataFrame(
        [
            # c1: tenure 2025-12-01 -> 2026-01-20 = 31 + 19 = 50 days.
            # completed orders up to as_of: o1 100.0 + o2 50.5 (duplicate once, o3 cancelled,
            # o4 after) -> frequency 2, monetary 150.5, AOV 150.5 / 2 = 75.25,
            # recency 2026-01-15 -> 2026-01-20 = 5.
            # sessions s1..s8 = 8 (s9 after as_of, s10 has no timestamp, ev12 no session);
            # page views ev01 02 03 04 06 07 08 10 12 = 9; last seen ev10 2026-01-20 23:00.
            # posts p1 p2 p4 = 3, likes 10 + 5 + 0 = 15; keywords: running 2 (p1, p2),
            # shoes 1 (p1, 'Shoes' is the same word), trail 1 -> [running, shoes, trail].
            # devices d1 d2 = 2; readings r1 r2 r3 r5 = 4, errors r2 = 1 -> 0.25;
            # latest battery: r3 has none, so r5 (01-16) 90.0; latest temperature r3 22.5.
            ("c1", "DE", d("2025-12-01"), True, d("2028-12-01"), 50, 5, 2, 150.5, 75.25,
             ts("2026-01-05 10:00"), ts("2026-01-15 12:00"), 8, 9, ts("2026-01-20 23:00"),
             3, 15, ["running", "shoes", "trail"], 2, 0.25, 90.0, 22.5, AS_OF),
            # c2: tenure 10; o5 at 23:59:59 on as_of counts (recency 0), o6 at midnight does
            # not -> frequency 1, monetary 20.0 EUR; one session, one page view; p6 no likes.
            ("c2", None, d("2026-01-10"), False, None, 10, 0, 1, 20.0, 20.0,
             ts("2026-01-20 23:59:59"), ts("2026-01-20 23:59:59"), 1, 1, ts("2026-01-20 22:00"),
             1, 0, ["coffee"], 0, None, None, None, AS_OF),
            # c3: latest profile FR; tenure 19; o8's latest version is cancelled -> never
            # ordered (recency null, frequency 0, monetary 0.0, AOV null); one device in error.
            ("c3", "FR", d("2026-01-01"), True, d("2029-01-01"), 19, None, 0, 0.0, None,
             None, None, 1, 1, ts("2026-01-02 10:05"), 0, 0, [], 1, 1.0, 50.0, 18.0, AS_OF),
            # c4 signs up on 2026-02-01: no row.
        ],
        C360_SCHEMA,
    )
    assertDataFrameEqual(c360(silver), expected)


# -- journeys -----------------------------------------------------------------------------------
JOURNEYS_SCHEMA = (
    "journey_id string, customer_key string, journey_start_ts timestamp, "
    "journey_end_ts timestamp, channels array<string>, touchpoints int, converted boolean, "
    "conversion_value double, order_id string, as_of date"
)


def test_journeys_converted_open_lookback_and_ties(spark, silver):
    expected = spark.createDataFrame(
        [
            # c1 journey 1 ends in o1 (01-05 10:00); look-back 7 days starts 12-29 10:00:
            # ev01 (12-28) expired, ev02 exactly on the boundary kept; ev03/ev04 tie at 01-03
            # 08:00 -> event_id order (search, email); ev06 at the order instant counts.
            (jid("c1", "o1"), "c1", ts("2025-12-29 10:00"), ts("2026-01-05 10:00"),
             ["display", "search", "email", "social"], 4, True, 100.0, "o1", AS_OF),
            # c1 journey 2: after o1 up to o2 (the cancelled o3 ends nothing).
            (jid("c1", "o2"), "c1", ts("2026-01-10 09:00"), ts("2026-01-15 12:00"),
             ["affiliate", "email"], 2, True, 50.5, "o2", AS_OF),
            # c1 open journey: after o2 up to as_of (ev11 is after as_of; o4 too).
            (jid("c1", None), "c1", ts("2026-01-18 20:00"), ts("2026-01-20 23:00"),
             ["search", "display"], 2, False, 0.0, None, AS_OF),
            # c2: ev20 then o5 at 23:59:59 (value in EUR, not the USD amount).
            (jid("c2", "o5"), "c2", ts("2026-01-20 22:00"), ts("2026-01-20 23:59:59"),
             ["search"], 1, True, 20.0, "o5", AS_OF),
            # c3's only touchpoint (01-02) is older than the open window (01-14 00:00 on):
            # no journey. The anonymous ev30 belongs to nobody.
        ],
        JOURNEYS_SCHEMA,
    )
    assertDataFrameEqual(journeys(silver), expected)


def test_journeys_channel_exclusion(spark, silver):
    actual = journeys(silver, exclude_channels=["search"]).select(
        "journey_id", "channels", "touchpoints", "converted", "journey_start_ts", "journey_end_ts"
    )
    expected = spark.createDataFrame(
        [
            (jid("c1", "o1"), ["display", "email", "social"], 3, True,
             ts("2025-12-29 10:00"), ts("2026-01-05 10:00")),
            (jid("c1", "o2"), ["affiliate", "email"], 2, True,
             ts("2026-01-10 09:00"), ts("2026-01-15 12:00")),
            (jid("c1", None), ["display"], 1, False, ts("2026-01-20 23:00"), ts("2026-01-20 23:00")),
            # c2's only touch was search: the conversion stays, with no channel.
            (jid("c2", "o5"), [], 0, True, ts("2026-01-20 23:59:59"), ts("2026-01-20 23:59:59")),
        ],
        "journey_id string, channels array<string>, touchpoints int, converted boolean, "
        "journey_start_ts timestamp, journey_end_ts timestamp",
    )
    assertDataFrameEqual(actual, expected)


def test_journeys_reject_bad_parameters(silver):
    with pytest.raises(ValueError, match="lookback_days"):
        journeys(silver, lookback_days=0)
    with pytest.raises(ValueError, match="include_channels is empty"):
        journeys(silver, include_channels=[])
    with pytest.raises(TypeError, match="exclude_channels"):
        journeys(silver, exclude_channels="search")
    with pytest.raises(TypeError, match="as_of"):
        build_journeys(silver["events"], silver["orders"], silver["customers"], "2026-01-20",
                       key=DEV_KEY)


# -- KPIs ----------------------------------------------------------------------------------------
def test_kpi_daily(spark, silver):
    # (orders, revenue, active customers, sessions) on days with activity; every other day
    # from the first activity (2025-12-28) to as_of is all zeros: 4 + 20 = 24 days.
    active = {
        "2025-12-28": (0, 0.0, 1, 1),  # ev01 c1 s1
        "2025-12-29": (0, 0.0, 1, 1),  # ev02 c1 s2
        "2026-01-02": (0, 0.0, 1, 1),  # ev40 + ev41 c3, one session s40
        "2026-01-03": (0, 0.0, 1, 1),  # ev03 ev04 ev05 c1 s3
        "2026-01-05": (1, 100.0, 1, 1),  # o1 completed; ev06 s4
        "2026-01-08": (0, 0.0, 1, 0),  # o8 cancelled (latest version): active, not an order
        "2026-01-10": (0, 0.0, 1, 1),
        "2026-01-12": (0, 0.0, 1, 1),  # ev08 twice = one event
        "2026-01-14": (0, 0.0, 1, 0),  # o3 cancelled
        "2026-01-15": (1, 50.5, 1, 0),  # o2 (duplicate once)
        "2026-01-18": (0, 0.0, 1, 1),
        "2026-01-19": (0, 0.0, 1, 0),  # ev12 has no session
        # o5 20.0 + o7 40.0 (no customer) = 60.0; active c1, c2; sessions s8 s20 s30.
        "2026-01-20": (2, 60.0, 2, 3),
    }
    days = [date.fromordinal(date(2025, 12, 28).toordinal() + i) for i in range(24)]
    rows = [(day, *active.get(day.isoformat(), (0, 0.0, 0, 0)), AS_OF) for day in days]
    expected = spark.createDataFrame(
        rows,
        "day date, orders long, revenue_eur double, active_customers long, sessions long, "
        "as_of date",
    )
    assertDataFrameEqual(build_kpi_daily(silver["events"], silver["orders"], AS_OF), expected)


def test_kpi_channel_daily(spark, silver):
    # touchpoints per day and channel (ev30 anonymous included); consented touchpoints are
    # those of the customers passed in (ev30 is not one); conversions = converted journeys by
    # their last touch: j1 ev06 social 01-05 (100.0), j2 ev08 email 01-12 (50.5), c2 ev20
    # search 01-20 (20.0). The rate divides by consented touchpoints only.
    expected = spark.createDataFrame(
        [
            (d("2025-12-28"), "search", 1, 1, 0, 0.0, 0.0),
            (d("2025-12-29"), "display", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-02"), "social", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-03"), "email", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-03"), "search", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-05"), "social", 1, 1, 1, 1.0, 100.0),
            (d("2026-01-10"), "affiliate", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-12"), "email", 1, 1, 1, 1.0, 50.5),
            (d("2026-01-18"), "search", 1, 1, 0, 0.0, 0.0),
            (d("2026-01-20"), "display", 1, 1, 0, 0.0, 0.0),
            # ev20 (c2) + ev30 (anonymous) = 2 touchpoints, 1 consented, 1 conversion -> 1.0.
            (d("2026-01-20"), "search", 2, 1, 1, 1.0, 20.0),
        ],
        "day date, channel string, touchpoints long, consented_touchpoints long, "
        "conversions long, conversion_rate double, revenue_eur double",
    ).selectExpr("*", "DATE'2026-01-20' AS as_of")
    actual = build_kpi_channel_daily(
        silver["events"], silver["orders"], silver["customers"], AS_OF, lookback_days=LOOKBACK
    )
    assertDataFrameEqual(actual, expected)
    # Without c2 among the customers (no consent), its touch and its conversion leave the rate
    # together; the anonymous visitor's touch never counted in it.
    without_c2 = build_kpi_channel_daily(
        silver["events"], silver["orders"], silver["customers"].where("customer_key != 'c2'"),
        AS_OF, lookback_days=LOOKBACK,
    ).where("day = DATE'2026-01-20' AND channel = 'search'").first()
    assert (without_c2["touchpoints"], without_c2["consented_touchpoints"],
            without_c2["conversions"], without_c2["conversion_rate"]) == (2, 0, 0, None)


# -- determinism and time ------------------------------------------------------------------------
def test_same_as_of_same_answer_whatever_the_partitioning(silver):
    # The same rows spread differently over partitions (and in reverse order) give identical
    # journeys: no clock, no dependence on collect_list order (customer_360's keywords use the
    # same sort_array pattern, its money the same exact sums). run_gold twice is tested too.
    shuffled = {
        name: df.orderBy(df.columns[0], ascending=False).repartition(3)
        for name, df in silver.items()
    }
    assertDataFrameEqual(journeys(shuffled), journeys(silver))


def test_utc_day_and_cutoff_do_not_depend_on_the_session_time_zone(spark):
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        row = (
            spark.createDataFrame([(ts("2026-01-20 23:30"),)], "t timestamp")
            .select(utc_day("t").alias("day"), (as_of_cutoff(AS_OF) > F.col("t")).alias("counts"))
            .first()
        )
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert (row["day"], row["counts"]) == (AS_OF, True)


def test_activity_days_come_from_the_data(silver):
    # First event ev01 2025-12-28 10:00 (orders start 2026-01-05); latest event day ev11
    # 2026-01-21 01:00, latest order day o4 2026-01-25.
    assert activity_days(silver["events"], silver["orders"]) == (d("2025-12-28"),
                                                                 d("2026-01-25"))


def test_inputs_deduplicated_once_give_the_same_tables(silver):
    # run_gold sorts each silver table once (deduplicated_once) and the builders then only
    # select from it; the hand-worked tables above come from the raw inputs, duplicates and
    # all, so equal results mean the shortcut keeps every rule.
    from lakehouse.gold import SILVER_KEYS, deduplicated_once

    table = {"social": "social_posts", "iot": "iot_readings"}
    once = {
        name: deduplicated_once(df, *SILVER_KEYS[table.get(name, name)])
        for name, df in silver.items()
    }
    assertDataFrameEqual(c360(once), c360(silver))
    assertDataFrameEqual(journeys(once), journeys(silver))
    assertDataFrameEqual(build_kpi_daily(once["events"], once["orders"], AS_OF),
                         build_kpi_daily(silver["events"], silver["orders"], AS_OF))
    assertDataFrameEqual(
        build_kpi_channel_daily(once["events"], once["orders"], once["customers"], AS_OF),
        build_kpi_channel_daily(silver["events"], silver["orders"], silver["customers"], AS_OF),
    )


def test_only_the_deduplicated_frame_itself_skips_deduplication(silver):
    from lakehouse.gold import deduplicated_once, latest_rows

    events = silver["events"]
    once = deduplicated_once(events, "event_id")
    distinct_ids = events.select("event_id").distinct().count()
    assert latest_rows(once, "event_id", ["event_ts"]).count() == distinct_ids
    # Anything built on it is a new DataFrame: a duplicate added later is still removed.
    again = once.unionByName(events)
    assert latest_rows(again, "event_id", ["event_ts"]).count() == distinct_ids
    # Another key or another version order is not taken as already deduplicated.
    by_session = latest_rows(once, "session_id", ["event_id"]).count()
    assert by_session == latest_rows(events, "session_id", ["event_id"]).count() < distinct_ids


def test_the_look_back_is_whole_days_of_24_hours_across_a_daylight_saving_change(spark):
    """Europe/Berlin moves its clocks on 2026-03-29 and 2026-10-25: a notebook session in that
    zone must cut the same journeys as UTC (timestamp minus a day interval counted days on the
    session's wall clock: a 23 h or 25 h window)."""
    customers = spark.createDataFrame([
        (k, None, None, None, "DE", d("2025-01-01"), True, None, ts("2025-01-01"), 1, "r")
        for k in ("a", "m", "q")
    ], CUSTOMERS_SCHEMA)
    orders = spark.createDataFrame(
        [("oa", "a", ts("2026-03-29 10:00"), 10.0, "EUR", 10.0, "completed", 1, 1, "r")],
        ORDERS_SCHEMA)

    def event(event_id, when, key, channel):
        return (event_id, ts(when), "k", key, "s", "/", "page_view", channel, None, 1, "r")

    events = spark.createDataFrame([
        event("a1", "2026-03-28 10:00", "a", "email"),   # exactly 24 h before the order: in
        event("m1", "2026-03-29 00:30", "m", "email"),   # on the as_of day, open journey: in
        event("q1", "2026-10-24 23:30", "q", "email"),   # the day before the window: out
        event("q2", "2026-10-25 12:00", "q", "search"),
    ], EVENTS_SCHEMA)

    def cut():
        spring = build_journeys(events, orders, customers, d("2026-03-29"), lookback_days=1, key=DEV_KEY)
        autumn = build_journeys(events, orders, customers, d("2026-10-25"), lookback_days=1, key=DEV_KEY)
        return ({r["customer_key"]: list(r["channels"]) for r in spring.collect()},
                {r["customer_key"]: list(r["channels"]) for r in autumn.collect()})

    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Europe/Berlin")
    try:
        in_berlin = cut()
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    expected_spring = {"a": ["email"], "m": ["email"]}
    assert in_berlin[0] == expected_spring
    assert in_berlin[1]["q"] == ["search"]
    assert cut()[0] == expected_spring


def test_a_tie_between_two_versions_keeps_the_same_row_for_every_builder(spark):
    """A customer and an event delivered twice with the same version (and updated_at) but other
    contents: silver never holds that, and gold's guard must still keep one row, the same in
    every builder. The documented rule breaks the tie on the other columns in the frame's order,
    ascending: customer t1's row with country AT (before DE), which consents; event te1's row
    with session sa (before sb), whose channel is social. (Cut to their own columns first, the
    builders disagreed: consenting_customers kept the DE row, which does not consent, and
    journeys kept the email row.)"""
    from lakehouse.gold import SILVER_KEYS, consenting_customers, deduplicated_once

    profile = ("e", "p", "h")
    customers = spark.createDataFrame([
        ("t1", *profile, "DE", d("2026-01-01"), False, None, ts("2026-01-01"), 1, "r"),
        ("t1", *profile, "AT", d("2026-01-01"), True, None, ts("2026-01-01"), 1, "r"),
    ], CUSTOMERS_SCHEMA)
    events = spark.createDataFrame([
        ev("te1", "2026-01-19 10:00", "t1", "sb", "page_view", "email"),
        ev("te1", "2026-01-19 10:00", "t1", "sa", "page_view", "social"),
    ], EVENTS_SCHEMA)
    orders = spark.createDataFrame([
        ("to1", "t1", ts("2026-01-19 11:00"), 10.0, "EUR", 10.0, "completed", 1, 1, "r"),
    ], ORDERS_SCHEMA)
    raw = {"customers": customers, "events": events, "orders": orders,
           "social": spark.createDataFrame([], SOCIAL_SCHEMA),
           "iot": spark.createDataFrame([], IOT_SCHEMA)}
    table = {"social": "social_posts", "iot": "iot_readings"}
    once = {name: deduplicated_once(df, *SILVER_KEYS[table.get(name, name)])
            for name, df in raw.items()}

    for inputs in (raw, once):
        assert [r[0] for r in consenting_customers(inputs["customers"]).collect()] == ["t1"]
        profile_row = c360(inputs).select("country", "marketing_consent").collect()
        assert [tuple(r) for r in profile_row] == [("AT", True)]
        built = build_journeys(inputs["events"], inputs["orders"],
                               consenting_customers(inputs["customers"]), AS_OF, key=DEV_KEY)
        assert [(r["channels"], r["order_id"]) for r in built.collect()] == [(["social"], "to1")]


def test_a_completed_order_without_an_order_id_is_no_conversion(spark):
    """Silver drops a row without its natural key; a frame handed to the builders may hold one.
    Such an order cannot name a journey: t2's touches stay one open journey (one journey_id,
    not two rows under the open journey's id) and no channel gets a conversion for it."""
    customers = spark.createDataFrame([
        ("t2", "e", None, None, "AT", d("2026-01-01"), True, None, ts("2026-01-01"), 1, "r"),
    ], CUSTOMERS_SCHEMA)
    events = spark.createDataFrame([
        ev("tf1", "2026-01-18 10:00", "t2", "s1", "page_view", "search"),
        ev("tf2", "2026-01-19 10:00", "t2", "s2", "page_view", "email"),
    ], EVENTS_SCHEMA)
    orders = spark.createDataFrame([
        (None, "t2", ts("2026-01-18 11:00"), 10.0, "EUR", 10.0, "completed", 1, 1, "r"),
    ], ORDERS_SCHEMA)
    built = build_journeys(events, orders, customers, AS_OF, lookback_days=LOOKBACK, key=DEV_KEY)
    assert [(r["journey_id"], r["channels"], r["converted"]) for r in built.collect()] == [
        (jid("t2", None), ["search", "email"], False)
    ]
    kpis = build_kpi_channel_daily(events, orders, customers, AS_OF, lookback_days=LOOKBACK)
    assert kpis.agg(F.sum("conversions")).first()[0] == 0


# -- a browser several customers logged in on -----------------------------------------------
def test_a_shared_browsers_visits_go_to_the_customer_who_logged_in_next(spark):
    """Browser k1: c1 logs in on 01-05, c2 on 01-10 and 01-12, c3 only after as_of. Silver
    looked every anonymous event of k1 up to its first owner, c1. By hand: the 01-04 visit is
    c1's (c1 logs in next), 01-08 and 01-11 are c2's (c2 logs in next), 01-15 is c2's (the last
    login before it; c3's of 01-25 is not known on as_of). Browser k2 had one customer: its
    looked-up event keeps it. On k4, c2's login and a visit at the same instant: the login is
    the visit's next one (c1's of 01-08 is not), whatever their event ids. Events that name
    their customer, a key not known to be looked up (null, a table written before the flag)
    and an event of no browser keep theirs."""
    from lakehouse.gold import attribute_shared_browsers

    schema = ("event_id string, customer_key string, event_ts timestamp, cookie_id string, "
              "_key_looked_up boolean")
    rows = [
        ("a1", "c1", ts("2026-01-04 09:00"), "k1", True),
        ("a2", "c1", ts("2026-01-05 09:00"), "k1", False),
        ("a3", "c1", ts("2026-01-08 09:00"), "k1", True),
        ("a4", "c2", ts("2026-01-10 09:00"), "k1", False),
        ("a5", "c1", ts("2026-01-11 09:00"), "k1", True),
        # At the instant of c2's second login, ordered after it by event_id: c2 logged in last.
        ("a7", "c1", ts("2026-01-12 09:00"), "k1", True),
        ("a6", "c2", ts("2026-01-12 09:00"), "k1", False),
        ("a8", "c1", ts("2026-01-15 09:00"), "k1", True),
        ("a9", "c1", ts("2026-01-16 09:00"), "k1", None),
        ("a10", "c3", ts("2026-01-25 09:00"), "k1", False),
        ("a11", "c1", ts("2026-01-26 09:00"), "k1", True),
        ("b1", "c4", ts("2026-01-03 09:00"), "k2", True),
        ("b2", "c4", ts("2026-01-04 09:00"), "k2", False),
        ("b3", "c5", ts("2026-01-04 10:00"), "k2", True),
        ("n1", None, ts("2026-01-04 09:00"), "k3", None),
        ("d0", "c1", ts("2026-01-02 09:00"), "k4", False),
        ("d1", "c2", ts("2026-01-05 10:00"), "k4", False),
        ("d9", "c1", ts("2026-01-05 10:00"), "k4", True),
        ("d5", "c1", ts("2026-01-08 10:00"), "k4", False),
        ("x1", "c1", ts("2026-01-04 09:00"), None, True),
    ]
    expected = {"a1": "c1", "a2": "c1", "a3": "c2", "a4": "c2", "a5": "c2", "a6": "c2",
                "a7": "c2", "a8": "c2", "a9": "c1", "a10": "c3",
                # After as_of; counted by no figure. c2 logged in last up to as_of.
                "a11": "c2",
                "b1": "c4", "b2": "c4", "b3": "c5", "n1": None, "x1": "c1",
                "d0": "c1", "d1": "c2", "d9": "c2", "d5": "c1"}
    events = spark.createDataFrame(rows, schema)
    given = attribute_shared_browsers(events, AS_OF)
    assert given.columns == events.columns
    assert {r["event_id"]: r["customer_key"] for r in given.collect()} == expected
    # Nothing else about an event changes.
    assertDataFrameEqual(given.drop("customer_key"), events.drop("customer_key"))
