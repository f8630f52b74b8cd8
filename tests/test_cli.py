"""Bad input to any command: one clear line on stderr, a non-zero exit, no stack trace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from lakehouse.cli import main


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "nonsense"], None, "invalid choice: 'nonsense'"),
        (["generate", "--scale", "xxl"], None, "invalid choice: 'xxl'"),
        (["generate", "--scale", "xs", "--days", "0"], None, "0 must be at least 1"),
        # An extra digit or three wrote day files for hours, until the disk was full.
        (["generate", "--scale", "xs", "--days", "36500"], None, "days must be at most 3660"),
        (["run", "bronze", "--env", "nope"], None, "nope.yaml not found"),
        (["run", "bronze", "--as-of", "yesterday"], None, "not a date of the form YYYY-MM-DD"),
        # A mistyped year: gold would fill KPI days up to it, retention would erase people
        # whose expiry date has not come, publish would spend budget on an empty week grid.
        (["run", "all", "--as-of", "2999-01-03"], None, "2999-01-03 is after today"),
        (["run", "retention", "--as-of", "2999-01-03"], None, "2999-01-03 is after today"),
        (["publish", "--as-of", "2999-01-03"], None, "2999-01-03 is after today"),
        # Gold's own date may come from the data, which one customer can move: a release's
        # date is always given.
        (["publish"], None, "the following arguments are required: --as-of"),
        (["run", "bronze"], {"LAKEHOUSE_DATA_DIR": "/proc/lakehouse"}, "cannot be created"),
        (["run", "bronze"], {"LAKEHOUSE_DATA_DIR": "/etc/hostname"},
         "data directory /etc/hostname is a file, not a folder"),
        ([], None, "the following arguments are required: COMMAND"),
        (["erase", "--customer-id", " ", "--yes"], None, "argument --customer-id: is empty"),
        # Output paths are checked when the command line is read, not after a long run.
        (["subject-report", "--customer-id", "C1", "--json", "/tmp"], None,
         "'/tmp' is a folder, not a file name"),
        (["subject-report", "--customer-id", "C1", "--json", "/etc/hostname/r.json"], None,
         "/etc/hostname is a file, not a folder"),
        (["attribution", "--paths", "p.csv", "--output", "/tmp"], None,
         "'/tmp' is a folder, not a file name"),
        # A mistyped option points at the help of the command it was given to.
        (["run", "all", "--asof", "2026-01-03"], None,
         "lakehouse run: error: unrecognized arguments: --asof 2026-01-03 "
         "(see lakehouse run --help)"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, env, message):
    result = _run(*args, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_help_exists_on_every_command():
    for args in ([], ["generate"], ["run"], ["attribution"]):
        result = _run(*args, "--help")
        assert result.returncode == 0 and "usage: lakehouse" in result.stdout


def test_bronze_on_empty_data_dir_names_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    assert main(["run", "bronze"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lakehouse generate" in err[0]


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    """A log file (cron, CI, `| tee`) gets no carriage-return frames between its lines."""
    import io

    from lakehouse.config import load_config
    from lakehouse.session import session_settings

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    config = load_config("local")
    assert config.get("spark.show_progress") is True
    shown = "spark.ui.showConsoleProgress"
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert session_settings(config)[shown] == "true"
    quiet = config.with_overrides({"spark.show_progress": False})
    assert session_settings(quiet)[shown] == "false"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert session_settings(config)[shown] == "false"
    assert session_settings(config, show_progress=True)[shown] == "true"  # asked for: kept
    monkeypatch.undo()

    # The generator's bar (tqdm) likewise: its stderr here is a pipe.
    result = _run("generate", "--scale", "xs", env={"LAKEHOUSE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "generated scale xs" in result.stdout
    assert "\r" not in result.stderr and "file/s" not in result.stderr, result.stderr


def _run_all_is_refused_before_bronze(conf, tmp_path, capsys, monkeypatch, message) -> None:
    """`run all` with the conf folder ``conf``: exit 2, one error line holding ``message``,
    and no table written (the data folder is empty, so bronze, had it run first, would have
    failed with its own message instead)."""
    from lakehouse.config import CONF_DIR_ENV

    monkeypatch.setenv(CONF_DIR_ENV, str(conf))
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path / "data"))
    assert main(["run", "all", "--as-of", "2026-01-03"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "data" / "lake").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"attribution.order": 7},
         "'attribution.order': Markov order must be one of 1, 2, 3, 4, got 7 (or 0: chosen"),
        ({"attribution.ci_level": 1.5}, "'attribution.ci_level': confidence level must be"),
        ({"attribution.ci_level": None}, "confidence level must be a number, got None"),
        ({"segment.k_max": None}, "segment.k_min / k_max must be whole numbers"),
        ({"segment.gate.min_segment_share": None}, "min_segment_share must be numbers"),
        ({"attribution.position_weights": [0.5, 0.5, 0.5]},
         "'attribution.position_weights': position weights must add up to 1"),
        ({"attribution.half_life_days": 0.0}, "'attribution.half_life_days': half-life must be"),
        ({"segment.k_min": 6, "segment.k_max": 5}, "2 <= k_min <= k_max, got 6 / 5"),
        ({"segment.gate.silhouette_tolerance": -0.1}, "silhouette_tolerance must be at least 0"),
        ({"segment.gate.min_segment_share": 0.5}, "min_segment_share must be between 0 and"),
        ({"gold.include_channels": ["search", " "]}, "gold.include_channels holds invalid"),
    ],
)
def test_stage_settings_are_checked_before_the_first_stage_runs(
    tmp_path, capsys, monkeypatch, override, message
):
    """A bad attribution or segment setting stops `run all` before bronze writes anything (it
    used to surface after bronze, silver and gold had committed). The data folder is empty,
    so bronze, had it run first, would have failed with its own message instead."""
    from childconf import _as_yaml

    from lakehouse.config import DEFAULT_CONF_DIR

    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    with (conf / "local.yaml").open("a", encoding="utf-8") as env_file:
        env_file.write(_as_yaml(override))
    _run_all_is_refused_before_bronze(conf, tmp_path, capsys, monkeypatch, message)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("quality.yaml", "{kind: not_null, column: email, severity: warn}",
         "{kind: not_null, column: email, severity: warn, threshold: high}",
         "crm_customers.rules[2]: threshold must be a number between 0 and 1"),
        ("quality.yaml", "pattern: '^\\s*[^@\\s]+@", "pattern: '^\\s*[^@\\s+@",
         "crm_customers rule 'regex:email': pattern"),
        ("quality.yaml", "ref_table: silver.customers", "ref_table: silver.custmers",
         "ref_table silver.custmers is not a silver table a source writes"),
        ("sources.yaml", "      n_items: int\n", "      n_items: int\n      order_id: long\n",
         "natural_key column(s) order_id must be declared string"),
    ],
)
def test_a_mistake_in_rules_or_sources_stops_run_all_before_bronze(
    tmp_path, capsys, monkeypatch, file, old, new, message
):
    """conf/quality.yaml used to be read by silver only: `run all` landed bronze first, and
    some mistakes surfaced as a traceback or after silver tables had been merged."""
    from lakehouse.config import DEFAULT_CONF_DIR

    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    text = (conf / file).read_text(encoding="utf-8")
    assert old in text
    (conf / file).write_text(text.replace(old, new, 1), encoding="utf-8")
    _run_all_is_refused_before_bronze(conf, tmp_path, capsys, monkeypatch, message)


def test_an_empty_markov_order_still_means_automatic():
    from lakehouse.config import load_config
    from lakehouse.pipeline import attribute_options

    for order in (0, None):  # `order: 0` or a blank `order:` in YAML
        config = load_config("local").with_overrides({"attribution.order": order})
        assert attribute_options(config)["order"] is None


@pytest.mark.parametrize("argv", [
    ["history", "gold.kpi_daily", "--limit", "3000000000"],
    ["show", "gold.kpi_daily", "--role", "analyst", "--limit", "99999999999999999999"],
    ["diff", "gold.kpi_daily", "--from", "0", "--to", "1", "--sample", "2147483648"],
])
def test_a_number_beyond_a_java_int_is_a_usage_error(argv, capsys):
    """Spark takes these as Java ints: a larger one failed in the JVM with a stack trace."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be at most 2147483647" in err and "Traceback" not in err


def test_a_table_pinned_twice_is_refused(tmp_path, capsys, monkeypatch):
    """The last of two pins silently won: gold was built from a version the other pin
    excluded."""
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path / "data"))
    code = main(["run", "gold", "--as-of-version", "silver.orders=0",
                 "--as-of-timestamp", "silver.orders=2026-01-02T00:00:00"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "silver.orders pinned more than once" in err[0], err


def test_a_spark_error_line_gives_the_deepest_cause_a_wrapper_hides():
    """Spark 4 wraps a task's error (FAILED_READ_FILE ... 'Encountered error'): the line says
    the cause too, once; a LakehouseError is its own text."""
    from lakehouse.errors import InputDataError, error_line

    wrapped = Exception(
        "An error occurred while calling o95.save.\n: org.apache.spark.SparkException: "
        "[FAILED_READ_FILE.NO_HINT] Encountered error while reading file file:/r/a.csv.gz.\n"
        "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(x)\n"
        "Caused by: org.apache.spark.SparkException: Task failed\n"
        "Caused by: java.io.IOException: not a gzip file\n\tat y")
    assert error_line(wrapped) == (
        "org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] Encountered error while "
        "reading file file:/r/a.csv.gz. (caused by java.io.IOException: not a gzip file)")
    plain = Exception(": java.lang.ArithmeticException: / by zero\nCaused by: / by zero")
    assert error_line(plain) == "java.lang.ArithmeticException: / by zero"
    assert error_line(InputDataError("raw file x is bad")) == "raw file x is bad"


def test_steps_failing_side_by_side_are_each_said(capsys):
    """The first failing step's error is raised; the others were said nowhere (in a local
    session Spark logs no failed task): they are notes the CLI prints, one line each."""
    from lakehouse.cli import _write_notes
    from lakehouse.errors import InputDataError
    from lakehouse.parallel import side_by_side

    def step(name: str) -> str:
        if name != "ok":
            raise InputDataError(f"{name} failed")
        return name

    with pytest.raises(InputDataError, match="^first failed") as raised:
        # (match reads the notes too)
        side_by_side(step, ["ok", "first", "second", "third"], 2, "t")
    _write_notes(raised.value)
    assert capsys.readouterr().err.splitlines() == [
        "lakehouse: error: also failed: second failed",
        "lakehouse: error: also failed: third failed",
    ]
    assert side_by_side(step, ["ok", "ok"], 2, "t") == ["ok", "ok"]

