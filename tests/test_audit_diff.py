"""Diffs between known versions of a planted table, time-travel errors and CLI bad input."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from delta.tables import DeltaTable

from lakehouse.audit.diff import diff_versions
from lakehouse.audit.timetravel import check_version, parse_timestamp, version_at
from lakehouse.catalog import Catalog
from lakehouse.cli import main
from lakehouse.config import load_config
from lakehouse.errors import TableNotFoundError, VersionNotAvailableError

SCHEMA = "id int, name string, value double"
V1_ROWS = [(1, "a", 1.0), (2, "b", 2.0), (3, "c", None), (4, "d", 4.0), (5, "e", 5.0)]
V2_APPEND = [(6, "f", 6.0), (7, "g", None), (7, "g", None)]  # a duplicate row on purpose
V5_MERGE = [(4, "d", 40.0), (8, "h", 8.0)]


def expected_states() -> dict[int, list[tuple]]:
    """The table after each version, applied in plain Python (independent of the diff code)."""
    v1 = list(V1_ROWS)
    v2 = v1 + V2_APPEND
    v3 = [(i, n, 20.0) if i == 2 else (i, n, v) for i, n, v in v2]
    v4 = [r for r in v3 if r[0] != 3]
    merged = {r[0]: r for r in V5_MERGE}
    v5 = [merged.pop(r[0]) if r[0] in merged else r for r in v4] + list(merged.values())
    return {1: v1, 2: v2, 3: v3, 4: v4, 5: v5}


def plant_table(spark, path: str, change_feed: bool) -> None:
    """v0 create, v1 insert, v2 append, v3 update id 2, v4 delete id 3, v5 merge (4 changed, 8 new)."""
    flag = "true" if change_feed else "false"
    spark.sql(
        f"CREATE TABLE delta.`{path}` ({SCHEMA}) USING delta "
        f"TBLPROPERTIES (delta.enableChangeDataFeed = {flag})"
    )
    spark.createDataFrame(V1_ROWS, SCHEMA).write.format("delta").mode("append").save(path)
    spark.createDataFrame(V2_APPEND, SCHEMA).write.format("delta").mode("append").save(path)
    table = DeltaTable.forPath(spark, path)
    table.update("id = 2", {"value": "20.0"})
    table.delete("id = 3")
    source = spark.createDataFrame(V5_MERGE, SCHEMA)
    (
        table.alias("t").merge(source.alias("s"), "t.id = s.id")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    )


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """A lake with silver.orders (change feed on) and silver.plain (off), same six versions."""
    root = tmp_path_factory.mktemp("audit_diff") / "data"
    config = load_config("local", overrides={"data_dir": str(root)})
    catalog = Catalog(config)
    plant_table(spark, catalog.path("silver.orders"), change_feed=True)
    plant_table(spark, catalog.path("silver.plain"), change_feed=False)
    return config


def _keyed_expectation(before: list[tuple], after: list[tuple]):
    added = Counter(after) - Counter(before)
    removed = Counter(before) - Counter(after)
    changed = {r[0] for r in added} & {r[0] for r in removed}
    only_added = sorted(r for r in added.elements() if r[0] not in changed)
    only_removed = sorted(r for r in removed.elements() if r[0] not in changed)
    return only_added, only_removed, changed


@pytest.mark.parametrize(("table", "method"), [
    ("silver.orders", "change data feed"), ("silver.plain", "snapshot comparison"),
])
def test_diff_returns_exactly_the_planted_changes(spark, planted, table, method):
    states = expected_states()
    only_added, only_removed, changed = _keyed_expectation(states[1], states[5])
    assert [r[0] for r in only_added] == [6, 7, 7, 8] and changed == {2, 4}  # the plan itself

    result = diff_versions(spark, Catalog(planted), table, 1, 5, key=("id",), sample=10)

    assert result.method == method
    assert (result.added, result.removed, result.changed) == (
        len(only_added), len(only_removed), len(changed)
    )
    assert sorted(tuple(r.values()) for r in result.added_sample) == only_added
    assert sorted(tuple(r.values()) for r in result.removed_sample) == only_removed
    changes = {r["key"]["id"]: r["columns"] for r in result.changed_sample}
    assert changes == {2: {"value": (2.0, 20.0)}, 4: {"value": (4.0, 40.0)}}


def test_diff_backwards_and_without_key(spark, planted):
    catalog = Catalog(planted)
    states = expected_states()
    back = diff_versions(spark, catalog, "silver.orders", 5, 1, key=("id",), sample=0)
    only_added, only_removed, changed = _keyed_expectation(states[5], states[1])
    assert (back.added, back.removed, back.changed) == (
        len(only_added), len(only_removed), len(changed)
    )
    unkeyed = diff_versions(spark, catalog, "silver.orders", 2, 4, key=(), sample=0)
    added = Counter(states[4]) - Counter(states[2])
    removed = Counter(states[2]) - Counter(states[4])
    assert (unkeyed.added, unkeyed.removed, unkeyed.changed) == (
        sum(added.values()), sum(removed.values()), 0
    )


def test_missing_version_and_early_timestamp_name_the_available_range(spark, planted):
    catalog = Catalog(planted)
    with pytest.raises(VersionNotAvailableError, match=r"silver\.orders has no version 9.*"
                       r"oldest available version 0 .*newest 5"):
        check_version(spark, catalog, "silver.orders", 9)
    with pytest.raises(VersionNotAvailableError, match=r"silver\.orders did not exist yet at "
                       r"2000-01-01T00:00:00Z: oldest available version 0"):
        version_at(spark, catalog, "silver.orders", datetime(2000, 1, 1, tzinfo=UTC))
    assert version_at(spark, catalog, "silver.orders", datetime.now(UTC)) == 5
    # An instant yet to come would read the newest version today and maybe another tomorrow.
    with pytest.raises(VersionNotAvailableError, match=r"2999-01-01T00:00:00Z is after now \("
                       r"[-0-9T:]+Z\): silver\.orders may still get versions before it"):
        version_at(spark, catalog, "silver.orders", datetime(2999, 1, 1, tzinfo=UTC))
    with pytest.raises(TableNotFoundError, match=r"silver\.nope is not in the catalog"):
        check_version(spark, catalog, "silver.nope", 0)
    assert parse_timestamp("2026-01-03") == datetime(2026, 1, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_timestamp("yesterday")


def test_vacuumed_version_is_reported(spark, planted, tmp_path):
    import shutil

    catalog = Catalog(planted)
    copy = Catalog(planted.with_overrides({"data_dir": str(tmp_path / "v")}))
    shutil.copytree(catalog.path("silver.plain"), copy.path("silver.plain"))
    # What VACUUM does, without its cost: delete the data files no longer in the newest version.
    def files(version: int) -> set[str]:
        df = spark.read.format("delta").option("versionAsOf", version)
        return set(df.load(copy.path("silver.plain")).inputFiles())

    stale = files(1) - files(5)
    assert stale
    for name in stale:
        Path(unquote(urlparse(name).path)).unlink()
    # The line names the first later version that can still be read, found here from the
    # file lists of the log.
    readable = min(v for v in range(2, 6) if not files(v) & stale)
    with pytest.raises(VersionNotAvailableError, match=r"version 1 of table silver\.plain can "
                       rf"no longer be read: {len(stale)} of its data files were removed "
                       rf"\(VACUUM\); oldest readable version after it {readable}, newest 5"):
        check_version(spark, copy, "silver.plain", 1)
    if readable < 5:
        assert check_version(spark, copy, "silver.plain", readable) == readable
    assert check_version(spark, copy, "silver.plain", 5) == 5


def test_diff_across_an_erasure_compares_snapshots_without_a_failed_read(spark, tmp_path):
    """An erasure's MERGE deletes rows, then VACUUM (0 hours) removes the replaced files and the
    change files: the change feed over it cannot be read any more. A diff between two readable
    versions around it compares their snapshots instead of failing a read in the executors."""
    from lakehouse.audit.timetravel import change_files_missing
    from lakehouse.privacy.erasure import vacuum_now

    catalog = Catalog(load_config("local", overrides={"data_dir": str(tmp_path / "data")}))
    path = catalog.path("silver.erased")
    groups = {0: ["a0", "a1"], 1: ["b0", "b1", "b2"], 5: ["c0"]}

    def append(ids: list[str]) -> None:
        (spark.createDataFrame([(i,) for i in ids], "id string").coalesce(1).write
         .format("delta").mode("append").option("delta.enableChangeDataFeed", "true").save(path))

    append(groups[0])
    append(groups[1])
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(spark.createDataFrame([("b1",)], "id string").alias("s"), "t.id = s.id")
     .whenMatchedDelete().execute())  # v2, then VACUUM START / END (v3, v4)
    vacuum_now(spark, catalog, "silver.erased", 0)
    append(groups[5])
    # v1's file (rewritten) and v2's change file are gone; v0's file and v5's are not.
    assert change_files_missing(catalog, "silver.erased", 1, 5) == 2
    assert change_files_missing(catalog, "silver.erased", 3, 5) == 0
    # Spark jobs of the diff run in a group of their own, to tell whether one failed.
    context = spark.sparkContext
    context.setJobGroup("diff-across-erasure", "test")
    try:
        result = diff_versions(spark, catalog, "silver.erased", 0, 5, key=("id",), sample=10)
    finally:
        context.setJobGroup(None, None)
    tracker = context.statusTracker()
    jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup("diff-across-erasure")]
    assert jobs and [j.status for j in jobs if j.status == "FAILED"] == []

    assert result.method == "snapshot comparison"
    assert "change file(s) of versions 1-5 were removed (VACUUM)" in result.note
    expected = sorted(i for i in groups[1] + groups[5] if i != "b1")
    assert (result.added, result.removed, result.changed) == (len(expected), 0, 0)
    assert sorted(r["id"] for r in result.added_sample) == expected
    later = diff_versions(spark, catalog, "silver.erased", 2, 5, key=("id",), sample=0)
    assert (later.method, later.added, later.removed) == ("change data feed", 1, 0)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_bad_input_is_one_line(spark, planted, capsys, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", planted.data_dir)
    before = {n: Catalog(planted).current_version(spark, n) for n in ("silver.orders", "silver.plain")}

    assert main(["diff", "silver.orders", "--from", "1", "--to", "42"]) == 2
    line = _one_error_line(capsys)
    assert "silver.orders has no version 42" in line and "oldest available version 0" in line
    assert "newest 5" in line

    assert main(["history", "gold.customer_360"]) == 2
    line = _one_error_line(capsys)
    assert "gold.customer_360 does not exist yet" in line, line
    assert "run the stage that writes it first" in line

    # A data directory that is not there is named as the problem, not the table.
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(Path(planted.data_dir) / "no-such-dir"))
    assert main(["history", "gold.customer_360"]) == 2
    line = _one_error_line(capsys)
    assert "no-such-dir does not exist: set LAKEHOUSE_DATA_DIR" in line, line
    assert not (Path(planted.data_dir) / "no-such-dir").exists()
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", planted.data_dir)

    assert main(["restore", "silver.plain", "--version", "17", "--yes"]) == 2
    assert "silver.plain has no version 17" in _one_error_line(capsys)

    assert main(["run", "gold", "--as-of-timestamp", "silver.orders=2000-01-01T00:00:00Z"]) == 2
    line = _one_error_line(capsys)
    assert "silver.orders did not exist yet at 2000-01-01T00:00:00Z" in line
    assert "oldest available version 0" in line

    assert main(["run", "silver", "--as-of-version", "silver.orders=1"]) == 2
    assert "not to silver" in _one_error_line(capsys)

    assert main(["diff", "silver.orders", "--from", "1", "--to", "5", "--key", "id"]) == 0
    out = capsys.readouterr().out
    assert "4 added, 1 removed, 2 changed" in out

    after = {n: Catalog(planted).current_version(spark, n) for n in before}
    assert after == before


def test_printed_samples_never_show_personal_data_in_clear():
    """diff and restore's preview print samples to terminals and job logs: names, emails and
    raw lines appear masked (first character and '***'), other columns as they are."""
    from lakehouse.audit.diff import TableDiff

    diff = TableDiff(
        "silver.customer_pii", 1, 2, "snapshot comparison", ("customer_key",), 1, 1, 1,
        added_sample=[{"customer_key": "k1", "first_name": "Jane",
                       "email": "jane.doe@example.com", "country": "DE"}],
        removed_sample=[{"customer_key": "k3", "_raw": '{"email": "old@example.com"}',
                         "phone": None}],
        changed_sample=[{"key": {"customer_key": "k2"},
                         "columns": {"email": ("a.b@example.com", "c.d@example.com"),
                                     "country": ("DE", "FR")}}],
    )
    text = "\n".join(diff.lines())
    for clear in ("Jane", "jane.doe", "old@example.com", "a.b@", "c.d@"):
        assert clear not in text
    assert "first_name='J***'" in text and "email='j***'" in text and "_raw='{***'" in text
    assert "phone=None" in text and "country='DE'" in text
    assert "email: 'a***' -> 'c***'; country: 'DE' -> 'FR'" in text
