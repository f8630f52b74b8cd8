"""Shared building blocks of the generator: scales, seeded RNG streams, the calendar, vectorised
formatting of ids and timestamps, and atomic file writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

SECONDS_PER_DAY = 86_400
# Sessions, orders, payments and readings all end at least this long before midnight UTC, so a
# record generated for a day really falls on that day and "late" has one unambiguous meaning.
DAY_END_MARGIN_S = 900


@dataclass(frozen=True)
class ScaleSpec:
    """One named data volume."""

    name: str
    customers: int
    days: int
    purpose: str

    @property
    def drift_day(self) -> int:
        """0-based day from which files carry the drifted schema: the middle of the scale's
        default calendar. Tied to the scale, not to the requested number of days, so asking for
        more days never changes the files of the earlier days."""
        return self.days // 2


# RNG stream numbers. A file's content is a function of (seed, stream, day) only, which is what
# makes output prefix-stable; renumbering a stream changes every file of that stream.
STREAMS = {
    "population": 1,
    "signups": 2,
    "crm_customers": 3,
    "clickstream": 4,
    "orders": 5,
    "payments": 6,
    "social_posts": 7,
    "iot_readings": 8,
}
# Defects draw from their own sub-stream, so changing a defect rate never changes clean data.
CLEAN, DEFECTS = 0, 1


def rng_for(seed: int, stream: str, key: int, sub: int = CLEAN) -> np.random.Generator:
    """The generator of one stream; always four words of entropy so streams never alias."""
    return np.random.default_rng(np.random.SeedSequence([seed, STREAMS[stream], key, sub]))


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    """floor(x) or ceil(x) with the right odds: small files still get defects at the
    configured rate on average instead of always rounding down to none."""
    return int(np.floor(x + rng.random()))


@dataclass(frozen=True)
class Calendar:
    """Day d (0-based) of the generated calendar is the UTC day start + d."""

    start: date

    @property
    def start_epoch(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day,
                            tzinfo=UTC).timestamp())

    def day_epoch(self, day: int | np.ndarray) -> int | np.ndarray:
        return self.start_epoch + np.asarray(day, dtype=np.int64) * SECONDS_PER_DAY

    def iso_date(self, day: int) -> str:
        return str(np.datetime64(int(self.day_epoch(day)), "s").astype("datetime64[D]"))

    def compact(self, day: int) -> str:
        return self.iso_date(day).replace("-", "")

    def weekday(self, day: int) -> int:
        return (self.start.weekday() + day) % 7


def zero_pad(numbers: np.ndarray, width: int) -> np.ndarray:
    numbers = np.asarray(numbers, dtype=np.int64)
    if not numbers.size:  # np.strings.zfill cannot size an empty result
        return np.empty(0, dtype=f"U{width}")
    return np.strings.zfill(numbers.astype(str), width)


def make_ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Ids such as C0000123 from integers."""
    return np.strings.add(prefix, zero_pad(numbers, width))


def scramble(index: np.ndarray, modulus: int, multiplier: int, offset: int) -> np.ndarray:
    """Random-looking but unique numbers: an affine map is a bijection of [0, modulus) when the
    modulus is prime, so distinct indices below it never collide."""
    return (np.asarray(index, dtype=np.int64) * multiplier + offset) % modulus


def utc_iso(epoch: np.ndarray) -> np.ndarray:
    """Epoch seconds -> '2026-01-03T10:15:00Z'."""
    text = np.datetime_as_string(np.asarray(epoch, dtype=np.int64).astype("datetime64[s]"),
                                 unit="s")
    return np.strings.add(text, "Z")


def offset_iso(epoch: np.ndarray, offset_min: np.ndarray, as_z: np.ndarray) -> np.ndarray:
    """Epoch seconds -> local wall time with its UTC offset ('2026-01-03T11:15:00+01:00'), or
    UTC with 'Z' where as_z is set."""
    epoch = np.asarray(epoch, dtype=np.int64)
    minutes = np.where(as_z, 0, offset_min).astype(np.int64)
    local = np.datetime_as_string((epoch + minutes * 60).astype("datetime64[s]"), unit="s")
    uniques, inverse = np.unique(minutes, return_inverse=True)
    # A handful of distinct offsets: format each once, then index.
    suffixes = np.array([_offset_suffix(int(m)) for m in uniques] or ["+00:00"])
    suffix = np.where(as_z, "Z", suffixes[inverse])
    return np.strings.add(local, suffix)


def _offset_suffix(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def iso_day(epoch: np.ndarray) -> np.ndarray:
    """Epoch seconds -> '2026-01-03'."""
    return np.datetime_as_string(np.asarray(epoch, dtype=np.int64).astype("datetime64[s]"),
                                 unit="D")


def pick(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: for each u, the index it falls on in a cumulative distribution
    (one shared distribution, or one row per draw)."""
    if cumulative.ndim == 1:
        return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), cumulative.shape[1] - 1)


def write_atomic(path: Path, data: bytes) -> None:
    """Readers (a streaming bronze job) must never see half a file: write a hidden temporary
    file (a leading dot makes Spark's file listing skip it) and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
