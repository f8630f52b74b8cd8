"""Source declarations (conf/sources.yaml): a value of the wrong type is one clear line."""

from __future__ import annotations

import shutil

import pytest
import yaml

from lakehouse.config import DEFAULT_CONF_DIR, load_config
from lakehouse.errors import ConfigError
from lakehouse.sources import load_sources


def _sources_with(tmp_path, key: str, value: object):
    """The shipped conf/ with one key of the orders source set to ``value``, loaded."""
    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    path = conf / "sources.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["sources"]["orders"][key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return load_sources(load_config("local", conf))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", ["csv"], "format must be one of csv, json, got list ['csv']"),
        ("natural_key", 5, "natural_key must be a column name or a list of column names, got int 5"),
        ("natural_key", None, "natural_key must be a column name or a list of column names, got null"),
        ("pii", 5, "pii must be a column name or a list of column names, got int 5"),
        ("event_time", None, "event_time must be a column name, got null"),
        ("event_time", ["order_ts"], "event_time must be a column name, got list ['order_ts']"),
    ],
)
def test_a_value_of_the_wrong_type_names_source_key_and_file(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as raised:
        _sources_with(tmp_path, key, value)
    assert str(raised.value) == f"source 'orders' in {tmp_path}/conf/sources.yaml: {message}"


def test_a_natural_key_written_as_one_name_is_that_column(tmp_path):
    # It was read letter by letter: "natural_key names undeclared column(s) o, r, d, e, r, ...".
    assert _sources_with(tmp_path, "natural_key", "order_id")["orders"].natural_key == ("order_id",)
