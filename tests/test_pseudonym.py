"""Keyed pseudonyms: HMAC-SHA256 in Spark built-ins equals Python's hmac; key handling."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.errors import ConfigError
from lakehouse.privacy.pseudonym import (
    _WARNED_DEV_KEY,
    DEV_KEY,
    normalise,
    pseudonym,
    pseudonym_key,
)


def _py_hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", [b"k", b"s3cret-key", bytes(range(200))])  # < and > block size
def test_hmac_matches_python_hmac(spark, key):
    values = ["anna@example.com", "Łukasz Wiśniewski 🛍️", "", None, "anna@example.com"]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    got = df.select("v", pseudonym("crm", F.col("v"), key).alias("p"))
    expected = spark.createDataFrame(
        [(v, _py_hmac(key, f"crm:{v.strip()}") if v else None) for v in values],
        "v string, p string",
    )
    assertDataFrameEqual(got, expected)


def test_normalisation_per_kind(spark):
    rows = [
        ("  Anna.Smith@GMail.com ", "@Anna_S1", "+49 (0)301 1234567"),
        ("anna.smith@gmail.com", "anna_s1", "0049 301-1234567"),
        (None, "  ", "(0301) 1234567"),
        ("anna.smith@gmail.com", "@Anna_S1", "+49 (0)301 1234567"),  # duplicate
    ]
    df = spark.createDataFrame(rows, "email string, handle string, phone string")
    got = df.select(
        normalise("email", F.col("email")).alias("email"),
        normalise("handle", F.col("handle")).alias("handle"),
        normalise("phone", F.col("phone")).alias("phone"),
    )
    expected = spark.createDataFrame(
        [
            ("anna.smith@gmail.com", "@anna_s1", "+493011234567"),
            ("anna.smith@gmail.com", "@anna_s1", "+493011234567"),
            (None, None, "03011234567"),
            ("anna.smith@gmail.com", "@anna_s1", "+493011234567"),
        ],
        "email string, handle string, phone string",
    )
    assertDataFrameEqual(got, expected)


def test_key_comes_from_the_environment_and_dev_key_only_where_allowed(config, caplog):
    env_var = config.get("privacy.pseudonym_key_env")
    assert pseudonym_key(config, {env_var: "from-env"}) == b"from-env"
    _WARNED_DEV_KEY.discard(env_var)  # as in a fresh process
    with caplog.at_level(logging.WARNING):
        assert pseudonym_key(config, {}) == DEV_KEY  # local default allows the dev key
        assert pseudonym_key(config, {}) == DEV_KEY  # a later stage of the same run
    assert env_var in caplog.text and DEV_KEY.decode() not in caplog.text
    assert caplog.text.count("NOT secret") == 1, caplog.text  # one warning line per run
    strict = config.with_overrides({"privacy.allow_dev_key": False})
    with pytest.raises(ConfigError, match=env_var) as raised:
        pseudonym_key(strict, {})
    # Where the fallback was turned off (an emptied local.yaml, base.yaml's false): the line
    # said only the local environment may fall back, under --env local.
    assert str(raised.value).endswith(
        "only where privacy.allow_dev_key is true (the shipped local and standalone configs), "
        "and an override leaves it false"), raised.value
