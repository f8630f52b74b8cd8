from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.config import REPO_ROOT, load_config
from lakehouse.errors import ConfigError


def _conf_dir(tmp_path: Path, overlay: str, env: str = "local") -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    conf.joinpath("base.yaml").write_text((REPO_ROOT / "conf" / "base.yaml").read_text())
    conf.joinpath(f"{env}.yaml").write_text(overlay)
    return conf


def test_local_default_merges_overlay_over_base(monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_DATA_DIR", raising=False)
    config = load_config("local")
    assert config.get("spark.master") == "local[*]"
    assert config.get("privacy.allow_dev_key") is True  # overlay
    assert config.get("bronze.max_files_per_trigger") == 50  # base default
    assert config.data_dir == str(REPO_ROOT / "data")


def test_cluster_overlay_points_at_object_store(monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_DATA_DIR", raising=False)
    config = load_config("cluster")
    assert config.data_dir.startswith("s3a://")
    assert config.get("spark.jars_dir") == ""
    assert config.get("spark.conf")["spark.sql.adaptive.enabled"] == "true"


def test_delta_log_replay_tasks_follow_the_config(monkeypatch):
    """spark.delta_log_partitions, not the shuffle setting, sets how many tasks replay a Delta
    log: 2 on a laptop, Delta's own 50 on a cluster; fewer than 1 is refused."""
    from lakehouse.session import session_settings

    monkeypatch.delenv("LAKEHOUSE_DATA_DIR", raising=False)
    replay = "spark.databricks.delta.snapshotPartitions"
    local, cluster = load_config("local"), load_config("cluster")
    assert (session_settings(local)[replay], session_settings(cluster)[replay]) == ("2", "50")
    assert session_settings(local)["spark.sql.shuffle.partitions"] == "8"
    assert session_settings(local.with_overrides({"spark.delta_log_partitions": 5}))[replay] == "5"
    with pytest.raises(ConfigError, match="'spark.delta_log_partitions' in <override> must be "
                                          "at least 1, got 0"):
        local.with_overrides({"spark.delta_log_partitions": 0})


def test_data_dir_env_overrides_config(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_config("local").data_dir == str(tmp_path / "elsewhere")


def test_a_file_uri_with_one_slash_is_that_local_path(monkeypatch, tmp_path):
    # Hadoop prints local paths as file:/a/b; it was resolved as <repo>/file:/a/b.
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", f"file:{tmp_path / 'lake'}")
    assert load_config("local").data_dir == str(tmp_path / "lake")


def test_unknown_key_names_key_and_file(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  mastr: local[2]\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'spark.mastr' in .*local.yaml"):
        load_config("local", conf)


def test_wrong_type_names_key_type_and_file(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfigError, match=r"'spark.shuffle_partitions' in .*local.yaml must be int"):
        load_config("local", conf)


def test_a_value_below_its_minimum_names_key_minimum_and_file(tmp_path):
    conf = _conf_dir(tmp_path, "gold:\n  lookback_days: -5\n")
    with pytest.raises(ConfigError, match=r"'gold.lookback_days' in .*local.yaml must be at "
                                          r"least 1, got -5"):
        load_config("local", conf)
    with pytest.raises(ConfigError, match="'segment.k_min' in <override> must be at least 2"):
        load_config("local").with_overrides({"segment.k_min": 1})


@pytest.mark.parametrize(
    ("base", "overlay", "message"),
    [
        # An empty base.yaml was a KeyError ('data_dir'), a data_dir of 5 "data_dir is empty".
        ("", "", r"base.yaml is empty: base.yaml must declare every config key"),
        ("spark: {}\n", "", r"base.yaml does not declare data_dir: base.yaml must declare"),
        ("data_dir: 5\n", "", r"'data_dir' in .*base.yaml must be str, got int 5$"),
        ("data_dir: 5\n", "data_dir: 5\n", r"'data_dir' in .*local.yaml must be str, got int 5$"),
    ],
)
def test_a_base_without_a_usable_data_dir_names_the_file(tmp_path, base, overlay, message):
    conf = _conf_dir(tmp_path, overlay)
    conf.joinpath("base.yaml").write_text(base)
    with pytest.raises(ConfigError, match=message):
        load_config("local", conf)


def test_bool_is_not_accepted_as_a_number(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  shuffle_partitions: true\n")
    with pytest.raises(ConfigError, match="must be int"):
        load_config("local", conf)


def test_missing_environment_file_is_named_with_the_environments_there(tmp_path):
    conf = _conf_dir(tmp_path, "")
    conf.joinpath("prod.yaml").write_text("spark:\n  master: yarn\n")
    # Other YAML of conf/ (sources, rules, access matrix) is not an environment.
    conf.joinpath("sources.yaml").write_text("sources: {}\n")
    conf.joinpath("access.yaml").write_text("roles: {}\n")
    with pytest.raises(ConfigError, match=(
        r"staging.yaml not found \(needed for environment 'staging'; environments in .*conf: "
        r"local, prod\)$"
    )):
        load_config("staging", conf)


def test_the_shipped_environments_are_listed():
    with pytest.raises(ConfigError, match=r"environments in .*: cluster, local, standalone\)$"):
        load_config("staging")


def test_not_yaml_is_refused_with_line(tmp_path):
    conf = _conf_dir(tmp_path, "spark: [unclosed\n  master: x\n")
    with pytest.raises(ConfigError, match=r"local.yaml is not valid YAML at line"):
        load_config("local", conf)


def test_top_level_must_be_mapping(tmp_path):
    conf = _conf_dir(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of keys"):
        load_config("local", conf)


def test_env_name_cannot_traverse(tmp_path):
    with pytest.raises(ConfigError, match="environment name"):
        load_config("../secrets")


def test_free_form_spark_conf_and_overrides(tmp_path):
    conf = _conf_dir(tmp_path, "spark:\n  conf:\n    spark.sql.ansi.enabled: true\n")
    config = load_config("local", conf, overrides={"spark.shuffle_partitions": 3})
    assert config.get("spark.conf") == {"spark.sql.ansi.enabled": "True"}
    assert config.get("spark.shuffle_partitions") == 3
    with pytest.raises(ConfigError, match="must be int"):
        config.with_overrides({"spark.shuffle_partitions": "3"})
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        config.with_overrides({"nope": 1})


def test_digest_changes_with_values():
    a = load_config("local")
    b = a.with_overrides({"spark.shuffle_partitions": 99})
    assert a.digest() == load_config("local").digest()
    assert a.digest() != b.digest()


def test_a_line_bound_below_a_kibibyte_is_refused():
    """bronze.max_line_bytes 0 would refuse every raw file (and said 'longer than 0 MiB')."""
    from lakehouse.config import load_config
    from lakehouse.errors import ConfigError

    with pytest.raises(ConfigError, match="'bronze.max_line_bytes' .* must be at least 1024"):
        load_config("local").with_overrides({"bronze.max_line_bytes": 0})



@pytest.mark.parametrize(("edit", "place"), [
    (lambda text: text.replace('"NO", PL', "NO, PL"), "countries.codes holds false"),
    (lambda text: text.replace('norway: "NO"', "norway: NO"), "countries.names.norway holds false"),
])
def test_a_bare_no_in_the_reference_data_is_refused_naming_the_entry(tmp_path, edit, place):
    """YAML reads a bare NO as false: silver took Norway's code for the country 'FALSE' and
    quarantined every Norwegian customer as from an unknown country, without a word."""
    import shutil

    from lakehouse.config import DEFAULT_CONF_DIR
    from lakehouse.silver.transforms import load_reference

    conf = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf)
    reference = conf / "reference.yaml"
    edited = edit(reference.read_text())
    assert edited != reference.read_text()
    reference.write_text(edited)
    with pytest.raises(ConfigError) as raised:
        load_reference(load_config("local", conf))
    assert str(raised.value).startswith(f"{reference}: {place} where a code belongs"), raised.value
    assert "NO" in load_reference(load_config("local", DEFAULT_CONF_DIR)).country_codes
