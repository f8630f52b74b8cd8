"""A browser or device that two customers share: erasing one keeps the other's records.

Ann (C0000111) and Bea (C0000274) share the family browser ck-family-01 and the household's
thermostat dv-home-7. Erasing Ann deletes every row of hers, anonymous rows on their shared
browser included, and keeps Bea's logged-in rows on it, in bronze, silver, the quarantine and
the raw file alike, and bronze lands Bea's later rows. A row stays Ann's (and goes) when it
names nobody (whatever the whitespace), names Ann in another case, holds one of Ann's own
identifiers anywhere in its line, or is another version of a record of Ann's. Small
hand-built frames; the expected rows are written out by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import json

from pyspark.sql import functions as F

from lakehouse.privacy.erasure import (
    SharedDeviceRows,
    Subject,
    kept_on_shared_device,
    keyed_hash,
    raw_patterns,
    read_raw_lines,
    subject_frame,
    subject_rows,
    without_subject_lines,
)
from lakehouse.privacy.suppression import identifier_hashes, with_suppressed_flag

KEY = b"shared-device-test-key"
ANN_KEY, BEA_KEY = keyed_hash(KEY, "crm", "C0000111"), keyed_hash(KEY, "crm", "C0000274")
ANN = Subject(customer_ids=frozenset({"C0000111"}), customer_keys=frozenset({ANN_KEY}),
              cookies=frozenset({"ck-family-01"}), devices=frozenset({"dv-home-7"}),
              emails=frozenset({"ann@example.com"}), order_ids=frozenset({"O-ANN-0001"}),
              handles=frozenset({"@annie_h"}), names=frozenset({("ann", "smith")}),
              phones=frozenset({"+49 30 12345678"}))
BRONZE = "event_id string, customer_id string, cookie_id string, page string, _raw string"


def _line(event_id, customer_id, cookie_id, page="/home"):
    return json.dumps({"event_id": event_id, "cookie_id": cookie_id,
                       "customer_id": customer_id, "page": page}, ensure_ascii=False)


def _row(event_id, customer_id, cookie_id="ck-family-01", page="/home"):
    return (event_id, customer_id, cookie_id, page, _line(event_id, customer_id, cookie_id, page))


BRONZE_ROWS = [
    _row("e01", "C0000111"),                      # Ann logged in: hers
    _row("e02", None),                            # anonymous on her browser: hers
    _row("e03", " "), _row("e04", "\t"), _row("e05", "\u00a0"), _row("e06", "\u3000"),
    _row("e07", "c0000111"),                      # Ann, in another case
    _row("e08", "C0000274", page="/announcements/smithsonian"),  # Bea on it: kept
    _row("e09", "C0000274", page="/account?email=ann@example.com"),  # Ann's email: goes
    _row("e10", "C0000274", page="/orders/O-ANN-0001"),              # Ann's order: goes
    _row("e11", "C0000274"), _row("e11", "C0000111"),  # one record, a version of Ann's
    _row(None, "C0000274"),                       # no natural key: cannot be told apart
    _row(" e12 ", "C0000274"),                    # Bea, key with spaces (silver trims it)
    _row("e13", "C0000274", cookie_id="ck-bea-02"),  # Bea on her own browser: not matched
    _row("e14", "C0000111", cookie_id="ck-bea-02"),  # Ann on Bea's browser: hers
    # Placeholders name nobody (silver knows no such customer): Ann's anonymous events.
    _row("e15", "undefined"), _row("e16", "guest"), _row("e17", "C0000111\u200b"),
    _row("e18", "\uff230000111"),
    # Ann's identifiers URL-encoded, or a text that does not decode: hers.
    _row("e19", "C0000274", page="/share?to=ANN%40example.com"),
    _row("e20", "C0000274", page="/u/%40annie_h"), _row("e21", "C0000274", page="/x?%zz"),
    # JSON-escaped in the line: the parsed page column holds Ann's email in clear.
    ("e22", "C0000274", "ck-family-01", "/account?email=ann@example.com",
     _line("e22", "C0000274", "ck-family-01", "/x").replace('"/x"', '"/account?email=ann\\u0040example.com"')),
    # Encoded twice, inside a longer word, her name or her phone in any form: hers.
    _row("e23", "C0000274", page="/go?next=%2Faccount%3Femail%3Dann%2540example.com"),
    _row("e24", "C0000274", page="/files/O-ANN-0001_invoice.pdf"),
    _row("e25", "C0000274", page="/u/C0000111_profile"),
    _row("e26", "C0000274", page="/gift?to=Ann+Smith"), _row("e27", "C0000274", page="/x?n=Smith,%20Ann"),
    _row("e28", "C0000274", page="/call?phone=030%2F1234-5678"),
    # A tracking tag's hashed email, an '@' as an HTML entity or "(at)", an escape left after
    # three decodings, a middle name: hers.
    _row("e29", "C0000274", page="/px?em=" + hashlib.sha256(b"ann@example.com").hexdigest()),
    _row("e30", "C0000274", page="/share?to=ann&#64;example.com"),
    _row("e31", "C0000274", page="/share?to=ann(at)example.com"),
    _row("e32", "C0000274", page="/share?to=ann%25252540example.com"),
    _row("e33", "C0000274", page="/gift?to=Ann%20B.%20Smith"),
]
ERASED = [None, "e01", "e02", "e03", "e04", "e05", "e06", "e07", "e09", "e10", "e11", "e11",
          "e14", "e15", "e16", "e17", "e18", "e19", "e20", "e21", "e22", "e23", "e24", "e25",
          "e26", "e27", "e28", "e29", "e30", "e31", "e32", "e33"]


def _known(spark):
    """silver.customers' keys: Bea's and Ann's (the erasure runs while Ann is still there)."""
    return spark.createDataFrame([(BEA_KEY,), (ANN_KEY,)], "customer_key string")


def _kept(spark, subject=ANN):
    bronze = spark.createDataFrame(BRONZE_ROWS, BRONZE)
    kept = kept_on_shared_device(bronze, subject_frame(spark, subject), "event_id", subject,
                                 KEY, _known(spark))
    return bronze, kept


def _ids(df, column):
    return sorted((r[0] for r in df.select(f"t.{column}").collect()), key=str)


def test_only_bea_s_own_rows_on_the_shared_browser_are_kept_in_bronze(spark):
    bronze, kept = _kept(spark)
    assert kept.keys == {"event_id": frozenset({"e08", " e12 ", "e12"})}
    assert kept.lines == {_line("e08", "C0000274", "ck-family-01",
                                "/announcements/smithsonian").encode(),
                          _line(" e12 ", "C0000274", "ck-family-01").encode()}
    erased = subject_rows(bronze, subject_frame(spark, ANN, kept))
    assert _ids(erased, "event_id") == ERASED
    assert kept.another_customer
    e22 = next(r[4] for r in BRONZE_ROWS if r[0] == "e22")
    assert e22.count("\\u0040") == 1  # the line itself hides the email


def test_ann_resolved_by_key_only_keeps_nothing_of_hers(spark):
    by_key = Subject(customer_keys=ANN.customer_keys, cookies=ANN.cookies, emails=ANN.emails)
    bronze, kept = _kept(spark, by_key)
    # Ann's logged-in row (e01) is hers by key. Rows holding only identifiers this subject
    # lacks (order id, handle, customer id, name, phone) are Bea's as far as it can tell, and
    # e14 (Ann's id on Bea's browser) is not found at all.
    lacking = {"e10", "e20", "e24", "e25", "e26", "e27", "e28", "e33"}
    assert kept.keys == {"event_id": frozenset({"e08", " e12 ", "e12"} | lacking)}
    erased = _ids(subject_rows(bronze, subject_frame(spark, by_key, kept)), "event_id")
    assert erased == [e for e in ERASED if e not in lacking | {"e14"}]


def test_silver_quarantine_identity_and_device_rows_follow_bronze(spark):
    _, kept = _kept(spark)
    source_df = subject_frame(spark, ANN, kept)
    silver = spark.createDataFrame([
        ("e01", ANN_KEY, "ck-family-01", False),
        ("e02", BEA_KEY, "ck-family-01", True),   # looked up: proves nothing, goes
        ("e03", None, "ck-family-01", True),
        ("e08", BEA_KEY, "ck-family-01", False),  # kept in bronze: kept
        ("e09", BEA_KEY, "ck-family-01", False),  # gone from bronze: goes
        ("e11", BEA_KEY, "ck-family-01", False),  # a version of Ann's: goes
        ("e12", BEA_KEY, "ck-family-01", False),  # silver's trimmed key of a kept row
        ("e13", BEA_KEY, "ck-bea-02", False),
    ], "event_id string, customer_key string, cookie_id string, _key_looked_up boolean")
    assert _ids(subject_rows(silver, source_df), "event_id") == [
        "e01", "e02", "e03", "e09", "e11"]

    quarantine = spark.createDataFrame(
        [("clickstream", r[0], "some_rule", r[4]) for r in BRONZE_ROWS],
        "source string, natural_key string, rule string, raw string")
    assert _ids(subject_rows(quarantine, source_df), "natural_key") == ERASED

    identity = spark.createDataFrame([
        (ANN_KEY, "cookie", "ck-family-01"), (BEA_KEY, "cookie", "ck-family-01"),
        (BEA_KEY, "cookie", "ck-bea-02"), (BEA_KEY, "device", "dv-home-7"),
    ], "customer_key string, id_type string, id_value string")
    # Links to Ann's browser and device go, Bea's too (nothing there to tell whose they are).
    assert sorted((r[0], r[1]) for r in subject_rows(identity, source_df)
                  .select("t.customer_key", "t.id_value").collect()) == [
        (ANN_KEY, "ck-family-01"), (BEA_KEY, "ck-family-01"), (BEA_KEY, "dv-home-7")]


def test_thermostat_readings_of_another_customer_are_kept(spark):
    readings = spark.createDataFrame([
        ("r1", "dv-home-7", "C0000274", "r1,dv-home-7,C0000274"),
        ("r2", "dv-home-7", None, "r2,dv-home-7,"),
        ("r3", "dv-home-7", "C0000111", "r3,dv-home-7,C0000111"),
        ("r4", "dv-other", "C0000274", "r4,dv-other,C0000274"),
    ], "reading_id string, device_id string, customer_id string, _raw string")
    kept = kept_on_shared_device(readings, subject_frame(spark, ANN), "reading_id", ANN, KEY,
                                 _known(spark))
    assert _ids(subject_rows(readings, subject_frame(spark, ANN, kept)), "reading_id") == [
        "r2", "r3"]


def test_a_device_with_many_kept_readings_keeps_exactly_those(spark):
    """A thermostat reporting under Bea's id every minute: many kept readings, looked up in
    hash buckets (one list read whole for every reading cost readings x kept readings). The
    kept ones are every third minute of 600 and carry their line as landed; a kept reading id
    with another line (a second version) and a reading without id still go."""
    minutes = [f"m{i:04d}" for i in range(600)]
    lines = {m: f"{m},dv-home-7,C0000274" for m in minutes}
    readings = spark.createDataFrame(
        [(m, "dv-home-7", "C0000274", lines[m]) for m in minutes]
        + [("m0003", "dv-home-7", "C0000274", "m0003,dv-home-7,C0000274,v2"),
           (None, "dv-home-7", "C0000274", ",dv-home-7,C0000274")],
        "reading_id string, device_id string, customer_id string, _raw string")
    kept_minutes = set(minutes[::3])
    kept = SharedDeviceRows({"reading_id": frozenset(kept_minutes)},
                            frozenset(lines[m].encode() for m in kept_minutes))
    erased = subject_rows(readings, subject_frame(spark, ANN, kept))
    expected = sorted(set(minutes) - kept_minutes) + ["m0003"]
    assert sorted(r[0] for r in erased.select("t.reading_id").collect() if r[0]) == sorted(expected)
    assert erased.where(F.col("t.reading_id").isNull()).count() == 1


def test_without_kept_rows_every_row_on_the_device_goes(spark):
    bronze = spark.createDataFrame(BRONZE_ROWS, BRONZE)
    erased = subject_rows(bronze, subject_frame(spark, ANN, SharedDeviceRows()))
    assert erased.count() == len(BRONZE_ROWS) - 1  # all but e13
    # Without silver's customers nobody is known: nothing is kept.
    none_known = kept_on_shared_device(bronze, subject_frame(spark, ANN), "event_id", ANN, KEY,
                                       spark.createDataFrame([], "customer_key string"))
    assert (none_known.keys, none_known.lines, none_known.another_customer) == (
        {}, frozenset(), False)
    # Bea on the browser only with Ann's data in her rows: nothing kept, yet she is there
    # (gold may have given her the browser's anonymous visits).
    tainted = bronze.where(F.col("event_id").isin("e02", "e09", "e10"))
    only_tainted = kept_on_shared_device(tainted, subject_frame(spark, ANN), "event_id", ANN,
                                         KEY, _known(spark))
    assert (only_tainted.keys, only_tainted.another_customer) == ({}, True)
    anonymous = kept_on_shared_device(bronze.where(F.col("event_id") == "e02"),
                                      subject_frame(spark, ANN), "event_id", ANN, KEY,
                                      _known(spark))
    assert not anonymous.another_customer


def test_the_erasure_rebuilds_the_customer_tables_when_another_customer_used_the_browser(
    spark, config
):
    """c1's browser k1: c3 logged in after an anonymous visit (e6, from an email), which gold
    gave to c3. Erasing c1 deletes e6 from silver; c3's page views and journey still counted
    it. rebuild_gold_aggregates rebuilds customer_360 and journeys when told to (the erasure
    does when a row on the person's browser names another customer), and leaves them
    otherwise."""
    from datetime import date

    from goldlib import SILVER, with_a_shared_browser, write_silver

    from lakehouse.catalog import Catalog
    from lakehouse.gold import run_gold
    from lakehouse.privacy.erasure import rebuild_gold_aggregates

    catalog = Catalog(config)
    write_silver(spark, catalog, with_a_shared_browser(SILVER))
    run_gold(spark, config, "run-1", date(2026, 1, 2))

    def c3():
        views = {r["customer_key"]: r["page_views"]
                 for r in catalog.read(spark, "gold.customer_360").collect()}["c3"]
        channels = {r["order_id"]: r["channels"]
                    for r in catalog.read(spark, "gold.journeys").collect()}["o5"]
        return views, channels

    assert c3() == (1, ["email"])
    # The erasure of c1 as far as silver.events goes: c1's events and the anonymous one.
    events = catalog.delta_table(spark, "silver.events")
    events.delete("cookie_id = 'k1' AND (customer_key = 'c1')")
    rebuild_gold_aggregates(spark, config, "r1", lambda _line: None)
    assert c3() == (1, ["email"]), "only the KPI tables"
    rebuilt = rebuild_gold_aggregates(spark, config, "r2", lambda _line: None,
                                      with_customer_tables=True)
    assert set(rebuilt) == {"gold.kpi_daily", "gold.kpi_channel_daily", "gold.customer_360",
                            "gold.journeys"}
    assert c3() == (0, [])


def test_raw_file_and_bronze_keep_the_same_lines_as_delivered(spark, tmp_path):
    """Bronze holds a line as Spark's text reader gave it (a byte that is not UTF-8 stays a
    byte); the raw file keeps exactly the lines of the bronze rows kept, byte for byte."""
    bea = [_line(f"f{i}", "C0000274", "ck-family-01") for i in range(1, 6)]
    delivered = [bea[0].encode() + b"\r\n",                                  # CRLF
                 bea[1].replace("/home", "/caf\u00e9").encode("latin-1") + b"\n",  # not UTF-8
                 _line("f9", "C0000111", "ck-family-01").encode() + b"\n",   # Ann
                 _line("f8", None, "ck-family-01").encode() + b"\r",         # anonymous
                 bea[2].encode() + b"\r\n", bea[4].encode()]
    not_landed = bea[3].encode() + b"\n"  # delivered after bronze ran: cannot be told apart
    for name, data in (("p.jsonl", b"".join(delivered)),
                       ("g.jsonl.gz", gzip.compress(b"".join(delivered)))):
        path = tmp_path / name
        path.write_bytes(data)
        bronze = spark.read.text(str(path)).select(
            F.col("value").alias("_raw"),
            *[F.get_json_object("value", f"$.{c}").alias(c)
              for c in ("event_id", "customer_id", "cookie_id", "page")])
        kept = kept_on_shared_device(bronze, subject_frame(spark, ANN), "event_id", ANN, KEY,
                                     _known(spark))
        assert kept.keys == {"event_id": frozenset({"f1", "f2", "f3", "f5"})}, name
        erased = subject_rows(bronze, subject_frame(spark, ANN, kept))
        assert _ids(erased, "event_id") == ["f8", "f9"], name
        lines = read_raw_lines(path) + [not_landed]
        kept_lines, removed = without_subject_lines(lines, *raw_patterns(ANN), kept.lines)
        assert removed == 3, name
        assert kept_lines == [delivered[0], delivered[1], delivered[4], delivered[5]], name


def test_a_byte_order_mark_does_not_tell_a_line_apart():
    line = _line("f1", "C0000274", "ck-family-01").encode()
    kept, removed = without_subject_lines([b"\xef\xbb\xbf" + line + b"\r\n"],
                                          *raw_patterns(ANN), frozenset({line}))
    assert removed == 0 and kept == [b"\xef\xbb\xbf" + line + b"\r\n"]


def test_bronze_still_refuses_every_later_row_on_the_shared_browser(spark):
    """Kept rows stay; new ones on the person's browser or device are refused, Bea's too:
    after the erasure only keyed hashes of the person are left, which cannot find them in a
    free text (Bea's page holding Ann's email)."""
    listed = spark.createDataFrame(sorted(identifier_hashes(KEY, ANN)),
                                   "id_kind string, id_hash string")
    delivered = spark.createDataFrame([
        _row("n01", "C0000274"), _row("n02", None),
        _row("n03", "C0000274", page="/account?email=ann@example.com"),
        _row("n04", "C0000274", cookie_id="ck-bea-02"),  # Bea on her own browser: lands
        _row("n05", "C0000111", cookie_id="ck-bea-02"),  # Ann elsewhere: refused
    ], BRONZE)
    flagged = with_suppressed_flag(delivered, ["customer_id", "cookie_id"], listed, KEY)
    assert sorted(r[0] for r in flagged.where("_suppressed").select("event_id").collect()) == [
        "n01", "n02", "n03", "n05"]
