"""Planted data-quality defects: what they are, how often, and where they land.

Each source generator returns the clean records of one daily file (a Batch); plant() turns
them into the file's text with defects at the configured rates and reports exactly how many of
each it planted. Every line carries at most one defect, so counts re-derived from the files
(parse each line, look for ids seen before, compare event dates with the file's date) match the
manifest exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from lakehouse.errors import InputDataError
from lakehouse.generate.common import stochastic_round

# Share of duplicates re-delivered in the same file; the rest arrive with the next day's file.
SAME_FILE_DUPLICATES = 0.6
MAX_RATE = 0.2

DESCRIPTIONS = {
    "malformed_json": "JSON sources: a line that is not a JSON object (an object cut off part "
                      "way, or a garbage line such as an HTML error page)",
    "wrong_type": "a declared field holds a value that does not parse as its declared type "
                  "(amount '12,50' or 'N/A', likes 'many', temperature 'hot', event_ts "
                  "'yesterday', marketing_consent 'maybe')",
    "missing_key": "a required field is absent: the JSON key is left out, or the CSV field is "
                   "empty (e.g. orders.customer_id, clickstream.session_id)",
    "duplicate": "re-delivery of an already delivered record with identical content, later "
                 "in the same file or in the next day's file (same natural key; for "
                 "crm_customers the identical row, since updates legitimately repeat the key)",
    "late_event": "first delivery of a record whose event time falls one or more UTC days "
                  "before the file's date (re-deliveries are counted as duplicates only)",
    "schema_drift": "from the drift day on, clickstream objects carry an extra 'user_agent' "
                    "key and the orders CSV an extra trailing 'discount_code' column; counted "
                    "as the rows that carry the extra field",
}

GARBAGE_LINES = (
    "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    "ERROR upstream timed out while reading response header",
    "}{",
    "undefined",
    "#### partial flush ####",
)


@dataclass(frozen=True)
class DefectRates:
    """Share of written lines carrying each defect (schema drift is not a rate)."""

    malformed_json: float = 0.005
    wrong_type: float = 0.005
    missing_key: float = 0.005
    duplicate: float = 0.01
    late_event: float = 0.02

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, float] | None) -> DefectRates:
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputDataError(f"unknown defect kind(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= MAX_RATE:
                raise InputDataError(f"defect rate {name} must be a number in [0, {MAX_RATE}], "
                                     f"got {value!r}")
        return cls(**{k: float(v) for k, v in overrides.items()})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DefectSpec:
    """Where one source's defects go."""

    wrong_values: Mapping[str, tuple[str, ...]]  # column -> values that do not parse
    missing_fields: tuple[str, ...]              # required columns a defect may blank/drop
    has_late_events: bool = True
    drift_field: str | None = None


@dataclass
class Batch:
    """Clean records of one daily file, columns in file order, plus which are late."""

    rows: pd.DataFrame
    is_late: np.ndarray


@dataclass
class Redelivery:
    """Records picked today for re-delivery in the next day's file."""

    rows: pd.DataFrame | None = None      # CSV: records, re-rendered under that day's header
    lines: np.ndarray | None = None       # JSON: the exact lines
    has_drift: np.ndarray | None = None

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        return 0 if self.lines is None else len(self.lines)


@dataclass
class Planted:
    text: str
    rows: int
    counts: dict[str, int]
    redelivery: Redelivery


def applicable(fmt: str, spec: DefectSpec) -> tuple[str, ...]:
    """The defect kinds a source can carry, in manifest order."""
    kinds = ["malformed_json"] if fmt == "json" else []
    kinds += ["wrong_type", "missing_key", "duplicate"]
    kinds += ["late_event"] if spec.has_late_events else []
    kinds += ["schema_drift"] if spec.drift_field else []
    return tuple(kinds)


def plant(batch: Batch, spec: DefectSpec, fmt: str, rates: DefectRates,
          rng: np.random.Generator, carried: Redelivery | None) -> Planted:
    """Render one daily file with defects planted; see the module docstring."""
    rows = batch.rows.reset_index(drop=True)
    is_late = np.asarray(batch.is_late, dtype=bool)
    n = len(rows)
    is_json = fmt == "json"
    carried = carried or Redelivery()

    same_file = stochastic_round(rates.duplicate * SAME_FILE_DUPLICATES * n, rng)
    next_file = stochastic_round(rates.duplicate * (1 - SAME_FILE_DUPLICATES) * n, rng)
    # Rates are shares of the lines written, re-deliveries included.
    lines_written = n + same_file + len(carried)
    wanted = [
        stochastic_round(rates.malformed_json * lines_written, rng) if is_json else 0,
        stochastic_round(rates.wrong_type * lines_written, rng),
        stochastic_round(rates.missing_key * lines_written, rng),
        same_file,
        next_file,
    ]
    # Defects and duplicates go to distinct on-time records: one defect per line at most.
    pool = rng.permutation(np.flatnonzero(~is_late))
    bounds = np.cumsum([0] + wanted).clip(max=len(pool))
    malformed, wrong, missing, dup_same, dup_next = (
        pool[bounds[i]:bounds[i + 1]] for i in range(len(wanted)))

    rows = _with_wrong_types(rows, wrong, spec, rng)
    drift_active = spec.drift_field is not None and spec.drift_field in rows.columns

    # Line order: on-time records keep theirs, late ones land anywhere (they arrived with this
    # batch), same-file duplicates somewhere after their original, yesterday's anywhere.
    key = np.arange(n, dtype=np.float64)
    key[is_late] = rng.random(int(is_late.sum())) * n
    dup_key = dup_same + 0.5 + rng.random(len(dup_same)) * (n - dup_same)
    carried_key = rng.random(len(carried)) * max(n, 1)
    order = np.argsort(np.concatenate([key, dup_key, carried_key]), kind="stable")

    if is_json:
        lines = _json_lines(rows)
        lines = _without_keys(rows, lines, missing, spec, rng)
        lines[malformed] = _malformed(lines[malformed], rng)
        has_drift = np.full(n, drift_active)
        has_drift[malformed] = False
        carried_lines = carried.lines if carried.lines is not None else np.empty(0, object)
        carried_drift = carried.has_drift if carried.has_drift is not None else \
            np.empty(0, bool)
        all_lines = np.concatenate([lines, lines[dup_same], carried_lines])[order]
        drift_count = int(np.concatenate([has_drift, has_drift[dup_same], carried_drift]).sum())
        text = "\n".join(all_lines) + "\n" if len(all_lines) else ""
        redelivery = Redelivery(lines=lines[dup_next], has_drift=has_drift[dup_next])
        written = len(all_lines)
    else:
        rows = _with_empty_fields(rows, missing, spec, rng)
        parts = [rows, rows.iloc[dup_same]]
        if carried.rows is not None and len(carried.rows):
            parts.append(carried.rows.reindex(columns=rows.columns, fill_value=""))
        frame = pd.concat(parts, ignore_index=True).iloc[order]
        text = frame.to_csv(index=False, lineterminator="\n", na_rep="")
        redelivery = Redelivery(rows=rows.iloc[dup_next].copy())
        written = len(frame)
        drift_count = written if drift_active else 0

    counts = {
        "malformed_json": len(malformed),
        "wrong_type": len(wrong),
        "missing_key": len(missing),
        "duplicate": len(dup_same) + len(carried),
        "late_event": int(is_late.sum()),
        "schema_drift": drift_count,
    }
    kinds = applicable(fmt, spec)
    return Planted(text, written, {k: counts[k] for k in kinds}, redelivery)


def _with_wrong_types(rows: pd.DataFrame, picked: np.ndarray, spec: DefectSpec,
                      rng: np.random.Generator) -> pd.DataFrame:
    if not len(picked):
        return rows
    columns = tuple(spec.wrong_values)
    which = rng.integers(0, len(columns), len(picked))
    rows = rows.copy()
    for i, column in enumerate(columns):
        at = picked[which == i]
        if not len(at):
            continue
        bad = np.array(spec.wrong_values[column], dtype=object)
        rows[column] = rows[column].astype(object)
        rows.loc[at, column] = bad[rng.integers(0, len(bad), len(at))]
    return rows


def _with_empty_fields(rows: pd.DataFrame, picked: np.ndarray, spec: DefectSpec,
                       rng: np.random.Generator) -> pd.DataFrame:
    if not len(picked):
        return rows
    which = rng.integers(0, len(spec.missing_fields), len(picked))
    rows = rows.copy()
    for i, column in enumerate(spec.missing_fields):
        at = picked[which == i]
        if len(at):
            rows[column] = rows[column].astype(object)
            rows.loc[at, column] = None
    return rows


def _json_lines(rows: pd.DataFrame) -> np.ndarray:
    if rows.empty:
        return np.empty(0, dtype=object)
    text = rows.to_json(orient="records", lines=True, force_ascii=False)
    # pandas escapes "/" as "\/": legal JSON, but not what real producers write.
    text = text.replace("\\/", "/")
    return np.array(text.rstrip("\n").split("\n"), dtype=object)


def _without_keys(rows: pd.DataFrame, lines: np.ndarray, picked: np.ndarray, spec: DefectSpec,
                  rng: np.random.Generator) -> np.ndarray:
    """Re-render the picked records without one required key each (absent, not null)."""
    which = rng.integers(0, len(spec.missing_fields), len(picked))
    for i, column in enumerate(spec.missing_fields):
        at = picked[which == i]
        if len(at):
            lines[at] = _json_lines(rows.iloc[at].drop(columns=column))
    return lines


def _malformed(lines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut-off objects (a crashed producer) and garbage lines (a proxy's error page). Only the
    few picked lines pass through here, so the per-line work stays small."""
    is_garbage = rng.random(len(lines)) < 0.3
    cut = rng.random(len(lines))
    garbage = rng.integers(0, len(GARBAGE_LINES), len(lines))
    # Cutting off at least the closing brace always leaves an unterminated object.
    return np.array([
        GARBAGE_LINES[g] if is_g else line[:max(1, int(c * (len(line) - 1)))]
        for line, is_g, c, g in zip(lines, is_garbage, cut, garbage, strict=True)
    ], dtype=object)
