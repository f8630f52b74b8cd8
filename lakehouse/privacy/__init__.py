"""Privacy helpers: keyed pseudonyms of personal data (HMAC-SHA256 in Spark built-ins)."""

from __future__ import annotations

from lakehouse.privacy.pseudonym import (
    DEV_KEY,
    normalise,
    pseudonym,
    pseudonym_key,
)

__all__ = ["DEV_KEY", "normalise", "pseudonym", "pseudonym_key"]
