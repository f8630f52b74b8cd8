"""Hostile files dropped into the raw folders, one builder per case.

Each builder writes one file into ``raw_root/<folder>/`` and returns its path. File names follow
the generator's pattern (``<folder>_<date>.<ext>``) with a day after the generated ones, so the
next bronze run picks exactly this file up.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

DAY = "2026-01-09"
ORDERS_HEADER = "order_id,customer_id,order_ts,amount,currency,status,n_items"
GOOD_EVENT = {"event_id": "E-HOSTILE-1", "event_ts": "2026-01-09T10:00:00Z", "cookie_id": "ck1",
              "customer_id": None, "session_id": "s1", "page": "/home", "event_type": "page_view",
              "channel": "direct", "campaign": None}


def _write(raw_root: Path, folder: str, ext: str, data: bytes, tag: str) -> Path:
    path = raw_root / folder / f"{folder}_{DAY}_{tag}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _orders(raw_root: Path, tag: str, lines: list[str]) -> Path:
    return _write(raw_root, "orders", "csv", ("\n".join(lines) + "\n").encode(), tag)


def _events(raw_root: Path, tag: str, lines: list[str]) -> Path:
    return _write(raw_root, "clickstream", "jsonl", ("\n".join(lines) + "\n").encode(), tag)


def truncated_json(raw_root: Path) -> Path:
    line = json.dumps(GOOD_EVENT)
    return _events(raw_root, "truncated", [line[: len(line) // 2]])


def invalid_json(raw_root: Path) -> Path:
    return _events(raw_root, "invalid", ["{event_id: E1, 'x': }", "[1, 2, 3]", "null"])


def invalid_utf8(raw_root: Path) -> Path:
    good = json.dumps({**GOOD_EVENT, "event_id": "E-UTF8"}).encode()
    bad = good.replace(b"/home", b"/h\xff\xfeme\xc3")
    return _write(raw_root, "clickstream", "jsonl", bad + b"\n", "utf8")


def csv_too_few_fields(raw_root: Path) -> Path:
    return _orders(raw_root, "few", [ORDERS_HEADER, "O-FEW-1,C0000001,2026-01-09T10:00:00Z"])


def csv_too_many_fields(raw_root: Path) -> Path:
    return _orders(raw_root, "many", [
        ORDERS_HEADER, "O-MANY-1,C0000001,2026-01-09T10:00:00Z,10.0,EUR,completed,1,x,y,z"])


def huge_field(raw_root: Path) -> Path:
    return _events(raw_root, "huge", [json.dumps({**GOOD_EVENT, "event_id": "E-HUGE",
                                                  "page": "/" + "a" * (25 * 1024 * 1024)})])


def deep_json(raw_root: Path) -> Path:
    return _events(raw_root, "deep", ['{"event_id": "E-DEEP", "page": ' + "[" * 2000
                                      + "]" * 2000 + "}"])


def csv_30000_columns(raw_root: Path) -> Path:
    header = ORDERS_HEADER + "," + ",".join(f"extra_{i}" for i in range(30_000))
    row = "O-WIDE-1,C0000001,2026-01-09T10:00:00Z,10.0,EUR,completed,1," + ",".join(
        "v" for _ in range(30_000))
    return _orders(raw_root, "wide", [header, row])


def empty_file(raw_root: Path) -> Path:
    return _write(raw_root, "orders", "csv", b"", "empty")


def gzip_bomb(raw_root: Path) -> Path:
    # ~1 GiB of zeros (no newline) in ~1 MiB of gzip.
    block = b"0" * (1024 * 1024)
    path = raw_root / "clickstream" / f"clickstream_{DAY}_bomb.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(1024):
            out.write(block)
    return path


def header_only(raw_root: Path) -> Path:
    return _orders(raw_root, "header", [ORDERS_HEADER])


def extreme_timestamps(raw_root: Path) -> Path:
    return _orders(raw_root, "years", [
        ORDERS_HEADER,
        "O-Y9999,C0000001,9999-12-31T23:59:59Z,10.0,EUR,completed,1",
        "O-Y1850,C0000001,1850-01-01T00:00:00Z,10.0,EUR,completed,1",
    ])


def bad_amounts(raw_root: Path) -> Path:
    return _orders(raw_root, "amounts", [
        ORDERS_HEADER,
        "O-NEG,C0000001,2026-01-09T10:00:00Z,-25.0,EUR,completed,1",
        "O-NAN,C0000001,2026-01-09T10:00:00Z,NaN,EUR,completed,1",
        "O-INF,C0000001,2026-01-09T10:00:00Z,Infinity,EUR,completed,1",
    ])


def duplicate_ids(raw_root: Path) -> Path:
    return _orders(raw_root, "dups", [
        ORDERS_HEADER,
        "O-DUP,C0000001,2026-01-09T10:00:00Z,10.0,EUR,completed,1",
        "O-DUP,C0000001,2026-01-09T11:00:00Z,12.0,EUR,completed,1",
    ])


def new_column(raw_root: Path) -> Path:
    return _orders(raw_root, "newcol", [
        ORDERS_HEADER + ",coupon_code",
        "O-NEWCOL,C0000001,2026-01-09T10:00:00Z,10.0,EUR,completed,1,SAVE10",
    ])


def column_changes_type(raw_root: Path) -> Path:
    return _orders(raw_root, "type", [
        ORDERS_HEADER,
        "O-TYPE,C0000001,2026-01-09T10:00:00Z,ten euros,EUR,completed,one",
    ])


CASES: dict[str, Callable[[Path], Path]] = {
    f.__name__: f for f in (
        truncated_json, invalid_json, invalid_utf8, csv_too_few_fields, csv_too_many_fields,
        huge_field, deep_json, csv_30000_columns, empty_file, gzip_bomb, header_only,
        extreme_timestamps, bad_amounts, duplicate_ids, new_column, column_changes_type,
    )
}
# The sample that runs in `make test`; `make faults` runs them all.
SAMPLE = ("csv_too_many_fields",)
