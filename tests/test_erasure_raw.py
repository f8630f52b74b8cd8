"""Erasure of raw files: every delivered text file, kept byte for byte but for the person's lines.

No Spark: the raw folder is plain files, and the expected bytes are written out by hand.
"""

from __future__ import annotations

import gzip

from lakehouse.catalog import Catalog
from lakehouse.config import load_config
from lakehouse.privacy.erasure import Subject, rewrite_raw_files
from lakehouse.privacy.subject_report import _raw_files_holding

PERSON = Subject(customer_ids=frozenset({"C0000229"}), emails=frozenset({"ann@example.com"}))


def test_every_raw_file_kind_is_cleaned_and_the_rest_kept_as_delivered(tmp_path):
    catalog = Catalog(load_config("local", overrides={"data_dir": str(tmp_path / "data")}))
    raw = tmp_path / "data" / "raw"
    (raw / "orders").mkdir(parents=True)
    (raw / "clickstream").mkdir()
    files = {
        # CRLF endings and a byte that is not UTF-8 (a damaged delivery bronze kept as malformed)
        "orders/orders_2026-01-06.csv": (
            b"order_id,customer_id\r\nO1,C0000229\r\nO2,C0000230\r\n\xff\xfe broken,C0000231\r\n",
            b"order_id,customer_id\r\nO2,C0000230\r\n\xff\xfe broken,C0000231\r\n",
        ),
        # the person's line is the one with the bad byte
        "orders/orders_2026-01-07.csv": (
            b"order_id,customer_id\nO3,\xffC0000229\nO4,C0000232\n",
            b"order_id,customer_id\nO4,C0000232\n",
        ),
        # a name bronze skips (upper case) still holds the person
        "orders/orders_2026-01-08_late.CSV": (
            b"order_id,customer_id\nO5,c0000229\n",
            b"order_id,customer_id\n",
        ),
        "clickstream/clickstream_2026-01-06.json": (
            b'{"email":"Ann@Example.com"}\n{"email":"bob@example.com"}',
            b'{"email":"bob@example.com"}',
        ),
        # a longer token that only contains the id is someone else
        "clickstream/clickstream_2026-01-07.jsonl": (
            b'{"customer_id":"C00002291"}\n',
            b'{"customer_id":"C00002291"}\n',
        ),
    }
    for name, (before, _after) in files.items():
        (raw / name).write_bytes(before)
    gz = raw / "clickstream" / "clickstream_2026-01-08.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"customer_id":"C0000229"}\n{"customer_id":"C0000233"}\n'))
    hidden = raw / "orders" / ".orders_2026-01-09.csv"
    hidden.write_bytes(b"O6,C0000229\n")

    assert _raw_files_holding(catalog, PERSON) == [
        "clickstream/clickstream_2026-01-06.json",
        "clickstream/clickstream_2026-01-08.jsonl.gz",
        "orders/orders_2026-01-06.csv",
        "orders/orders_2026-01-07.csv",
        "orders/orders_2026-01-08_late.CSV",
    ]
    assert rewrite_raw_files(catalog, PERSON) == {"clickstream": (2, 2), "orders": (3, 3)}
    for name, (_before, after) in files.items():
        assert (raw / name).read_bytes() == after, name
    assert gzip.decompress(gz.read_bytes()) == b'{"customer_id":"C0000233"}\n'
    assert hidden.read_bytes() == b"O6,C0000229\n"  # not a delivered file
    assert _raw_files_holding(catalog, PERSON) == []
    assert rewrite_raw_files(catalog, PERSON) == {}


def test_suppressed_lines_leave_their_raw_files_and_the_rest_is_kept(tmp_path):
    """Bronze's removal of re-delivered lines of erased people: lines as Spark's text reader
    returns them (no line ending) match the file's lines whatever their ending, in plain and
    gzip files; a line not found, or a file that is not local, is reported, not guessed at."""
    from lakehouse.privacy.suppression import remove_raw_lines

    crlf = tmp_path / "crm_2026-01-04.csv"
    crlf.write_bytes(b"customer_id,email\r\nC1,ann@example.com\r\nC2,bob@example.com\r\n")
    packed = tmp_path / "orders_2026-01-04.csv.gz"
    packed.write_bytes(gzip.compress(b"order_id,customer_id\nO1,C1\nO2,C2\nO1,C1\n"))
    partly = tmp_path / "iot_2026-01-04.csv"
    partly.write_bytes(b"reading_id,device_id\nR1,D1\nR2,D2\n")

    removed, left = remove_raw_lines({
        crlf.as_uri(): ["C1,ann@example.com"],
        f"file:{packed}": ["O1,C1", "O1,C1"],
        str(partly): ["R1,D1", "R9,\ufffdD1"],  # the second as Spark decoded a damaged byte
        "s3a://bucket/raw/crm_2026-01-04.csv": ["C1,ann@example.com"],
    })

    assert crlf.read_bytes() == b"customer_id,email\r\nC2,bob@example.com\r\n"
    assert gzip.decompress(packed.read_bytes()) == b"order_id,customer_id\nO2,C2\n"
    assert partly.read_bytes() == b"reading_id,device_id\nR2,D2\n"
    assert removed == 4
    assert left == sorted([str(partly), "s3a://bucket/raw/crm_2026-01-04.csv"])
