"""Keyed pseudonyms: HMAC-SHA256 computed with Spark's built-in ``sha2``, no Python UDF.

``pseudonym(kind, value) = hex(HMAC-SHA256(key, kind + ":" + normalised value))`` (see
docs/tables.md). A keyed HMAC rather than a plain hash because a plain hash of an email or phone
number is reversed by hashing every plausible value (a dictionary attack); without the key
that is impossible.

HMAC(K, m) = H((K' xor opad) || H((K' xor ipad) || m)), K' = K padded with zeros to the hash's
block size (64 bytes for SHA-256; a longer key is hashed first). The two padded keys depend
only on the key, so they are computed once in Python and enter the plan as binary literals;
Spark then evaluates two ``sha2`` calls per value.

The key comes from the environment variable named by ``privacy.pseudonym_key_env``. When it is
unset, ``privacy.allow_dev_key`` (true only in the local default) allows the public
development key DEV_KEY below, announced by one warning line; any other environment refuses to
run. Pseudonyms made with the development key are not secret: anyone can recompute them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

from lakehouse.config import Config
from lakehouse.errors import ConfigError

log = logging.getLogger(__name__)

# Documented, public, and therefore NOT a secret: only for local runs and tests.
DEV_KEY = b"lakehouse-public-development-key-do-not-use-in-production"
BLOCK_SIZE = 64  # SHA-256 block size in bytes
KINDS = ("crm", "email", "phone", "handle", "cookie", "device", "order", "raw")
# What Python's str.strip() removes (tab, no-break space, ...). Spark's trim takes only the
# space: 'C1\t' or an email with a pasted no-break space got a pseudonym of its own, and the
# Python side (erasure requests) and the Spark side disagreed on the same value.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


_OTHER_WHITESPACE = [c for c in WHITESPACE if c != " "]


def trim_whitespace(value: Column | str) -> Column:
    """``value`` without leading and trailing WHITESPACE.

    Spark's btrim with a set of characters scans and allocates per value (typing a 1.5M-row
    source took 3.5x as long), so the space is trimmed the fast way and btrim runs only on
    the rare values that still begin or end with other whitespace."""
    trimmed = F.trim(F.col(value) if isinstance(value, str) else value)
    other_at_an_end = (F.substring(trimmed, 1, 1).isin(*_OTHER_WHITESPACE)
                       | F.substring(trimmed, -1, 1).isin(*_OTHER_WHITESPACE))
    return F.when(other_at_an_end, F.btrim(trimmed, F.lit(WHITESPACE))).otherwise(trimmed)
# Environment variables whose absence this process has announced already.
_WARNED_DEV_KEY: set[str] = set()


def pseudonym_key(config: Config, environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key from the configured environment variable (never logged)."""
    env = os.environ if environ is None else environ
    var = config.get("privacy.pseudonym_key_env")
    value = env.get(var, "")
    if value:
        return value.encode("utf-8")
    if config.get("privacy.allow_dev_key"):
        if var not in _WARNED_DEV_KEY:
            # Once per process: every stage of `run all` asks for the key.
            _WARNED_DEV_KEY.add(var)
            log.warning(
                "%s is not set: using the public development pseudonymisation key; pseudonyms "
                "of this run are NOT secret (set %s for real data)", var, var,
            )
        return DEV_KEY
    setting = config.origin("privacy.allow_dev_key")
    raise ConfigError(
        f"environment variable {var} is not set: it must hold the secret pseudonymisation key "
        f"(privacy.pseudonym_key_env); the public development key is used instead only where "
        f"privacy.allow_dev_key is true (the shipped local and standalone configs), and "
        f"{setting} leaves it false"
    )


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK_SIZE, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_hex(key: bytes, message: Column) -> Column:
    """Lower-case hex HMAC-SHA256 of a string column (UTF-8); null stays null."""
    ipad, opad = _pads(key)
    # Hex literals rather than Python bytes: they plan the same way under Spark Connect.
    inner = F.unhex(F.sha2(F.concat(F.unhex(F.lit(ipad.hex())), F.encode(message, "UTF-8")), 256))
    return F.sha2(F.concat(F.unhex(F.lit(opad.hex())), inner), 256)


def normalise(kind: str, value: Column) -> Column:
    """Normalised value per docs/tables.md; an empty result is null (no pseudonym of nothing).

    email: trimmed, lower-case. handle: trimmed, lower-case, exactly one leading '@' (the CRM
    writes handles with and without it). phone: '+' and digits only, a '(0)' trunk prefix
    dropped and a leading international '00' written as '+'. Others: trimmed.
    """
    trimmed = trim_whitespace(value)
    if kind == "email":
        out = F.lower(trimmed)
    elif kind == "handle":
        out = F.concat(F.lit("@"), F.regexp_replace(F.lower(trimmed), r"^@+", ""))
        out = F.when(F.regexp_replace(F.lower(trimmed), r"^@+", "") != "", out)
    elif kind == "phone":
        digits = F.regexp_replace(F.regexp_replace(trimmed, r"\(0\)", ""), r"[^0-9+]", "")
        out = F.regexp_replace(digits, r"^00", "+")
    else:
        out = trimmed
    return F.when(out != "", out)


def pseudonym(kind: str, value: Column, key: bytes, *, normalised: bool = False) -> Column:
    """``hex(HMAC-SHA256(key, kind + ':' + normalise(kind, value)))``; null for null/empty."""
    if kind not in KINDS:
        raise ValueError(f"unknown pseudonym kind {kind!r} (known: {', '.join(KINDS)})")
    norm = value if normalised else normalise(kind, value)
    return hmac_sha256_hex(key, F.concat(F.lit(f"{kind}:"), norm))
