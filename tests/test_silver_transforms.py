"""Silver transforms on hand-built DataFrames (each with a null and a duplicate)."""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.silver.cleanse import filter_latest_per_key, with_typed_columns
from lakehouse.silver.identity import map_rows_matching, resolve_identity, with_resolved_customer
from lakehouse.silver.transforms import Reference, keywords, with_amount_eur, with_customer_identity
from lakehouse.sources import SourceSpec

REF = Reference(
    country_codes=("DE", "GB", "US"),
    country_names={"germany": "DE", "united kingdom": "GB"},
    calling_codes={"DE": "49", "GB": "44"},
    eur_rates={"EUR": 1.0, "USD": 1.25},
    keywords=("garden", "books"),
)
SOURCE = SourceSpec(
    "t", "json", "t", ("id",), "ts", ("email",),
    {"id": "string", "ts": "timestamp", "n": "int", "x": "double", "d": "date", "ok": "boolean",
     "email": "string"},
)
ROW = "id string, ts string, n string, x string, d string, ok string, email string"


def test_typed_columns_convert_or_say_why(spark):
    bronze = spark.createDataFrame(
        [
            (" a ", "2026-01-03T11:15:00+01:00", "3", "1.5", "2026-01-02", "true", " A@B.c "),
            ("a", "2026-01-03T10:15:00Z", "3", "1.5", "2026-01-02", "true", "A@B.c"),  # dup
            ("b", "yesterday", "two", "12,50", "2026-02-30", "maybe", "not-pii-shown"),
            ("c", None, "", "NaN", "2026", None, None),
        ],
        ROW,
    )
    got = with_typed_columns(bronze, SOURCE).select(
        "id", "ts", "n", "x", "d", "ok", "_cast_errors"
    )
    ts = datetime(2026, 1, 3, 10, 15)  # both spellings are 10:15 UTC
    expected = spark.createDataFrame(
        [
            ("a", ts, 3, 1.5, date(2026, 1, 2), True, []),
            ("a", ts, 3, 1.5, date(2026, 1, 2), True, []),
            ("b", None, None, None, None, None, [
                "ts 'yesterday' is not a valid timestamp", "n 'two' is not a valid int",
                "x '12,50' is not a valid double", "d '2026-02-30' is not a valid date",
                "ok 'maybe' is not a valid boolean",
            ]),
            ("c", None, None, None, None, None, [
                "x 'NaN' is not a valid double", "d '2026' is not a valid date",
            ]),
        ],
        "id string, ts timestamp, n int, x double, d date, ok boolean, "
        "_cast_errors array<string>",
    )
    assertDataFrameEqual(got, expected)


def test_timestamps_in_other_iso_spellings_are_the_same_instant(spark):
    spellings = ["2026-01-03T11:15:00+01", "2026-01-03t10:15:00z", "2026-01-03 05:15:00-0500",
                 "2026-01-03T15:45:00.000+05:30"]
    bronze = spark.createDataFrame(
        [(str(i), ts, None, None, None, None, None) for i, ts in enumerate(spellings)]
        + [("x", "2026-01-03T10:15+01:00", None, None, None, None, None)],
        ROW,
    )
    got = with_typed_columns(bronze, SOURCE).select("id", "ts", "_cast_errors")
    expected = spark.createDataFrame(
        [(str(i), datetime(2026, 1, 3, 10, 15), []) for i in range(len(spellings))]
        # Minutes with an offset: ISO 8601, but Spark's cast does not read it; refused, said so.
        + [("x", None, ["ts '2026-01-03T10:15+01:00' is not a valid timestamp"])],
        "id string, ts timestamp, _cast_errors array<string>",
    )
    assertDataFrameEqual(got, expected)


def test_contact_data_in_free_text_is_redacted(spark):
    from lakehouse.privacy.redact import redact_contact_data

    cases = [
        ("DM me at Olivia.V1234@Gmail.Com or call 0168 9355906, cc @noah_k59",
         "DM me at <email> or call <phone>, cc <handle>"),
        ("(0495) 1003952 or +49 30 1234567 or 0049 171 2345678!",
         "<phone> or <phone> or <phone>!"),
        ("ping @anna. thanks", "ping <handle>. thanks"),
        # Not contact data: dates, prices, ids, counts, hashtags, paths.
        ("#garden on 2026-01-03, 0.99 EUR, 3 of 10, O-2026-000123456, /p/01234567",
         "#garden on 2026-01-03, 0.99 EUR, 3 of 10, O-2026-000123456, /p/01234567"),
        (None, None),
        (None, None),  # a duplicate
    ]
    df = spark.createDataFrame([(i, t) for i, (t, _) in enumerate(cases)], "i int, t string")
    got = df.select("i", redact_contact_data(F.col("t")).alias("t"))
    expected = spark.createDataFrame([(i, e) for i, (_, e) in enumerate(cases)], "i int, t string")
    assertDataFrameEqual(got, expected)


def test_a_slipped_email_is_redacted_in_reason_and_quarantine_record(spark):
    """A line whose fields slipped: the email sits in a column that is not declared PII."""
    from lakehouse.silver.cleanse import with_quarantine_raw

    bronze = spark.createDataFrame(
        [("a", "2026-01-03T10:15:00Z", "anna@web.de", None, None, None, None, "raw", False),
         ("a", "2026-01-03T10:15:00Z", "anna@web.de", None, None, None, None, "raw", False)],
        ROW + ", _raw string, _is_malformed boolean",
    )
    typed = with_typed_columns(with_quarantine_raw(bronze, SOURCE, b"k"), SOURCE)
    got = typed.select(
        "id", "_cast_errors", F.get_json_object("_quarantine_raw", "$.n").alias("raw_n")
    )
    expected = spark.createDataFrame(
        [("a", ["n '<email>' is not a valid int"], "<email>")] * 2,
        "id string, _cast_errors array<string>, raw_n string",
    )
    assertDataFrameEqual(got, expected)


def test_tabs_and_no_break_spaces_are_trimmed_and_an_overflowing_number_is_an_error(spark):
    bronze = spark.createDataFrame(
        [("\ta\u00a0", "2026-01-03T10:15:00Z", "\u20033\t", "1e400", None, "true\u3000",
          "\u00a0A@B.c\t"),
         ("b", "2026-01-03T10:15:00Z", "3", "-1e400", None, None, None),
         ("c", "2026-01-03T10:15:00Z", "3", "1e300", None, None, None)],
        ROW,
    )
    got = with_typed_columns(bronze, SOURCE).select("id", "n", "x", "ok", "email", "_cast_errors")
    expected = spark.createDataFrame(
        [("a", 3, None, True, "A@B.c", ["x '1e400' is not a valid double"]),
         ("b", 3, None, None, None, ["x '-1e400' is not a valid double"]),
         ("c", 3, 1e300, None, None, [])],
        "id string, n int, x double, ok boolean, email string, _cast_errors array<string>",
    )
    assertDataFrameEqual(got, expected)


def test_latest_version_per_key_wins_deterministically(spark):
    rows = [
        ("k1", datetime(2026, 1, 1), 0, "old"),
        ("k1", datetime(2026, 1, 2), 0, "new"),
        ("k1", datetime(2026, 1, 2), 0, "new"),   # exact duplicate
        ("k2", None, 1, "no time, later commit"),
        ("k2", None, 0, "no time"),
        ("k3", datetime(2026, 1, 1), 5, "late delivery of an old event"),
        ("k3", datetime(2026, 1, 3), 2, "newest event"),
        # Same event time, other content: the first delivery, as a later run's MERGE keeps it.
        ("k4", datetime(2026, 1, 2), 3, "delivered again, changed"),
        ("k4", datetime(2026, 1, 2), 1, "delivered first"),
        # Both files in one bronze commit (a backlog): the earlier file, not the larger line.
        ("k5", datetime(2026, 1, 2), 4, "z from the later file"),
        ("k5", datetime(2026, 1, 2), 4, "a from the earlier file"),
    ]
    schema = "id string, ts timestamp, _commit_version int, _raw string"
    files = {"z from the later file": "f_2026-01-03.csv", "a from the earlier file": "f_2026-01-02.csv"}
    df = spark.createDataFrame(rows, schema).withColumns({
        "_ingested_at": F.col("ts"),
        "_source_file": F.coalesce(
            F.create_map(*[F.lit(x) for kv in files.items() for x in kv])[F.col("_raw")],
            F.lit("f_2026-01-01.csv"),
        ),
    })
    got = filter_latest_per_key(df, ("id",), "ts")
    expected = spark.createDataFrame([rows[1], rows[4], rows[6], rows[8], rows[10]], schema)
    assert rows[10][3] == "a from the earlier file"
    assertDataFrameEqual(got.drop("_ingested_at", "_source_file"), expected)


def test_customer_identity_normalises_and_pseudonymises(spark):
    rows = [
        ("C1", "Germany", " Anna@Web.DE ", "0301 1234567", "@Anna_1"),
        ("C1", "de", "anna@web.de", "+49 301 1234567", "anna_1"),  # same person, other spelling
        ("C2", "Atlantis", None, None, None),
    ]
    df = spark.createDataFrame(
        rows, "customer_id string, country string, email string, phone string, "
        "social_handle string",
    ).withColumn("_cast_errors", F.array().cast("array<string>"))
    got = with_customer_identity(df, b"k", REF)
    assertDataFrameEqual(
        got.select("customer_id", "country", "email_norm", "phone_norm", "handle_norm",
                   "_cast_errors"),
        spark.createDataFrame(
            [
                ("C1", "DE", "anna@web.de", "+493011234567", "@anna_1", []),
                ("C1", "DE", "anna@web.de", "+493011234567", "@anna_1", []),
                ("C2", None, None, None, None, ["country 'Atlantis' is not a known country"]),
            ],
            "customer_id string, country string, email_norm string, phone_norm string, "
            "handle_norm string, _cast_errors array<string>",
        ),
    )
    pseudonyms = got.select("customer_key", "email_pseudonym", "phone_pseudonym",
                            "handle_pseudonym").distinct().collect()
    assert len(pseudonyms) == 2 and all(len(p["customer_key"]) == 64 for p in pseudonyms)


def test_amount_eur_and_keywords(spark):
    df = spark.createDataFrame(
        [(125.0, " usd", "Loving my garden haul #Deals"), (10.0, "EUR", None),
         (10.0, "EUR", None), (5.0, "XYZ", "books, books and #books"), (7.0, None, None),
         (None, None, None)],
        "amount double, currency string, text string",
    ).withColumn("_cast_errors", F.array().cast("array<string>"))
    got = with_amount_eur(df.withColumn("currency", F.trim("currency")), REF).select(
        "currency", "amount_eur", "_cast_errors", keywords(F.col("text"), REF.keywords).alias("kw")
    )
    expected = spark.createDataFrame(
        [("USD", 100.0, [], ["garden", "deals"]), ("EUR", 10.0, [], []), ("EUR", 10.0, [], []),
         ("XYZ", None, ["currency 'XYZ' has no reference rate"], ["books"]),
         # An amount without a currency cannot be valued; no amount, nothing to value.
         (None, None, ["currency is missing, so the amount has no EUR value"], []),
         (None, None, [], [])],
        "currency string, amount_eur double, _cast_errors array<string>, kw array<string>",
    )
    assertDataFrameEqual(got, expected)


def test_identity_first_sighting_wins_and_fills_anonymous_rows(spark):
    t = [datetime(2026, 1, d) for d in range(1, 6)]
    existing = spark.createDataFrame(
        [("kB", "cookie", "ck1", t[2], t[3]), ("kA", "cookie", "ck2", t[0], t[0])],
        "customer_key string, id_type string, id_value string, first_seen timestamp, "
        "last_seen timestamp",
    )
    links = spark.createDataFrame(
        [("kA", "cookie", "ck1", t[1]), ("kA", "cookie", "ck1", t[1]),  # earlier than kB
         ("kC", "cookie", "ck3", t[4]), (None, "cookie", "ck4", t[4])],
        "customer_key string, id_type string, id_value string, seen timestamp",
    ).where("customer_key IS NOT NULL")
    touched = resolve_identity(links, existing)
    assertDataFrameEqual(
        touched,
        spark.createDataFrame(
            [("kA", "cookie", "ck1", t[1], t[3]), ("kC", "cookie", "ck3", t[4], t[4])],
            touched.schema,
        ),
    )
    events = spark.createDataFrame(
        [("e1", "ck1", None), ("e2", "ck3", "kX"), ("e3", None, None), ("e3", None, None)],
        "event_id string, cookie_id string, customer_key string",
    )
    got = with_resolved_customer(events, touched, "cookie_id", "cookie")
    # The flag says whose key the lookup gave (e1's, and e3's, whose cookie is unknown).
    assertDataFrameEqual(
        got,
        spark.createDataFrame(
            [("e1", "ck1", "kA", True), ("e2", "ck3", "kX", False), ("e3", None, None, True),
             ("e3", None, None, True)],
            "event_id string, cookie_id string, customer_key string, _key_looked_up boolean",
        ),
    )



def test_map_rows_matching_keeps_the_rows_a_lookup_of_the_batch_ids_can_match(spark):
    """Only the map rows of the asked (id_type, id_value) pairs, each once, whatever the ids'
    repeats and nulls; the same value under another id type is not a match. Looking the batch
    up in them gives what looking it up in the whole map gives."""
    t = datetime(2026, 1, 1)
    schema = ("customer_key string, id_type string, id_value string, first_seen timestamp, "
              "last_seen timestamp")
    identity = spark.createDataFrame(
        [("kA", "cookie", "ck1", t, t), ("kB", "cookie", "ck2", t, t),
         ("kC", "device", "ck1", t, t), ("kD", "device", "dv9", t, t)], schema,
    )
    ids = spark.createDataFrame(
        [("cookie", "ck1"), ("cookie", "ck1"), ("cookie", None), ("device", "dv9"),
         ("device", "dv0")],
        "id_type string, id_value string",
    )
    got = map_rows_matching(identity, ids)
    assertDataFrameEqual(
        got,
        spark.createDataFrame([("kA", "cookie", "ck1", t, t), ("kD", "device", "dv9", t, t)],
                              schema),
    )
    events = spark.createDataFrame(
        [("e1", "ck1", None), ("e1", "ck1", None), ("e2", None, None), ("e3", "ck2", "kX")],
        "event_id string, cookie_id string, customer_key string",
    )
    batch_ids = events.select(F.lit("cookie").alias("id_type"), F.col("cookie_id").alias("id_value"))
    assertDataFrameEqual(
        with_resolved_customer(events, map_rows_matching(identity, batch_ids), "cookie_id",
                               "cookie"),
        with_resolved_customer(events, identity, "cookie_id", "cookie"),
    )


def test_merge_newer_rewrites_no_file_for_rows_that_change_nothing(spark, tmp_path):
    """Re-delivered rows that are not newer change nothing, so the data file holding them is
    not rewritten; newer versions, fills and new keys still land, and the counts say so."""
    from delta.tables import DeltaTable

    from lakehouse.silver.io import merge_newer

    schema = "id string, ts timestamp, customer_key string, v int"
    t1, t2, t3 = datetime(2026, 1, 1, 8), datetime(2026, 1, 2, 8), datetime(2026, 1, 3, 8)
    path = str(tmp_path / "target")
    unchanged = [
        ("a", t2, "k1", 1),    # re-delivered as an older version
        ("b", t2, "k2", 2),    # re-delivered identical
    ] + [(f"z{i}", t1, f"kz{i}", i) for i in range(20)]
    changing = [
        ("c", t1, "k3", 3),    # a newer version arrives
        ("d", t2, None, 4),    # same version, its customer_key is now known: filled only
        ("e", None, "k5", 5),  # no timestamp in the table, the incoming row has one
    ]
    # Two appends, so the unchanged keys sit in a data file of their own.
    for rows in (unchanged, changing):
        spark.createDataFrame(rows, schema).coalesce(1).write.format("delta").mode(
            "append").save(path)
    incoming = spark.createDataFrame(
        [
            ("a", t1, "k1", 10),
            ("b", t2, "k2", 2),
            ("c", t3, "k3", 30),
            ("d", t2, "k4", 40),
            ("e", t1, "k5", 50),
            ("f", t3, "k6", 60),     # new key: inserted
            (None, t3, "k7", 70),    # a null key never matches: inserted
        ],
        schema,
    )

    counts = merge_newer(spark, path, incoming, ("id",), "ts", "customer_key")

    assert counts == {"inserted": 2, "updated": 3}
    expected = [
        *unchanged, ("c", t3, "k3", 30), ("d", t2, "k4", 4), ("e", t1, "k5", 50),
        ("f", t3, "k6", 60), (None, t3, "k7", 70),
    ]
    table = DeltaTable.forPath(spark, path)
    assertDataFrameEqual(table.toDF(), spark.createDataFrame(expected, schema))
    metrics = table.history(1).select("operationMetrics").first()[0]
    assert metrics["numTargetFilesRemoved"] == "1"  # the file of c, d and e only
    assert metrics["numTargetRowsCopied"] == "0"


def test_filling_in_a_customer_key_rewrites_only_the_anonymous_partition(spark, config):
    """Events whose cookie logs in later get their customer_key filled in place; the table is
    partitioned by anonymity, so the files of known customers' events are not rewritten."""
    from delta.tables import DeltaTable

    from lakehouse.catalog import Catalog
    from lakehouse.silver.identity import rows_to_reresolve
    from lakehouse.silver.io import ensure_table, merge_newer
    from lakehouse.silver.transforms import TABLES

    spec = TABLES["clickstream"]
    raw = ("event_id string, event_ts timestamp, cookie_id string, customer_key string, "
           "session_id string, page string, event_type string, channel string, "
           "campaign string, _commit_version long")
    t1, t2 = datetime(2026, 1, 1, 8), datetime(2026, 1, 2, 8)
    known = [(f"k{i}", t1, f"c{i}", f"key{i}", "s", "/", "view", "web", None, 1)
             for i in range(30)]
    anonymous = [
        ("a1", t1, "cA", None, "s", "/", "view", "web", None, 1),   # cA logs in later
        ("a2", t1, "cA", None, "s", "/", "view", "web", None, 1),
        ("b1", t1, "cB", None, "s", "/", "view", "web", None, 1),   # cB stays anonymous
        ("n1", t1, None, None, "s", "/", "view", "web", None, 1),   # no cookie at all
    ]
    catalog = Catalog(config)
    first = spec.project(spark.createDataFrame(known + anonymous, raw), "r1")
    ensure_table(spark, catalog, "silver.events", first.schema, spec.partition_by)
    path = catalog.path("silver.events")
    merge_newer(spark, path, first, spec.key, "event_ts", "customer_key",
                filled_with=spec.partition_by)

    # The next day: cA logs in (a new event of kA), so the identity map links cA to kA.
    login = ("a3", t2, "cA", "kA", "s", "/", "login", "web", None, 2)
    incoming = spec.project(spark.createDataFrame([login], raw), "r2")
    touched = spark.createDataFrame(
        [("kA", "cookie", "cA", t2, t2)],
        "customer_key string, id_type string, id_value string, first_seen timestamp, "
        "last_seen timestamp",
    )
    table_df = DeltaTable.forPath(spark, path).toDF()
    batch = incoming.unionByName(
        rows_to_reresolve(table_df, touched, "cookie_id", "cookie", incoming, spec.key)
    )
    counts = merge_newer(spark, path, batch, spec.key, "event_ts", "customer_key",
                         filled_with=spec.partition_by)

    assert counts == {"inserted": 1, "updated": 2}
    got = DeltaTable.forPath(spark, path).toDF()
    expected = {
        **{r[0]: (r[3], r[3] is None) for r in known + anonymous},
        "a1": ("kA", False), "a2": ("kA", False), "a3": ("kA", False),
    }
    assert {r["event_id"]: (r["customer_key"], r["_anonymous"]) for r in got.collect()} == expected
    assert got.where("_run_id = 'r1' AND event_id IN ('a1', 'a2')").count() == 2  # filled only
    metrics = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()[0]
    # Only the anonymous rows that stay anonymous (b1, n1) are copied, none of the 30 known.
    assert metrics["numTargetRowsCopied"] == "2"


def test_merge_newer_loads_an_empty_table_insert_only(spark, tmp_path):
    """A first load has nothing to match: every row (null keys too) is inserted through
    Delta's insert-only MERGE; the next load into the filled table takes the full path."""
    from delta.tables import DeltaTable

    from lakehouse.silver.io import merge_newer

    schema = "id string, ts timestamp, customer_key string"
    t1, t2 = datetime(2026, 1, 1, 8), datetime(2026, 1, 2, 8)
    path = str(tmp_path / "target")
    spark.createDataFrame([], schema).write.format("delta").save(path)
    first = [("a", t1, "k1"), ("b", t1, None), (None, t1, "k3"), (None, t2, "k4")]

    counts = merge_newer(spark, path, spark.createDataFrame(first, schema), ("id",), "ts",
                         "customer_key")

    assert counts == {"inserted": 4, "updated": 0}
    table = DeltaTable.forPath(spark, path)
    assertDataFrameEqual(table.toDF(), spark.createDataFrame(first, schema))
    assert table.history(1).first()["operationParameters"]["matchedPredicates"] == "[]"

    counts = merge_newer(spark, path, spark.createDataFrame([("a", t2, "k1")], schema),
                         ("id",), "ts", "customer_key")

    assert counts == {"inserted": 0, "updated": 1}
    assert table.history(1).first()["operationParameters"]["matchedPredicates"] != "[]"


def test_merge_newer_first_load_still_applies_rows_another_writer_put_in_first(
    spark, tmp_path, monkeypatch
):
    """The table is seen empty, then another writer commits a row before this MERGE does: its
    key is skipped by the insert-only MERGE, so the full MERGE must follow and apply the newer
    incoming version."""
    from delta.tables import DeltaTable

    from lakehouse.silver import io

    schema = "id string, ts timestamp, customer_key string"
    t1, t2 = datetime(2026, 1, 1, 8), datetime(2026, 1, 2, 8)
    path = str(tmp_path / "target")
    spark.createDataFrame([], schema).write.format("delta").save(path)
    seen_empty = io.version_if_empty

    def empty_then_raced(table, path):
        version = seen_empty(table, path)
        spark.createDataFrame([("a", t1, None), ("z", t1, "kz")], schema).write.format(
            "delta").mode("append").save(path)
        return version

    monkeypatch.setattr(io, "version_if_empty", empty_then_raced)
    incoming = spark.createDataFrame([("a", t2, "k1"), ("b", t1, "k2")], schema)

    counts = io.merge_newer(spark, path, incoming, ("id",), "ts", "customer_key")

    assert counts == {"inserted": 1, "updated": 1}
    assertDataFrameEqual(
        DeltaTable.forPath(spark, path).toDF(),
        spark.createDataFrame([("a", t2, "k1"), ("b", t1, "k2"), ("z", t1, "kz")], schema),
    )


def test_version_if_empty_names_the_version_only_while_the_table_holds_no_file(spark, tmp_path):
    from delta.tables import DeltaTable

    from lakehouse.silver import io

    path = str(tmp_path / "target")
    spark.createDataFrame([], "id string").write.format("delta").save(path)
    table = DeltaTable.forPath(spark, path)
    spark.createDataFrame([("a",)], "id string").write.format("delta").mode("append").save(path)
    table.delete()  # empty again, two commits later
    # The version is counted from the log's file names, not read through Delta.
    empty_at = len(list((tmp_path / "target" / "_delta_log").glob("*.json"))) - 1
    assert empty_at == 2
    assert io.version_if_empty(table, path) == empty_at

    spark.createDataFrame([("a",)], "id string").write.format("delta").mode("append").save(path)
    assert io.version_if_empty(table, path) is None


def test_key_scope_keeps_every_match_and_only_the_ones_in_scope(spark, tmp_path):
    """Scoped to the batch's key range plus the anonymous partition, a MERGE updates an in-range
    key, inserts a new one and fills an anonymous row far outside the range, as unscoped. The
    scope is really in the condition: without the partition flag the anonymous row is out of
    scope and stays unfilled. A re-resolved row whose target another writer already moved out
    of the anonymous partition finds no match and is not inserted a second time."""
    from delta.tables import DeltaTable

    from lakehouse.silver import io

    schema = "id string, ts timestamp, customer_key string, _anonymous boolean"
    t1, t2 = datetime(2026, 1, 1, 8), datetime(2026, 1, 2, 8)
    anonymous, filled = ("d1-b", t1, None, True), ("d1-b", t1, "k2", False)
    target = [("d1-a", t1, "k1", False), ("d2-c", t1, "k3", False)]
    incoming = [("d2-c", t2, "k3", False), ("d3-x", t2, "k4", False)]
    low, high = min(r[0] for r in incoming), max(r[0] for r in incoming)
    expected = [("d1-a", t1, "k1", False), ("d2-c", t2, "k3", False), ("d3-x", t2, "k4", False)]

    def merged(name: str, before: tuple, flag: str | None) -> tuple[dict[str, int], DataFrame]:
        path = str(tmp_path / name)
        spark.createDataFrame([*target, before], schema).write.format("delta").partitionBy(
            "_anonymous").save(path)
        counts = io.merge_newer(
            # The last row re-resolves the anonymous d1-b: its key is outside the range.
            spark, path, spark.createDataFrame([*incoming, filled], schema), ("id",), "ts",
            "customer_key", filled_with=("_anonymous",),
            scope=io.KeyScope("id", low, high, or_flag=flag),
        )
        return counts, DeltaTable.forPath(spark, path).toDF()

    counts, got = merged("scoped", anonymous, "_anonymous")
    assert counts == {"inserted": 1, "updated": 2}
    assertDataFrameEqual(got, spark.createDataFrame([*expected, filled], schema))

    counts, got = merged("range_only", anonymous, None)
    assert counts == {"inserted": 1, "updated": 1}
    assertDataFrameEqual(got, spark.createDataFrame([*expected, anonymous], schema))

    counts, got = merged("filled_meanwhile", filled, "_anonymous")
    assert counts == {"inserted": 1, "updated": 1}
    assertDataFrameEqual(got, spark.createDataFrame([*expected, filled], schema))


def test_key_scope_of_an_empty_batch_matches_nothing_by_range(spark):
    from lakehouse.silver.io import KeyScope

    rows = spark.createDataFrame([("a", True), ("b", False)], "id string, _anonymous boolean")
    assert rows.where(KeyScope("id", None, None).condition()).count() == 0
    assert [r.id for r in rows.where(KeyScope("id", None, None, "_anonymous").condition())
            .collect()] == ["a"]


def test_clean_key_range_ignores_malformed_and_dropped_rows(spark):
    """The range KeyScope gets covers the rows silver MERGEs, not the quarantined ones."""
    from lakehouse.silver.job import clean_key_range

    evaluated = spark.createDataFrame(
        [("E02", False, None), ("E05", False, None), ("E05", False, None),  # a duplicate
         (None, False, None),                                               # a null key
         ("A00", True, None), ("Z99", False, "not_null_customer")],          # quarantined
        "event_id string, _is_malformed boolean, _drop_rule string",
    )
    row = evaluated.agg(*clean_key_range("event_id")).first()
    assert (row["_key_low"], row["_key_high"]) == ("E02", "E05")


def test_preparation_waves_put_a_source_after_the_sources_it_references():
    from lakehouse.silver.job import preparation_waves

    order = ["crm_customers", "clickstream", "orders", "payments", "social_posts"]
    deps = {"crm_customers": set(), "clickstream": set(), "orders": {"crm_customers"},
            "payments": {"orders"}, "social_posts": set()}
    assert preparation_waves(order, deps) == [
        ["crm_customers", "clickstream", "social_posts"], ["orders"], ["payments"]
    ]
    # A reference cycle (a <-> b, c after b): the first source left goes alone, then the rest
    # as soon as what they reference is prepared.
    cycle = {"a": {"b"}, "b": {"a"}, "c": {"b"}, "d": set()}
    assert preparation_waves(["a", "b", "c", "d"], cycle) == [["d"], ["a"], ["b"], ["c"]]


def test_kept_rows_are_the_rows_of_when_they_were_kept(spark, tmp_path):
    """kept_as_rows (silver's evaluated rows): the frame holds the rows computed when it was
    made, so a later write to the table they came from changes neither them nor what is
    derived from them (a lazy frame would read the new rows)."""
    from lakehouse.silver.job import kept_as_rows

    path = str(tmp_path / "t")
    rows = [("a", 1), ("a", 1), ("b", None), ("c", 3)]
    spark.createDataFrame(rows, "id string, n int").write.format("delta").save(path)
    kept = kept_as_rows(
        spark.read.format("delta").load(path).withColumn("n2", F.col("n") * 2)
    )
    spark.createDataFrame([("z", 9)], "id string, n int").write.format("delta").mode(
        "overwrite"
    ).save(path)

    expected = spark.createDataFrame(
        [(i, n, None if n is None else 2 * n) for i, n in rows], "id string, n int, n2 int"
    )
    assertDataFrameEqual(kept, expected)
    assertDataFrameEqual(kept.where(F.col("n").isNull()).select("id"),
                         spark.createDataFrame([("b",)], "id string"))


def test_quarantine_record_built_after_typing_is_the_landed_rows_record(spark):
    """Silver builds the quarantine record after typing and the rules, on the rows that go to
    quarantine only: it must be the record of the row as landed (a field that failed to type
    as it was delivered, PII withheld), as reconcile builds it from bronze, and null elsewhere."""
    from dataclasses import replace

    from lakehouse.silver.cleanse import (
        with_landed_fields,
        with_quarantine_raw,
        with_quarantine_raw_where,
    )

    bronze = spark.createDataFrame(
        [("a", "2026-01-03T10:15:00Z", "two", "1.5", None, "maybe", " A@B.c ", "line a", False),
         ("b", None, None, None, None, None, None, "{broken", True),
         ("c", "2026-01-03T10:15:00Z", "3", "NaN", "2026-01-02", "true", "x@y.z", "line c",
          False),
         ("d", "yesterday", "4", None, None, None, None, "line d", False)],
        ROW + ", _raw string, _is_malformed boolean",
    )
    goes_to_quarantine = F.col("id") != "c"
    for source in (SOURCE, replace(SOURCE, pii=())):
        landed = with_quarantine_raw(bronze, source, b"k").select(
            "id", F.when(goes_to_quarantine, F.col("_quarantine_raw")).alias("_quarantine_raw"))
        typed = with_typed_columns(with_landed_fields(bronze, source), source)
        got = with_quarantine_raw_where(typed, source, b"k", goes_to_quarantine)
        assert "_landed_fields" not in got.columns
        assertDataFrameEqual(got.select("id", "_quarantine_raw"), landed)
        record = got.where("id = 'a'").first()["_quarantine_raw"]
        if source.pii:
            assert '"n":"two"' in record and '"email":"<withheld>"' in record, record
        else:
            assert record == "line a"
