"""What a notebook in notebooks/ needs to run the same on Databricks and on a laptop.

On Databricks a notebook finds ``spark``, ``dbutils`` and ``display`` in its globals; locally it
finds none of them. ``open_notebook(globals(), defaults)`` hides the difference: parameters come
from Databricks widgets when there are widgets, else from ``LAKEHOUSE_NB_<NAME>`` environment
variables, else from the notebook's defaults; the session is the one that exists or a new one
from the config; tables are shown with ``display`` where it exists and as text otherwise.
Notebooks call the library for everything else and never copy its logic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lakehouse.catalog import Catalog
from lakehouse.config import Config, load_config


@dataclass
class Notebook:
    spark: SparkSession
    config: Config
    catalog: Catalog
    params: dict[str, str]
    _display: Any = None

    def table(self, name: str, version: int | None = None) -> DataFrame:
        return self.catalog.read(self.spark, name, version)

    def show(self, df: DataFrame, rows: int = 20) -> None:
        """A table for the reader: Databricks' display, else plain text."""
        if self._display is not None:
            self._display(df.limit(rows))
        else:
            print(df.limit(rows).toPandas().to_string(index=False))


def notebook_params(namespace: Mapping[str, Any], defaults: Mapping[str, str]) -> dict[str, str]:
    """Widget values on Databricks, else LAKEHOUSE_NB_<NAME> variables, else the defaults."""
    dbutils = namespace.get("dbutils")
    params: dict[str, str] = {}
    for name, default in defaults.items():
        if dbutils is not None:
            dbutils.widgets.text(name, default)
            params[name] = dbutils.widgets.get(name)
        else:
            params[name] = os.environ.get(f"LAKEHOUSE_NB_{name.upper()}", default)
    return params


def open_notebook(
    namespace: MutableMapping[str, Any], defaults: Mapping[str, str] | None = None
) -> Notebook:
    """Parameters, config, session and catalog for a notebook (pass it ``globals()``).

    Known parameters: ``env`` (config overlay, default local) and ``data_dir`` (empty: the
    config's data root, or LAKEHOUSE_DATA_DIR).
    """
    params = notebook_params(namespace, {"env": "local", "data_dir": "", **(defaults or {})})
    overrides = {"data_dir": params["data_dir"]} if params["data_dir"] else None
    config = load_config(params["env"], overrides=overrides)
    spark = namespace.get("spark")
    if not isinstance(spark, SparkSession):
        from lakehouse.session import get_spark

        spark = get_spark(config, app_name="lakehouse-notebook")
        namespace["spark"] = spark
    return Notebook(spark, config, Catalog(config), params, namespace.get("display"))


HEADER = "# Databricks notebook source"
CELL_SEPARATOR = "# COMMAND ----------"


def notebook_cells(source: str) -> list[tuple[str, str]]:
    """(kind, text) of each cell of a Databricks source-format notebook; kind is "code" or
    "magic" (a cell of ``# MAGIC`` lines: markdown and the like, not run locally)."""
    lines = source.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"not a Databricks source notebook (first line is not '{HEADER}')")
    cells, current = [], []
    for line in [*lines[1:], CELL_SEPARATOR]:
        if line.strip() == CELL_SEPARATOR:
            text = "\n".join(current).strip("\n")
            if text.strip():
                body = [x for x in text.splitlines() if x.strip()]
                kind = "magic" if all(x.startswith("# MAGIC") for x in body) else "code"
                cells.append((kind, text))
            current = []
        else:
            current.append(line)
    return cells


def run_notebook(path: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute a notebook's code cells in order in one namespace (as a notebook does); returns
    the namespace. A failing cell raises with the cell number in the traceback's file name."""
    from pathlib import Path

    source = Path(path).read_text(encoding="utf-8")
    ns: dict[str, Any] = {"__name__": "__notebook__", **(namespace or {})}
    for number, (kind, text) in enumerate(notebook_cells(source), start=1):
        if kind == "code":
            exec(compile(text, f"{path}[cell {number}]", "exec"), ns)  # noqa: S102
    return ns


def main(argv: list[str]) -> int:
    """Run notebooks in order. A user's mistake (no lake yet, a wrong path) is one line and a
    non-zero exit; a bug in a cell's own code keeps its traceback (that is the useful part)."""
    import sys

    from lakehouse.errors import LakehouseError, TableNotFoundError

    if not argv:
        sys.stderr.write("usage: python -m lakehouse.notebook NOTEBOOK.py [NOTEBOOK.py ...]\n")
        return 2
    for notebook_path in argv:
        print(f"== {notebook_path}")
        try:
            run_notebook(notebook_path)
        except (LakehouseError, OSError, ValueError) as exc:
            cell = _failing_cell(exc)
            if cell is not None and not isinstance(exc, LakehouseError):
                raise
            where = notebook_path if cell is None else f"{notebook_path} [cell {cell}]"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if isinstance(exc, TableNotFoundError):
                first += " (build the lake with `lakehouse run all` or `make run`)"
            sys.stderr.write(f"lakehouse.notebook: error: {where}: {first}\n")
            return getattr(exc, "exit_code", 2)
    return 0


def _failing_cell(exc: BaseException) -> int | None:
    """Number of the notebook cell whose code raised ``exc`` (None: not inside a cell)."""
    import re
    import traceback

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        found = re.search(r"\[cell (\d+)\]$", frame.filename)
        if found:
            return int(found.group(1))
    return None


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
