"""Hand-built silver tables for the gold tests (tests/test_gold_run.py) and the erasure's gold
rebuild (tests/test_erasure_shared_device.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from lakehouse.catalog import Catalog


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SILVER = {
    "customers": (
        "customer_key string, email_pseudonym string, phone_pseudonym string, "
        "handle_pseudonym string, country string, signup_date date, marketing_consent boolean, "
        "data_expiry_date date, updated_at timestamp, _bronze_version long, _run_id string",
        [
            ("c1", "e1", None, "h1", "DE", date(2025, 12, 1), True, None, ts("2025-12-01"), 1, "r"),
            ("c1", "e1", None, "h1", "DE", date(2025, 12, 1), True, None, ts("2025-12-01"), 1, "r"),
            ("c2", "e2", None, None, None, date(2025, 12, 5), False, None, ts("2025-12-05"), 1, "r"),
        ],
    ),
    "events": (
        "event_id string, event_ts timestamp, cookie_id string, customer_key string, "
        "session_id string, page string, event_type string, channel string, campaign string, "
        "_bronze_version long, _run_id string",
        [
            ("e1", ts("2026-01-01 10:00"), "k1", "c1", "s1", "/", "page_view", "search", None, 1, "r"),
            ("e2", ts("2026-01-02 09:00"), "k1", "c1", "s2", "/", "page_view", "email", None, 1, "r"),
            ("e3", ts("2026-01-02 11:00"), "k9", None, "s3", "/", "page_view", "search", None, 1, "r"),
        ],
    ),
    "orders": (
        "order_id string, customer_key string, order_ts timestamp, amount double, "
        "currency string, amount_eur double, status string, n_items int, _bronze_version long, "
        "_run_id string",
        [
            ("o1", "c1", ts("2026-01-01 12:00"), 10.0, "EUR", 10.0, "completed", 1, 1, "r"),
            ("o2", "c2", ts("2026-01-02 12:00"), 5.0, "EUR", 5.0, "cancelled", 1, 1, "r"),
        ],
    ),
    "social_posts": (
        "post_id string, handle_pseudonym string, customer_key string, post_ts timestamp, "
        "text string, keywords array<string>, likes int, shares int, _bronze_version long, "
        "_run_id string",
        [("p1", "h1", "c1", ts("2026-01-01 08:00"), "t", ["tea"], 2, 0, 1, "r")],
    ),
    "iot_readings": (
        "reading_id string, device_id string, customer_key string, reading_ts timestamp, "
        "temperature double, vibration double, battery double, error_code string, "
        "_bronze_version long, _run_id string",
        [("r1", "d1", "c2", ts("2026-01-01 08:00"), 20.0, 0.1, 60.0, None, 1, "r")],
    ),
}


def write_silver(spark, catalog: Catalog, tables: dict) -> None:
    """The silver tables of ``tables`` (name -> (schema, rows)) as Delta tables of the lake."""
    for name, (schema, rows) in tables.items():
        spark.createDataFrame(rows, schema).write.format("delta").save(
            catalog.path(f"silver.{name}"))


def with_a_shared_browser(tables: dict) -> dict:
    """``tables`` (SILVER) with browser k1 shared: c1 logged in on it first (e1, e2), then an
    anonymous visit from an email (e6, which silver looked up to c1), then c3 logs in (e7) and
    orders (o5). c3 has marketing consent. Events carry _key_looked_up as silver writes it."""
    silver = dict(tables)
    schema, rows = tables["customers"]
    silver["customers"] = (schema, [*rows, ("c3", "e3", None, None, "FR", date(2025, 12, 1),
                                            True, None, ts("2025-12-01"), 1, "r")])
    schema, rows = tables["events"]
    silver["events"] = (f"{schema}, _key_looked_up boolean", [
        *[(*row, row[3] is None) for row in rows],
        ("e6", ts("2026-01-02 08:00"), "k1", "c1", "s6", "/", "page_view", "email", None, 1, "r",
         True),
        ("e7", ts("2026-01-02 08:05"), "k1", "c3", "s6", "/", "login", None, None, 1, "r", False),
    ])
    schema, rows = tables["orders"]
    silver["orders"] = (schema, [*rows, ("o5", "c3", ts("2026-01-02 12:00"), 7.0, "EUR", 7.0,
                                         "completed", 1, 1, "r")])
    return silver
