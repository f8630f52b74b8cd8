"""Every notebook in notebooks/ runs end to end on an xs lake, the way a user runs it locally
(no `spark`, no `dbutils` in its globals; parameters from LAKEHOUSE_NB_* variables)."""

from __future__ import annotations

import pytest

from lakehouse.config import REPO_ROOT
from lakehouse.notebook import notebook_cells, notebook_params, run_notebook

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks_in_databricks_source_format():
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        cells = notebook_cells(path.read_text())
        assert any(kind == "magic" for kind, _ in cells), f"{path.name} has no prose"
        assert any(kind == "code" for kind, _ in cells), f"{path.name} has no code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_end_to_end(spark, full_xs_lake, path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_NB_DATA_DIR", full_xs_lake.data_dir)
    namespace = run_notebook(str(path))
    assert namespace["nb"].config.data_dir == full_xs_lake.data_dir


def test_widgets_come_from_dbutils_on_databricks():
    class Widgets:
        def __init__(self):
            self.values = {"as_of": "2026-01-02"}

        def text(self, name, default):
            self.values.setdefault(name, default)

        def get(self, name):
            return self.values[name]

    class DbUtils:
        widgets = Widgets()

    params = notebook_params({"dbutils": DbUtils()}, {"as_of": "", "role": "analyst"})
    assert params == {"as_of": "2026-01-02", "role": "analyst"}


def test_a_broken_cell_fails_with_its_number(tmp_path):
    notebook = tmp_path / "broken.py"
    notebook.write_text("# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\n"
                        "# MAGIC %md\n# MAGIC prose\n\n# COMMAND ----------\n\n1 / 0\n")
    with pytest.raises(ZeroDivisionError) as info:
        run_notebook(str(notebook))
    assert any("[cell 3]" in str(entry.path) for entry in info.traceback)


def test_a_notebook_on_an_empty_lake_says_so_in_one_line(spark, tmp_path, monkeypatch, capsys):
    from lakehouse.notebook import main

    monkeypatch.setenv("LAKEHOUSE_NB_DATA_DIR", str(tmp_path / "empty"))
    assert main([str(REPO_ROOT / "notebooks" / "02_customer_360.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "02_customer_360.py [cell" in err[0] and "does not exist yet" in err[0]
    assert "lakehouse run all" in err[0]
    assert main([str(tmp_path / "missing.py")]) == 2
    assert "missing.py" in capsys.readouterr().err
