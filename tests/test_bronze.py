"""Bronze ingestion on hand-written raw files: exactly-once, malformed kept, drift rescued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from lakehouse.bronze import run_bronze, to_bronze_rows, with_csv_header_flag
from lakehouse.catalog import Catalog
from lakehouse.sources import load_sources

ORDERS_DAY1 = (
    "order_id,customer_id,order_ts,amount,currency,status,n_items\n"
    "O1,C1,2026-01-01T10:00:00Z,10.50,EUR,completed,1\n"
    'O2,C2,2026-01-01T11:00:00Z,"1,5",EUR,completed,2\n'
    "O3,C3,2026-01-01T12:00:00Z,7.00,EUR\n"  # too few fields
    "O1,C1,2026-01-01T10:00:00Z,10.50,EUR,completed,1\n"  # re-delivered duplicate
)
ORDERS_DAY2 = (
    "order_id,customer_id,order_ts,amount,currency,status,n_items,discount_code\n"
    "O4,C1,2026-01-02T09:00:00Z,20.00,EUR,completed,3,WINTER\n"
    "O5,,2026-01-02T09:30:00Z,N/A,USD,cancelled,1,\n"
)
CLICKS_DAY1 = [
    json.dumps({"event_id": "E1", "event_ts": "2026-01-01T10:00:00+01:00", "cookie_id": "k1",
                "page": "/", "event_type": "page_view", "channel": "email"}),
    '{"event_id": "E2", "event_ts": "2026-01-01T10:01:00Z", "cookie_id": "k1", "pa',  # truncated
    json.dumps({"event_id": "E3", "cookie_id": "k2", "user_agent": "curl/8", "n": {"a": 1}}),
    "",
    json.dumps(["not", "an", "object"]),
]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def landed(spark, config):
    raw = Path(config.data_dir) / "raw"
    _write(raw / "orders" / "orders_2026-01-01.csv", ORDERS_DAY1)
    _write(raw / "clickstream" / "clickstream_2026-01-01.jsonl", "\n".join(CLICKS_DAY1) + "\n")
    sources = load_sources(config)
    results = run_bronze(spark, config, sources, "run-1", only=["orders", "clickstream"])
    return config, sources, {r.source: r for r in results}


def _table(spark, config, name):
    return Catalog(config).read(spark, name)


def test_every_line_lands_and_malformed_lines_are_kept_raw(spark, landed):
    config, _, results = landed
    orders = _table(spark, config, "bronze.orders")
    assert results["orders"].rows_added == 4 and orders.count() == 4  # header not a row
    bad = orders.where("_is_malformed").select("order_id", "_raw", "_malformed_reason").collect()
    assert [(r["order_id"], r["_raw"]) for r in bad] == [
        (None, "O3,C3,2026-01-01T12:00:00Z,7.00,EUR")
    ]
    assert "7 fields" in bad[0]["_malformed_reason"]
    # values stay the strings they arrived as: silver types them
    amounts = {r["order_id"]: r["amount"] for r in orders.where("NOT _is_malformed").collect()}
    assert amounts == {"O1": "10.50", "O2": "1,5"}
    clicks = _table(spark, config, "bronze.clickstream")
    assert clicks.count() == 5
    reasons = {r["_raw"]: r["_malformed_reason"] for r in clicks.collect()}
    assert reasons[CLICKS_DAY1[1]] == "line is not a valid JSON object"
    assert reasons[""] == "blank line"
    assert reasons[CLICKS_DAY1[4]] == "line is not a valid JSON object"
    assert reasons[CLICKS_DAY1[0]] is None
    assert results["clickstream"].malformed_added == 3


def test_a_line_that_is_not_utf8_is_kept_malformed_with_the_reason(spark, config):
    """A file delivered in latin-1: Spark's text reader put U+FFFD for its 'ü' and the row
    landed parsed and clean as 'J\ufffdrgen'. Its ASCII lines are the same in UTF-8."""
    raw = Path(config.data_dir) / "raw" / "orders"
    raw.mkdir(parents=True)
    (raw / "orders_2026-01-03.csv").write_bytes(
        b"order_id,customer_id,order_ts,amount,currency,status,n_items\n"
        b"O6,C1,2026-01-03T10:00:00Z,10.50,EUR,completed,1\n"
        + "O7,C2,2026-01-03T11:00:00Z,7.00,EUR,zur\u00fcck,1\n".encode("latin-1"))
    run_bronze(spark, config, load_sources(config), "run-1", only=["orders"])
    rows = {r["order_id"] or r["_raw"][:2]: (r["_is_malformed"], r["_malformed_reason"])
            for r in _table(spark, config, "bronze.orders").collect()}
    assert rows["O6"] == (False, None)
    assert rows["O7"][0] is True and rows["O7"][1].startswith("line is not UTF-8 text"), rows
    # A header that is not UTF-8 matched none of its file's lines: they landed nowhere.
    (raw / "orders_2026-01-04.csv").write_bytes(
        "order_id,customer_id,order_ts,amount,currency,status,n_items,stra\u00dfe\n"
        "O8,C1,2026-01-04T10:00:00Z,10.50,EUR,completed,1,x\n".encode("latin-1"))
    (result,) = run_bronze(spark, config, load_sources(config), "run-2", only=["orders"])
    assert result.rows_added == 1 and result.malformed_added == 1
    (row,) = _table(spark, config, "bronze.orders").where(
        F.col("_source_file").endswith("orders_2026-01-04.csv")).collect()
    assert row["_malformed_reason"].startswith("the file's header line is not UTF-8 text"), row


def test_unknown_json_fields_are_rescued_not_lost(spark, landed):
    config, _, _ = landed
    row = _table(spark, config, "bronze.clickstream").where("event_id = 'E3'").first()
    assert json.loads(row["_rescued_data"]) == {"user_agent": "curl/8", "n": '{"a":1}'}
    assert row["event_ts"] is None and row["_is_malformed"] is False


def test_rerun_adds_nothing_and_commits_no_version(spark, landed):
    config, sources, _ = landed
    catalog = Catalog(config)
    version = catalog.current_version(spark, "bronze.orders")
    results = run_bronze(spark, config, sources, "run-2", only=["orders", "clickstream"])
    assert [r.rows_added for r in results] == [0, 0]
    assert catalog.current_version(spark, "bronze.orders") == version
    assert _table(spark, config, "bronze.orders").count() == 4


def test_new_day_adds_only_its_rows_and_drift_column_is_rescued(spark, landed):
    config, sources, _ = landed
    _write(Path(config.data_dir) / "raw" / "orders" / "orders_2026-01-02.csv", ORDERS_DAY2)
    (result,) = run_bronze(spark, config, sources, "run-2", only=["orders"])
    assert result.rows_added == 2
    orders = _table(spark, config, "bronze.orders")
    assert orders.count() == 6
    day2 = orders.where(F.col("_source_file").endswith("orders_2026-01-02.csv"))
    got = {r["order_id"]: (r["_rescued_data"], r["_ingest_run_id"]) for r in day2.collect()}
    assert got == {"O4": ('{"discount_code":"WINTER"}', "run-2"),
                   "O5": ('{"discount_code":null}', "run-2")}  # empty CSV field = null


def test_transform_on_a_small_frame_keeps_null_and_duplicate_lines(spark, config):
    sources = load_sources(config)
    lines = spark.createDataFrame(
        [
            ('{"post_id": "P1", "handle": "@a", "likes": 3}', "f1"),
            ('{"post_id": "P1", "handle": "@a", "likes": 3}', "f1"),
            ('{"post_id": null, "likes": "many"}', "f1"),
        ],
        "_raw string, _source_file string",
    )
    got = to_bronze_rows(spark, lines, sources["social_posts"], 7, "r").select(
        "post_id", "handle", "likes", "_is_malformed", "_batch_id"
    )
    expected = spark.createDataFrame(
        [("P1", "@a", "3", False, 7), ("P1", "@a", "3", False, 7), (None, None, "many", False, 7)],
        "post_id string, handle string, likes string, _is_malformed boolean, _batch_id long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_json_rescue_keeps_unknown_fields_in_order_with_their_nulls_and_nested_values(
    spark, config
):
    """Unknown keys go to _rescued_data in the order they came, a JSON null kept as null and a
    nested value as its text; a declared key with a null value is a declared field (not
    rescued, and it counts as present); a line of unknown keys only is malformed."""
    lines = spark.createDataFrame(
        [
            ('{"zz": null, "post_id": "P1", "b": {"c": [1, 2]}, "handle": null, "a": "x"}', "f"),
            ('{"post_id": "P2", "likes": 4}', "f"),
            ('{"likes": null}', "f"),
            ('{"a": 1, "zz": "2"}', "f"),
            ("{}", "f"),
            ('["P3"]', "f"),
        ],
        "_raw string, _source_file string",
    )
    got = to_bronze_rows(spark, lines, load_sources(config)["social_posts"], 1, "r").select(
        "post_id", "handle", "likes", "_rescued_data", "_malformed_reason"
    )
    expected = spark.createDataFrame(
        [
            ("P1", None, None, '{"zz":null,"b":"{\\"c\\":[1,2]}","a":"x"}', None),
            ("P2", None, "4", None, None),
            (None, None, None, None, None),
            (None, None, None, '{"a":"1","zz":"2"}', "no declared field present"),
            (None, None, None, None, "no declared field present"),
            (None, None, None, None, "line is not a valid JSON object"),
        ],
        "post_id string, handle string, likes string, _rescued_data string, "
        "_malformed_reason string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_csv_header_is_known_with_a_byte_order_mark_quotes_and_spaces(spark, config):
    """A header line's first field is the natural key once a leading byte-order mark, quotes,
    spaces and case are set aside; a mark elsewhere, or another first field, is data."""
    lines = spark.createDataFrame(
        [
            ('\ufeff"Order_ID",customer_id', True),
            (' "order_id" ,x', True),
            ("ORDER_ID", True),
            ("o\ufefforder_id,x", False),
            ("\ufeff\ufefforder_id,x", False),
            ("O1,order_id", False),
            ("", False),
        ],
        "_raw string, expected boolean",
    )
    got = with_csv_header_flag(lines, load_sources(config)["orders"])
    assert [(r["_raw"], r["_is_header"]) for r in got.collect()] == [
        (r["_raw"], r["expected"]) for r in lines.collect()
    ]


def test_csv_wider_than_the_limit_is_kept_flagged_not_parsed(spark, config):
    """A header past MAX_CSV_COLUMNS (the CSV parser's own limit is 20,480 and failed the whole
    stream): its file's lines land flagged with the reason, a normal file beside it parses."""
    from lakehouse.bronze import MAX_CSV_COLUMNS

    header = "order_id,customer_id," + ",".join(f"x{i}" for i in range(MAX_CSV_COLUMNS))
    lines = spark.createDataFrame(
        [
            (header, "wide.csv"),
            ("O9,C9," + ",".join("v" for _ in range(MAX_CSV_COLUMNS)), "wide.csv"),
            ("order_id,customer_id", "narrow.csv"),
            ("O1,C1", "narrow.csv"),
        ],
        "_raw string, _source_file string",
    )
    rows = to_bronze_rows(spark, lines, load_sources(config)["orders"], 1, "r").collect()
    got = {r["_source_file"]: r for r in rows}
    assert len(rows) == 2 and set(got) == {"wide.csv", "narrow.csv"}  # headers are not rows
    wide, narrow = got["wide.csv"], got["narrow.csv"]
    assert wide["_is_malformed"] and wide["order_id"] is None
    assert wide["_malformed_reason"] == (
        f"header has {MAX_CSV_COLUMNS + 2:,} columns, more than the {MAX_CSV_COLUMNS:,} a source "
        f"file may have"
    )
    assert wide["_raw"].startswith("O9,C9,v,v")
    assert not narrow["_is_malformed"] and narrow["order_id"] == "O1"


def test_missing_raw_folder_is_a_clear_error(spark, config):
    from lakehouse.errors import InputDataError

    with pytest.raises(InputDataError, match="no raw files for payments under .*lakehouse generate"):
        run_bronze(spark, config, load_sources(config), "r", only=["payments"])


def test_source_without_folder_is_skipped_while_others_land(spark, landed):
    config, sources, _ = landed
    results = run_bronze(spark, config, sources, "r", only=["orders", "payments"])
    assert [(r.source, r.skipped_reason) for r in results] == [
        ("orders", None), ("payments", "no raw folder yet")
    ]


def test_a_landed_sources_raw_folder_gone_is_refused_before_any_source_lands(spark, landed):
    """raw_dir misspelt in sources.yaml on a lake that has the source: it was reported as
    'no raw folder yet' among the others, and its new deliveries went unread without a word."""
    import shutil

    from lakehouse.errors import InputDataError

    config, sources, _ = landed
    raw = Path(config.data_dir) / "raw"
    _write(raw / "clickstream" / "clickstream_2026-01-02.jsonl", CLICKS_DAY1[0] + "\n")
    shutil.move(raw / "orders", raw / "orders_archived")
    versions = {n: Catalog(config).current_version(spark, n)
                for n in ("bronze.orders", "bronze.clickstream")}
    with pytest.raises(InputDataError) as raised:
        run_bronze(spark, config, sources, "r", only=["orders", "clickstream"])
    assert str(raised.value) == (
        f"bronze.orders holds rows landed before, but the raw folder of source orders "
        f"({raw}/orders) does not exist: check its raw_dir 'orders' in "
        f"{config.conf_dir}/sources.yaml (create "
        f"the folder empty if its files were archived); nothing was ingested")
    assert versions == {n: Catalog(config).current_version(spark, n) for n in versions}
    # Alone, it was "no raw files for orders ...: run `lakehouse generate`".
    with pytest.raises(InputDataError, match="^bronze.orders holds rows landed before"):
        run_bronze(spark, config, sources, "r", only=["orders"])


def test_gzip_bomb_is_refused_by_name_before_any_source_lands(spark, config):
    """65 MiB of zeros in ~65 KiB of gzip (1000:1): a line bigger than the heap once inflated
    at real bomb sizes. Refused from its 4-byte trailer, before orders (first in order) land."""
    import gzip

    from lakehouse.errors import InputDataError
    from lakehouse.raw_files import GZIP_MAX_RATIO, gzip_expansion_problem

    raw = Path(config.data_dir) / "raw"
    _write(raw / "orders" / "orders_2026-01-01.csv", ORDERS_DAY1)
    bomb = raw / "clickstream" / "clickstream_2026-01-02_bomb.jsonl.gz"
    bomb.parent.mkdir(parents=True)
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        for _ in range(65):
            out.write(b"0" * 2**20)
    # An ordinary compressed day next to it is no problem on its own.
    with gzip.open(raw / "clickstream" / "clickstream_2026-01-01.jsonl.gz", "wt") as out:
        out.write("\n".join(CLICKS_DAY1) + "\n")

    with pytest.raises(InputDataError, match=r"clickstream_2026-01-02_bomb\.jsonl\.gz would "
                                             r"decompress to more than 64 MiB .*gzip bomb"):
        run_bronze(spark, config, load_sources(config), "r", only=["orders", "clickstream"])
    catalog = Catalog(config)
    assert not catalog.exists(spark, "bronze.orders")
    assert not catalog.exists(spark, "bronze.clickstream")

    # The rule itself: over the ratio and over the floor, both needed.
    assert gzip_expansion_problem("f", 2**20, 2**20 * (GZIP_MAX_RATIO + 1)) is not None
    assert gzip_expansion_problem("f", 2**20, 2**20 * GZIP_MAX_RATIO) is None   # ratio 100
    assert gzip_expansion_problem("f", 1000, 2**20) is None                       # small file
    bomb.unlink()
    # Deliveries bronze's file source does not read are named, not skipped without a word.
    for name in ("orders_2026-01-03_late.CSV", "orders_2026-01-04.txt", ".partial.csv"):
        (raw / "orders" / name).write_text(ORDERS_DAY1)
    results = run_bronze(spark, config, load_sources(config), "r", only=["orders", "clickstream"])
    assert {r.source: r.rows_added for r in results} == {"orders": 4,
                                                         "clickstream": len(CLICKS_DAY1)}
    assert {r.source: r.ignored_files for r in results} == {
        "orders": ("orders_2026-01-03_late.CSV", "orders_2026-01-04.txt"), "clickstream": ()}
    # Day 1's orders file has a malformed line among good ones: not a file that did not parse.
    assert [r.unparsed_files for r in results] == [(), ()]
    # A delivery that is a link to a file no longer there: named too, and the rest lands.
    (raw / "orders" / "orders_2026-01-05.csv").symlink_to(raw / "orders" / "gone.csv")
    results = run_bronze(spark, config, load_sources(config), "r", only=["orders"])
    assert [(r.source, r.unreadable_files) for r in results] == [
        ("orders", ("orders_2026-01-05.csv",))]
    (raw / "orders" / "orders_2026-01-05.csv").unlink()
    # A file in another format (JSON lines named .csv): every line lands, kept as malformed,
    # and the stage's summary says that no line of it parsed.
    from lakehouse.pipeline import RunContext, _bronze

    (raw / "orders" / "orders_2026-01-06.csv").write_text(
        "\n".join(json.dumps({"order_id": f"O{i}", "amount": 1.5}) for i in (7, 8)) + "\n"
    )
    lines = _bronze(spark, config, RunContext(run_id="r"))
    orders = [line for line in lines if line.startswith("  bronze.orders ")]
    assert orders[0].split()[1:4] == ["+", "2", "rows"], orders[0]
    assert ("  bronze.orders         warning: no line of 1 file(s) parsed: orders_2026-01-06.csv "
            "(another format or other columns than sources.yaml declares? every line is kept "
            "and silver quarantines it)") in orders, lines
    assert not any("warning" in line for line in lines if "orders" not in line)


def test_damaged_gzip_is_refused_by_name_and_its_repaired_copy_lands(spark, config):
    """A gzip export with bytes overwritten inside (its header and trailer intact) failed the
    stream with executor stack traces, after the stream had recorded it as taken: a repaired
    copy under the same name would never have been read. It is refused first, by name, and
    the repaired copy lands whole."""
    import gzip

    from lakehouse.errors import InputDataError

    raw = Path(config.data_dir) / "raw"
    _write(raw / "orders" / "orders_2026-01-01.csv", ORDERS_DAY1)
    lines = [json.dumps({"event_id": f"E{i}", "page": f"/p/{i * 7919 % 10007}"})
             for i in range(3000)]
    intact = gzip.compress(("\n".join(lines) + "\n").encode())
    damaged = bytearray(intact)
    damaged[len(intact) // 2: len(intact) // 2 + 200] = b"\xff" * 200
    path = raw / "clickstream" / "clickstream_2026-01-01.jsonl.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(damaged))

    with pytest.raises(InputDataError, match=r"raw file \S*clickstream_2026-01-01\.jsonl\.gz "
                                             r"does not decompress .*same name") as refused:
        run_bronze(spark, config, load_sources(config), "r", only=["orders", "clickstream"])
    assert len(str(refused.value).splitlines()) == 1
    catalog = Catalog(config)
    assert not catalog.exists(spark, "bronze.orders")
    assert not catalog.exists(spark, "bronze.clickstream")

    path.write_bytes(intact)
    results = run_bronze(spark, config, load_sources(config), "r", only=["orders", "clickstream"])
    assert {r.source: r.rows_added for r in results} == {"orders": 4, "clickstream": len(lines)}


def test_gzip_of_many_members_is_measured_whole_and_long_lines_are_refused(spark, config):
    """The size trailer of a gzip file is its last member's: a bomb followed by a small member
    passed the trailer check and inflated in the driver. Every member is counted now. A plain
    file with a line over bronze.max_line_bytes is refused too; files the streams took before
    are not read again."""
    import gzip

    from lakehouse.errors import InputDataError

    raw = Path(config.data_dir) / "raw"
    bomb = raw / "clickstream" / "clickstream_2026-01-02.jsonl.gz"
    bomb.parent.mkdir(parents=True)
    bomb.write_bytes(gzip.compress(b"0" * (65 * 2**20)) + gzip.compress(b'{"event_id": "E"}\n'))
    assert int.from_bytes(bomb.read_bytes()[-4:], "little") == 18  # what the trailer says
    with pytest.raises(InputDataError, match=r"clickstream_2026-01-02\.jsonl\.gz would "
                                             r"decompress to more than 64 MiB .*gzip bomb"):
        run_bronze(spark, config, load_sources(config), "r", only=["clickstream"])
    bomb.unlink()

    narrow = config.with_overrides({"bronze.max_line_bytes": 2000})
    _write(raw / "orders" / "orders_2026-01-01.csv", ORDERS_DAY1)
    run_bronze(spark, narrow, load_sources(narrow), "r", only=["orders"])
    # A line of 2001 bytes between short ones, in a file bigger than the bound.
    wide = "O9,C9,2026-01-03T10:00:00Z,1.00,EUR,completed," + "9" * 1955
    assert len(wide) == 2001
    _write(raw / "orders" / "orders_2026-01-03.csv",
           "\n".join([ORDERS_DAY1.splitlines()[0], *["O8,C8,x,1,EUR,completed,1"] * 40, wide])
           + "\n")
    before = Catalog(config).current_version(spark, "bronze.orders")
    with pytest.raises(InputDataError, match=r"orders_2026-01-03\.csv has a line longer than "):
        run_bronze(spark, narrow, load_sources(narrow), "r", only=["orders"])
    assert Catalog(config).current_version(spark, "bronze.orders") == before
    # Day 1 (taken already) has no line over 100 bytes; day 3 is what a bound of 2001 admits.
    results = run_bronze(spark, narrow.with_overrides({"bronze.max_line_bytes": 2001}),
                         load_sources(narrow), "r", only=["orders"])
    assert [r.rows_added for r in results] == [41]


def test_gzip_files_are_read_as_sparks_gzip_reader_reads_them(tmp_path):
    """Python's gzip module skips zero padding after the last member; Spark's (Hadoop's)
    reader fails the stream on it ("not a gzip file"), so the check must refuse it too. Every
    member is read; an empty file is no line to both."""
    import gzip

    from lakehouse.raw_files import byte_size, local_file_problem

    lines = b"".join(b'{"event_id": "E%d"}\n' % i for i in range(50_000))
    path = tmp_path / "clickstream_2026-01-01.jsonl.gz"
    cases = {
        "intact": gzip.compress(lines),
        "two members and an empty one": gzip.compress(lines) + gzip.compress(b"x\n")
        + gzip.compress(b""),
        "empty file": b"",
        "zero padded": gzip.compress(lines) + b"\0" * 512,
        "other data after": gzip.compress(lines) + b"not gzip",
        "truncated": gzip.compress(lines)[:-3],
        "header only": gzip.compress(lines)[:10],
        "not gzip": lines,
    }
    problems = {}
    for case, data in cases.items():
        path.write_bytes(data)
        problems[case] = local_file_problem(path, 2**20)
    assert [case for case, problem in problems.items() if problem is None] == [
        "intact", "two members and an empty one", "empty file"]
    assert "zero padding or other data" in problems["zero padded"]
    assert "truncated" in problems["truncated"] and "not a gzip file" in problems["not gzip"]
    assert [byte_size(n) for n in (2**26, 1000, 512 * 2**10, 1536)] == [
        "64 MiB", "1,000 bytes", "512 KiB", "1,536 bytes"]


def test_a_late_file_keeping_an_old_modification_time_lands(spark, landed):
    """Spark's file source skips, without a word, a file whose modification time is more than
    maxFileAge (7 days by default) before the newest file it has seen: a late delivery copied
    with its times kept (cp -p, rsync -t, tar x) was never read."""
    import os
    import time

    config, sources, _ = landed
    late = Path(config.data_dir) / "raw" / "orders" / "orders_2025-12-01.csv"
    _write(late, ORDERS_DAY1.splitlines()[0] + "\nO77,C7,2025-12-01T10:00:00Z,5.00,EUR,"
           "completed,1\n")
    month_ago = time.time() - 30 * 86400
    os.utime(late, (month_ago, month_ago))
    results = run_bronze(spark, config, sources, "run-2", only=["orders"])
    assert [r.rows_added for r in results] == [1]


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 4096])
def test_longest_line_over_finds_lines_across_chunks(chunk_bytes):
    from lakehouse.raw_files import longest_line_over

    def chunks(data: bytes):
        return (data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes))

    text = b"ab\r\nabcdef\rabc\n\nabcd"  # lines: 2, 6, 3, 0, 4 bytes
    assert longest_line_over(chunks(text), 6) is None
    assert longest_line_over(chunks(text), 5) is not None
    assert longest_line_over(chunks(b"abcdefg"), 6) is not None  # no line break at all
    assert longest_line_over(chunks(b"abcdef\n"), 6) is None
    assert longest_line_over(chunks(b""), 0) is None


def test_a_moved_lake_is_refused_by_name_before_any_source_lands(spark, xs_lake, tmp_path):
    import shutil

    from lakehouse.config import load_config
    from lakehouse.errors import InputDataError

    # Copied as a user would (conftest's copy_lake rewrites the checkpoints; this does not).
    moved = tmp_path / "moved"
    shutil.copytree(xs_lake.data_dir, moved)
    config = load_config("local", overrides={"data_dir": str(moved)})
    catalog, sources = Catalog(config), load_sources(config)
    versions = {s.bronze_table: catalog.current_version(spark, s.bronze_table)
                for s in sources.values()}
    with pytest.raises(InputDataError, match="was moved or copied") as refused:
        run_bronze(spark, config, sources, "moved")
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert str(Path(xs_lake.data_dir) / "raw") in message and str(moved / "raw") in message
    assert {s.bronze_table: catalog.current_version(spark, s.bronze_table)
            for s in sources.values()} == versions


def test_gzip_trailers_read_through_spark_are_the_lengths_gzip_inflates_to(spark, tmp_path):
    """The gzip trailers object-store folders are checked by (read with Spark's binaryFile
    source) hold the length gzip itself inflates each file to. Hidden, non-gzip and too-short
    files are passed over."""
    import gzip

    from lakehouse.raw_files import spark_gzip_trailers

    folder = tmp_path / "raw"
    folder.mkdir()
    contents = {"a.jsonl.gz": b'{"x": 1}\n' * 1000, "b.csv.gz": b"", "c.jsonl.gz": b"0" * 300_000}
    for name, data in contents.items():
        (folder / name).write_bytes(gzip.compress(data))
    (folder / ".hidden.gz").write_bytes(gzip.compress(b"hidden"))
    (folder / "plain.csv").write_text("a,b\n")
    (folder / "short.gz").write_bytes(b"\x1f\x8b" + b"\0" * 10)
    (folder / "sub").mkdir()

    through_spark = spark_gzip_trailers(spark, str(folder))
    assert [(Path(f).name, size, isize) for f, size, isize in through_spark] == [
        (name, (folder / name).stat().st_size, len(contents[name])) for name in sorted(contents)
    ]
    assert spark_gzip_trailers(spark, str(tmp_path / "nosuch")) == []


def test_sources_land_side_by_side_and_the_first_failure_in_declaration_order_is_raised(
    spark, config, monkeypatch
):
    """bronze.parallel_sources sources land at a time; every source runs to its end, and the
    error raised is that of the first failing source in declaration order, whichever failed
    first in time (here the later one fails at once, the earlier one after a pause)."""
    import threading
    import time

    import lakehouse.bronze as bronze
    from lakehouse.bronze import BronzeResult

    names = ["crm_customers", "clickstream", "orders", "payments"]
    for name in names:
        (Path(config.data_dir) / "raw" / name).mkdir(parents=True)
    lock, running, seen = threading.Lock(), [0], []

    def fake_ingest(spark, catalog, source, run_id, suppression=None):
        with lock:
            running[0] += 1
            seen.append(running[0])
        try:
            time.sleep(0.3 if source.name == "clickstream" else 0.1)
            if source.name in ("clickstream", "orders"):
                raise RuntimeError(f"{source.name} failed")
            return BronzeResult(source.name, 1, 0, 1, 0, 0.0)
        finally:
            with lock:
                running[0] -= 1
                finished.append(source.name)

    finished: list[str] = []
    monkeypatch.setattr(bronze, "ingest_source", fake_ingest)
    two_at_a_time = config.with_overrides({"bronze.parallel_sources": 2})

    # The other failure is said too, as a note of the raised one (match reads notes).
    with pytest.raises(RuntimeError, match="^clickstream failed\nalso failed: orders failed$"):
        run_bronze(spark, two_at_a_time, load_sources(config), "r", only=names)

    assert sorted(finished) == sorted(names)
    assert max(seen) == 2
