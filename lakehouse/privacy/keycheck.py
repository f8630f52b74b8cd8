"""Which key a lake's pseudonyms were made with, so that no run mixes in another.

A pseudonym is only useful as long as every table makes it with the same key: a run with
another key (a forgotten environment variable, which the local default answers with the public
development key) would give known customers new keys, link nothing to the old ones, let an
erased person's re-delivered rows past the suppression list, and have an erasure report "no
data held" for someone whose data is there.

The lake records a check value of its key in a table property of silver.identity_map (the
table that links every pseudonym) the first time silver writes it: HMAC-SHA256 of a fixed
message under the key. That reveals nothing about the key (HMAC is a keyed pseudo-random
function), but the same key always gives the same value. Every job that makes or looks up
pseudonyms compares its key with the recorded one before it reads anything.
"""

from __future__ import annotations

import hashlib
import hmac

from pyspark.sql import SparkSession

from lakehouse.catalog import Catalog
from lakehouse.config import Config
from lakehouse.errors import ConfigError
from lakehouse.privacy.pseudonym import DEV_KEY, pseudonym_key

KEY_CHECK_TABLE = "silver.identity_map"
KEY_CHECK_PROPERTY = "lakehouse.pseudonymKeyCheck"
_CHECK_MESSAGE = b"lakehouse pseudonymisation key check"


def key_check_value(key: bytes) -> str:
    return hmac.new(key, _CHECK_MESSAGE, hashlib.sha256).hexdigest()


def recorded_key_check(spark: SparkSession, catalog: Catalog) -> str | None:
    """The lake's recorded check value; None when it has none (no silver yet, or a lake
    built before the check existed)."""
    if not catalog.exists(spark, KEY_CHECK_TABLE):
        return None
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, catalog.path(KEY_CHECK_TABLE)).detail()
    properties = detail.select("properties").first()["properties"] or {}
    return properties.get(KEY_CHECK_PROPERTY)


def lake_pseudonym_key(
    spark: SparkSession, config: Config, catalog: Catalog | None = None
) -> bytes:
    """The pseudonymisation key (pseudonym_key), refused with one line when the lake's
    pseudonyms were made with another."""
    key = pseudonym_key(config)
    recorded = recorded_key_check(spark, catalog or Catalog(config))
    if recorded is not None and recorded != key_check_value(key):
        var = config.get("privacy.pseudonym_key_env")
        used = (f"{var} is not set and the public development key" if key == DEV_KEY
                else f"the key in {var}")
        raise ConfigError(
            f"{used} is not the key this lake's pseudonyms were made with (the check value "
            f"recorded in {KEY_CHECK_TABLE}'s table properties differs): set {var} to the "
            f"lake's key; nothing was read or changed"
        )
    return key


def record_key_check(spark: SparkSession, catalog: Catalog, key: bytes) -> None:
    """Record the key's check value on the lake, unless it has one (one commit, once)."""
    if recorded_key_check(spark, catalog) is not None:
        return
    spark.sql(
        f"ALTER TABLE delta.`{catalog.path(KEY_CHECK_TABLE)}` SET TBLPROPERTIES "
        f"('{KEY_CHECK_PROPERTY}' = '{key_check_value(key)}')"
    )
