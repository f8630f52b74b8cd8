"""Bad operator input: each refused with one clear line and a non-zero exit, nothing written."""

from __future__ import annotations

import shutil

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
