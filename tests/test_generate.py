"""The synthetic raw-data generator: determinism, prefix stability, layout, and planted defects
re-counted from the files independently of the generator's own bookkeeping. No Spark."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from lakehouse.errors import InputDataError
from lakehouse.generate import SCALES, generate

REPO = Path(__file__).resolve().parents[1]
SOURCES = yaml.safe_load((REPO / "conf" / "sources.yaml").read_text())["sources"]
EXT = {"csv": "csv", "json": "jsonl"}
# Declared columns that are legitimately empty / null in clean records.
OPTIONAL = {
    "crm_customers": {"data_expiry_date", "social_handle"},
    "clickstream": {"customer_id", "channel", "campaign"},
    "iot_readings": {"error_code"},
}
DRIFT = {"clickstream": "user_agent", "orders": "discount_code"}
HIGH_RATES = {"malformed_json": 0.08, "wrong_type": 0.08, "missing_key": 0.08,
              "duplicate": 0.1, "late_event": 0.1}


@pytest.fixture(scope="module")
def xs_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("xs")
    return out, generate(out, "xs", seed=7, progress=False)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """High defect rates, so every kind shows up in every source even at scale xs."""
    out = tmp_path_factory.mktemp("noisy")
    return out, generate(out, "xs", seed=11, days=6, progress=False, defect_rates=HIGH_RATES)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def day_files(root: Path, source: str) -> list[Path]:
    decl = SOURCES[source]
    return sorted((root / decl["raw_dir"]).glob(f"{source}_*.{EXT[decl['format']]}"))


def file_date(path: Path) -> date:
    return date.fromisoformat(re.search(r"(\d{4}-\d{2}-\d{2})", path.name).group(1))


def parses(value: object, kind: str) -> bool:
    """Does a present value parse as the declared type? (Independent of the generator.)"""
    if kind == "string":
        return True
    if isinstance(value, bool):
        return kind == "boolean"
    if isinstance(value, int | float):
        return kind in ("int", "double") and (kind == "double" or isinstance(value, int))
    text = str(value)
    try:
        if kind == "int":
            int(text)
        elif kind == "double":
            float(text)
        elif kind == "boolean":
            return text in ("true", "false")
        elif kind == "date":
            return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)) and bool(
                date.fromisoformat(text))
        elif kind == "timestamp":
            return re.match(r"\d{4}-\d{2}-\d{2}T", text) is not None and \
                datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False
    return True


def utc_date(text: str) -> date:
    return datetime.fromisoformat(text).astimezone(UTC).date()


def recount(root: Path, source: str) -> list[tuple[int, Counter]]:
    """(rows, defect counts) per daily file, derived from the files alone."""
    decl = SOURCES[source]
    columns, types = list(decl["columns"]), decl["columns"]
    required = [c for c in columns if c not in OPTIONAL.get(source, set())]
    key, event_time = decl["natural_key"][0], decl["event_time"]
    seen: set = set()
    result = []
    for path in day_files(root, source):
        counts: Counter = Counter()
        text = path.read_text(encoding="utf-8")
        records: list[tuple[object, dict]] = []
        if decl["format"] == "csv":
            rows = list(csv.reader(io.StringIO(text)))
            header, body = rows[0], rows[1:]
            assert header[:len(columns)] == columns
            if len(header) > len(columns):
                assert header[len(columns):] == [DRIFT[source]]
                counts["schema_drift"] = len(body)
            for row in body:
                assert len(row) == len(header), (path, row)
                record = dict(zip(header, row, strict=True))
                # CRM updates legitimately repeat customer_id: a re-delivery is the same row.
                ident = tuple(row) if source == "crm_customers" else record[key]
                records.append((ident, record))
        else:
            lines = text.split("\n")
            assert lines[-1] == ""
            for line in lines[:-1]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict):
                    counts["malformed_json"] += 1
                    continue
                counts["schema_drift"] += DRIFT.get(source) in record
                records.append((record.get(key), record))
        for ident, record in records:
            if ident in seen:
                counts["duplicate"] += 1
                continue
            seen.add(ident)
            if any(record.get(c) in (None, "") for c in required):
                counts["missing_key"] += 1
            elif any(record[c] not in (None, "") and not parses(record[c], types[c])
                     for c in columns):
                counts["wrong_type"] += 1
            elif source != "crm_customers" and utc_date(record[event_time]) < file_date(path):
                counts["late_event"] += 1
        result.append((len(records) + counts["malformed_json"], counts))
    return result


def assert_manifest_matches_files(root: Path, manifest: dict) -> None:
    for source in SOURCES:
        info = manifest["sources"][source]
        found = recount(root, source)
        assert len(found) == info["files"] == len(info["file_details"])
        for (rows, counts), detail in zip(found, info["file_details"], strict=True):
            assert rows == detail["rows"], (source, detail["path"])
            expected = {kind: n for kind, n in detail["defects"].items() if n}
            assert dict(+counts) == expected, (source, detail["path"])
        assert info["rows"] == sum(rows for rows, _ in found)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", "xs", seed=3, days=2, progress=False)
    second = generate(tmp_path / "b", "xs", seed=3, days=2, progress=False)
    generate(tmp_path / "c", "xs", seed=4, days=2, progress=False)
    a, b, c = (tree(tmp_path / name) for name in "abc")
    assert a == b and first == second
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a if "clickstream" in name)


def test_more_days_leave_earlier_files_unchanged(tmp_path: Path) -> None:
    generate(tmp_path / "short", "xs", seed=5, days=2, progress=False)
    generate(tmp_path / "long", "xs", seed=5, days=3, progress=False)
    short, long = tree(tmp_path / "short"), tree(tmp_path / "long")
    day_files_short = {n: v for n, v in short.items() if not n.startswith("_")}
    assert len(day_files_short) == 2 * len(SOURCES)
    assert all(long[name] == content for name, content in day_files_short.items())
    assert sum("2026-01-03" in name for name in long) == len(SOURCES)


def test_layout_headers_and_ground_truth(xs_run: tuple[Path, dict]) -> None:
    root, manifest = xs_run
    assert json.loads((root / "_manifest.json").read_text()) == manifest
    assert (manifest["scale"], manifest["seed"], manifest["days"]) == ("xs", 7, SCALES["xs"].days)
    drift_from = date.fromisoformat(manifest["schema_drift_from"])
    crm_ids = set()
    for source, decl in SOURCES.items():
        files = day_files(root, source)
        assert [file_date(p).isoformat() for p in files] == \
            ["2026-01-01", "2026-01-02", "2026-01-03"]
        if decl["format"] != "csv":
            continue
        for path in files:
            header = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
            drifted = source in DRIFT and file_date(path) >= drift_from
            assert header == list(decl["columns"]) + ([DRIFT[source]] if drifted else [])
            if source == "crm_customers":
                crm_ids |= {r["customer_id"] for r in csv.DictReader(path.open(encoding="utf-8"))
                            if r["customer_id"]}
    truth = list(csv.DictReader((root / "_ground_truth" / "archetypes.csv").open()))
    assert crm_ids <= {r["customer_id"] for r in truth}
    assert len(truth) == manifest["customers"]
    assert len({r["archetype"] for r in truth}) == 6


def test_manifest_counts_match_files_at_default_rates(xs_run: tuple[Path, dict]) -> None:
    root, manifest = xs_run
    assert_manifest_matches_files(root, manifest)
    clicks = manifest["sources"]["clickstream"]["defects"]
    assert clicks["late_event"] > 0 and clicks["schema_drift"] > 0


def test_manifest_counts_match_files_with_every_defect_planted(
        noisy_run: tuple[Path, dict]) -> None:
    root, manifest = noisy_run
    assert_manifest_matches_files(root, manifest)
    for source, info in manifest["sources"].items():
        assert all(n > 0 for n in info["defects"].values()), (source, info["defects"])
    # Rates are shares of the lines actually written (pooled: small files are noisy).
    for kind in ("malformed_json", "wrong_type", "missing_key", "duplicate", "late_event"):
        carriers = [i for i in manifest["sources"].values() if kind in i["defects"]]
        planted = sum(info["defects"][kind] for info in carriers)
        lines = sum(info["rows"] for info in carriers)
        assert planted / lines == pytest.approx(HIGH_RATES[kind], rel=0.2), kind


def test_orders_follow_a_checkout_of_the_same_customer(xs_run: tuple[Path, dict]) -> None:
    root, _ = xs_run
    checkouts: dict[str, list[datetime]] = {}
    for path in day_files(root, "clickstream"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event_type") == "checkout":
                stamp = datetime.fromisoformat(event["event_ts"])
                checkouts.setdefault(event["customer_id"], []).append(stamp)
    orders = [r for p in day_files(root, "orders") for r in csv.DictReader(p.open())]
    checked = 0
    for order in orders:
        if not order["customer_id"] or not parses(order["order_ts"], "timestamp"):
            continue
        placed = datetime.fromisoformat(order["order_ts"])
        assert any(0 < (placed - t).total_seconds() <= 600
                   for t in checkouts.get(order["customer_id"], [])), order
        checked += 1
    assert checked > 10


def test_cookies_browse_anonymously_before_logging_in(xs_run: tuple[Path, dict]) -> None:
    root, _ = xs_run
    anonymous, known = set(), set()
    for path in day_files(root, "clickstream"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and "cookie_id" in event:
                (known if event.get("customer_id") else anonymous).add(event["cookie_id"])
    assert anonymous & known


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scale": "xxl"}, "unknown scale 'xxl'"),
    ({"scale": "xs", "days": 0}, "days must be an integer of at least 1"),
    ({"scale": "xs", "days": -2}, "days must be"),
    ({"scale": "xs", "days": 3661}, "days must be at most 3660"),
    ({"scale": "xs", "start_date": "2026-02-30"}, "not a valid calendar date"),
    ({"scale": "xs", "start_date": "01/02/2026"}, "start_date must be a date YYYY-MM-DD"),
    ({"scale": "xs", "defect_rates": {"typos": 0.1}}, "unknown defect kind"),
])
def test_bad_arguments_raise_input_data_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputDataError, match=message):
        generate(tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_fewer_days_of_the_same_generation_are_refused_and_every_file_kept(
    tmp_path: Path,
) -> None:
    """Delivered files may have been landed by bronze: deleting them would leave a raw folder
    that no longer rebuilds the lake. Another generation replaces every file (and so removes
    the extra days, which bronze would otherwise ingest as that generation's)."""
    generate(tmp_path, "xs", days=3, progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(InputDataError, match="up to 2026-01-03: --days 1 would delete.*"
                                             "pass --days 3 or more"):
        generate(tmp_path, "xs", days=1, progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    generate(tmp_path, "xs", seed=7, days=1, progress=False)
    assert all(len(day_files(tmp_path, source)) == 1 for source in SOURCES)


def test_more_days_into_the_same_folder_keep_the_files_already_there(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    generate(root, "xs", seed=5, days=2, progress=False)
    # An erasure removed a person's line from a delivered file: it must not come back.
    orders = root / "orders" / "orders_2026-01-01.csv"
    lines = orders.read_bytes().splitlines(keepends=True)
    erased = lines[:1] + lines[2:]
    orders.write_bytes(b"".join(erased))

    manifest = generate(root, "xs", seed=5, days=3, progress=False)
    fresh = generate(tmp_path / "fresh", "xs", seed=5, days=3, progress=False)
    assert orders.read_bytes() == b"".join(erased)
    ours, theirs = tree(root), tree(tmp_path / "fresh")
    assert ours.keys() == theirs.keys()
    assert [n for n in ours if ours[n] != theirs[n]] == ["orders/orders_2026-01-01.csv"]
    assert manifest == fresh

    # Another seed is another generation: every file is written anew.
    generate(root, "xs", seed=6, days=3, progress=False)
    other = generate(tmp_path / "other", "xs", seed=6, days=3, progress=False)
    assert tree(root) == tree(tmp_path / "other") and other["seed"] == 6
