"""Bad operator input: each refused with one clear line and a non-zero exit, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from faultlib import record

from lakehouse.cli import COMMANDS, build_parser, main
from lakehouse.config import DEFAULT_CONF_DIR


def _one_line_error(capsys, argv: list[str], expect: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, None), f"{argv} was accepted"
    assert len(err) == 1, f"{argv}: expected one line, got {err}"
    assert expect in err[0], f"{argv}: {err[0]!r} does not say {expect!r}"


def test_unknown_stage(capsys):
    _one_line_error(capsys, ["run", "nosuchstage"], "nosuchstage")
    record("operator input", "unknown stage", True)


def test_config_that_is_not_yaml(capsys, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    (conf / "local.yaml").write_text("spark: [unclosed\n  master: {{{\n")
    _one_line_error(capsys, ["run", "bronze", "--conf-dir", str(conf)], "local.yaml")
    record("operator input", "config not YAML", True)


def test_data_dir_that_cannot_be_written(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(blocker / "data"))
    _one_line_error(capsys, ["run", "bronze"], str(blocker / "data"))
    record("operator input", "data dir not writable", True)


@pytest.mark.parametrize("name", ["../x", "gold/../../etc", "x; DROP TABLE y", "gold.x'--",
                                  'gold."x"'])
def test_table_names_with_traversal_quotes_or_sql(capsys, xs_lake, monkeypatch, name):
    build_parser()  # registers the commands of optional modules
    if "history" not in COMMANDS:
        pytest.skip("no `lakehouse history` command in this version")
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", xs_lake.data_dir)
    _one_line_error(capsys, ["history", name], "invalid table name")
    record("operator input", f"table name {name!r}", True)


def test_restore_to_a_vacuumed_version(capsys, spark, tmp_path, monkeypatch):
    from lakehouse.catalog import Catalog
    from lakehouse.config import load_config

    data = tmp_path / "data"
    catalog = Catalog(load_config("local", overrides={"data_dir": str(data)}))
    path = catalog.path("gold.customer_360")
    spark.range(5).write.format("delta").save(path)
    old_files = set(spark.read.format("delta").load(path).inputFiles())
    spark.range(5, 9).write.format("delta").mode("overwrite").save(path)
    # What VACUUM does to version 0, without waiting out its retention: its files go.
    for uri in old_files:
        Path(urlparse(uri).path).unlink()
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(data))
    _one_line_error(capsys, ["restore", "gold.customer_360", "--version", "0", "--yes"],
                    "VACUUM")
    assert sorted(r.id for r in spark.read.format("delta").load(path).collect()) == [5, 6, 7, 8]
    record("operator input", "restore to a vacuumed version", True)
