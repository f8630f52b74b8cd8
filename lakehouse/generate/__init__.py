"""Seeded, deterministic synthetic raw data for the six declared sources.

    generate(out_dir, scale, seed=42, days=None, start_date="2026-01-01") -> manifest

writes ``<out_dir>/<raw_dir>/<source>_<YYYY-MM-DD>.{csv,jsonl}`` (one file per source per UTC
day; raw_dir and format from conf/sources.yaml), ``<out_dir>/_manifest.json`` and
``<out_dir>/_ground_truth/archetypes.csv``.

Guarantees:
- the same arguments give byte-identical files; another seed gives other data;
- prefix stability: with days=N+1 the first N days' files are byte-identical to a days=N run,
  because a day's content depends on (seed, scale, day) and the days before it only;
- defects are planted at documented rates and counted exactly in the manifest (see defects);
- generating again into the same folder with the same arguments but more days writes only the
  new days: a day file already there from the same generation (``generation`` in the manifest)
  is kept as it is. Bronze has read it, and an erasure may have removed a person's lines from
  it, which a rewrite would put back. Remove the folder to get pristine files.

No Spark here: numpy and pandas, vectorised per day and source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from lakehouse.errors import ConfigError, InputDataError
from lakehouse.generate import clickstream, crm, iot, orders, payments, social
from lakehouse.generate.common import DEFECTS as DEFECT_SUBSTREAM
from lakehouse.generate.common import Calendar, ScaleSpec, rng_for, write_atomic
from lakehouse.generate.defects import (
    DESCRIPTIONS,
    Batch,
    DefectRates,
    DefectSpec,
    Redelivery,
    applicable,
    plant,
)
from lakehouse.generate.population import ARCHETYPE_NAMES, World, build_world, customer_ids

__all__ = ["MAX_DAYS", "SCALES", "DefectRates", "ScaleSpec", "generate"]

SCALES: dict[str, ScaleSpec] = {
    "xs": ScaleSpec("xs", 300, 3, "tests: generates in about a second"),
    "s": ScaleSpec("s", 5_000, 7, "demo"),
    "m": ScaleSpec("m", 100_000, 30, "benchmarks: ~2 million clickstream events"),
    "l": ScaleSpec("l", 1_000_000, 30, "large benchmarks: ~10x m"),
}
SOURCES_FILE = Path(__file__).resolve().parents[2] / "conf" / "sources.yaml"
MANIFEST_NAME = "_manifest.json"
GROUND_TRUTH = Path("_ground_truth") / "archetypes.csv"
EXTENSIONS = {"csv": "csv", "json": "jsonl"}

# Generator modules in the order a day is produced (orders need the day's conversions,
# payments the day's orders).
SOURCE_MODULES = {
    "crm_customers": crm,
    "clickstream": clickstream,
    "orders": orders,
    "payments": payments,
    "social_posts": social,
    "iot_readings": iot,
}


def generate(
    out_dir: str | os.PathLike[str],
    scale: str,
    seed: int = 42,
    days: int | None = None,
    start_date: str = "2026-01-01",
    progress: bool = True,
    *,
    defect_rates: Mapping[str, float] | None = None,
    sources_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Writes raw files under out_dir and returns the manifest dict (also written as JSON).

    defect_rates overrides entries of DefectRates (tests raise them to see every kind);
    sources_file defaults to conf/sources.yaml, whose columns the files must match."""
    spec = _scale(scale)
    n_days = spec.days if days is None else _days(days)
    calendar = Calendar(_start_date(start_date))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputDataError(f"seed must be a non-negative integer, got {seed!r}")
    rates = DefectRates.from_mapping(defect_rates)
    sources = _load_sources(Path(sources_file) if sources_file else SOURCES_FILE)

    out = Path(out_dir)
    generation = _generation(spec, int(seed), calendar, rates, sources)
    keep_existing = _previous_generation(out) == generation
    later = _files_after(out, sources, calendar, n_days)
    if keep_existing and later:
        last = max(day for day, _ in later)
        raise InputDataError(
            f"{out} already holds this generation up to {last}: --days {n_days} would delete "
            f"the files of the later days, which bronze may have landed; pass --days "
            f"{(date.fromisoformat(last) - calendar.start).days + 1} "
            f"or more, or remove {out} to start over"
        )
    for _, path in later:
        path.unlink()
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    world = build_world(int(seed), spec, calendar, rates.late_event)
    report = {name: _SourceReport(name, decl) for name, decl in sources.items()}
    carried: dict[str, Redelivery | None] = dict.fromkeys(sources)

    with tqdm(total=n_days * len(sources), desc=f"generate {spec.name}", unit="file",
              file=sys.stderr, disable=not progress) as bar:
        for day in range(n_days):
            world.add_signups(day)
            for name, batch in _day_batches(world, day):
                module, decl = SOURCE_MODULES[name], sources[name]
                rng = rng_for(world.seed, name, day, DEFECT_SUBSTREAM)
                planted = plant(batch, module.DEFECTS, decl["format"], rates, rng,
                                carried[name])
                carried[name] = planted.redelivery
                path = report[name].add_file(out, calendar.iso_date(day), planted)
                if not (keep_existing and path.is_file()):
                    _write(path, planted.text)
                bar.update(1)
                bar.set_postfix_str(calendar.iso_date(day))

    n_customers = int((world.customers.signup_day < n_days).sum())
    _write_ground_truth(out, world, n_customers)
    manifest = _manifest(spec, int(seed), n_days, calendar, rates, world, n_customers, report)
    manifest["generation"] = generation
    _write(out / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _day_batches(world: World, day: int) -> Iterator[tuple[str, Batch]]:
    """Each source's clean records for one day, in dependency order."""
    yield "crm_customers", crm.day_batch(world, day)
    events, conversions = clickstream.day_batch(world, day)
    yield "clickstream", events
    order_batch, order_facts = orders.day_batch(world, day, conversions)
    yield "orders", order_batch
    yield "payments", payments.day_batch(world, day, order_facts)
    yield "social_posts", social.day_batch(world, day)
    yield "iot_readings", iot.day_batch(world, day)


def _scale(scale: str) -> ScaleSpec:
    if scale not in SCALES:
        raise InputDataError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return SCALES[scale]


# Ten years of daily batches. Without a bound, a mistyped --days (an extra digit or three)
# wrote files for hours until the disk was full or the calendar passed the year 9999.
MAX_DAYS = 3660


def _days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise InputDataError(f"days must be an integer of at least 1, got {days!r}")
    if days > MAX_DAYS:
        raise InputDataError(f"days must be at most {MAX_DAYS} (ten years), got {days}")
    return int(days)


def _start_date(text: str) -> date:
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise InputDataError(f"start_date must be a date YYYY-MM-DD, got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputDataError(f"start_date {text!r} is not a valid calendar date") from None


def _load_sources(path: Path) -> dict[str, dict[str, Any]]:
    """The source declarations, checked against what the generator writes: the declaration is
    the contract bronze reads by, so a mismatch must stop generation, not surface later."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read source declarations {path}: {exc}") from None
    declared = (doc or {}).get("sources") if isinstance(doc, dict) else None
    if not isinstance(declared, dict):
        raise ConfigError(f"{path} must declare a mapping 'sources'")
    if set(declared) != set(SOURCE_MODULES):
        raise ConfigError(f"{path} declares sources {sorted(declared)}, the generator writes "
                          f"{sorted(SOURCE_MODULES)}")
    for name, decl in declared.items():
        columns = tuple((decl or {}).get("columns") or ())
        expected = SOURCE_MODULES[name].COLUMNS
        if columns != expected:
            raise ConfigError(f"{path}: columns of source '{name}' are {list(columns)}, the "
                              f"generator writes {list(expected)}")
        if decl.get("format") not in EXTENSIONS:
            raise ConfigError(f"{path}: source '{name}' has format {decl.get('format')!r}, "
                              f"expected one of {', '.join(EXTENSIONS)}")
    return {name: declared[name] for name in SOURCE_MODULES}


def _file_name(source: str, fmt: str, iso_date: str) -> str:
    return f"{source}_{iso_date}.{EXTENSIONS[fmt]}"


def _generation(spec: ScaleSpec, seed: int, calendar: Calendar, rates: DefectRates,
                sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The arguments that decide a day file's bytes (with the generator's code): two runs of
    equal generations write equal files for the days they share (prefix stability)."""
    declared = json.dumps(sources, sort_keys=True, default=str).encode("utf-8")
    return {"scale": spec.name, "seed": seed, "start_date": calendar.iso_date(0),
            "defect_rates": rates.as_dict(), "sources_sha256": hashlib.sha256(declared).hexdigest()}


def _previous_generation(out: Path) -> dict[str, Any] | None:
    """The generation recorded by the manifest already in ``out``, if any can be read."""
    try:
        previous = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous.get("generation") if isinstance(previous, dict) else None


def _files_after(out: Path, sources: Mapping[str, Mapping[str, Any]], calendar: Calendar,
                 n_days: int) -> list[tuple[str, Path]]:
    """(ISO date, path) of the files named like ours for a day after the ``n_days`` asked for.

    Another generation's are removed, or bronze would ingest them; the same generation's were
    delivered and are kept (generate refuses instead). Other files are never touched."""
    keep = {calendar.iso_date(d) for d in range(n_days)}
    found: list[tuple[str, Path]] = []
    for name, decl in sources.items():
        folder = out / decl["raw_dir"]
        if not folder.is_dir():
            continue
        pattern = re.compile(rf"{re.escape(name)}_(\d{{4}}-\d{{2}}-\d{{2}})"
                             rf"\.{EXTENSIONS[decl['format']]}")
        for path in folder.iterdir():
            match = pattern.fullmatch(path.name)
            if match and match.group(1) not in keep:
                found.append((match.group(1), path))
    return found


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def _write_ground_truth(out: Path, world: World, n_customers: int) -> None:
    """Which archetype each customer was drawn from: for evaluating segmentation only."""
    index = np.arange(n_customers)
    frame = pd.DataFrame({
        "customer_id": customer_ids(index),
        "archetype": np.array(ARCHETYPE_NAMES)[world.customers.archetype[index]],
    })
    _write(out / GROUND_TRUTH, frame.to_csv(index=False, lineterminator="\n"))


class _SourceReport:
    """Files, rows and defect counts of one source, for the manifest."""

    def __init__(self, name: str, decl: Mapping[str, Any]) -> None:
        self.name = name
        self.format = decl["format"]
        self.raw_dir = decl["raw_dir"]
        self.spec: DefectSpec = SOURCE_MODULES[name].DEFECTS
        self.kinds = applicable(self.format, self.spec)
        self.files: list[dict[str, Any]] = []

    def add_file(self, out: Path, iso_date: str, planted: Any) -> Path:
        relative = f"{self.raw_dir}/{_file_name(self.name, self.format, iso_date)}"
        self.files.append({"path": relative, "date": iso_date, "rows": planted.rows,
                           "defects": planted.counts})
        return out / relative

    def as_dict(self) -> dict[str, Any]:
        rows = sum(f["rows"] for f in self.files)
        totals = {k: sum(f["defects"][k] for f in self.files) for k in self.kinds}
        drift_files = [f["date"] for f in self.files if f["defects"].get("schema_drift")]
        return {
            "format": self.format,
            "raw_dir": self.raw_dir,
            "files": len(self.files),
            "rows": rows,
            "defects": totals,
            "defect_share": {k: round(v / rows, 5) if rows else 0.0
                             for k, v in totals.items()},
            "wrong_type_fields": list(self.spec.wrong_values),
            "missing_key_fields": list(self.spec.missing_fields),
            "drift_field": self.spec.drift_field,
            "drift_from": drift_files[0] if drift_files else None,
            "file_details": self.files,
        }


def _manifest(spec: ScaleSpec, seed: int, n_days: int, calendar: Calendar, rates: DefectRates,
              world: World, n_customers: int, report: Mapping[str, _SourceReport]
              ) -> dict[str, Any]:
    archetypes = world.customers.archetype[:n_customers]
    drifts = spec.drift_day < n_days
    return {
        "generator": "lakehouse.generate",
        "scale": spec.name,
        "seed": seed,
        "days": n_days,
        "start_date": calendar.iso_date(0),
        "end_date": calendar.iso_date(n_days - 1),
        "customers": n_customers,
        "devices": int((world.customers.signup_day[world.devices.owner] < n_days).sum()),
        "archetypes": {name: int((archetypes == i).sum())
                       for i, name in enumerate(ARCHETYPE_NAMES)},
        "schema_drift_from": calendar.iso_date(spec.drift_day) if drifts else None,
        "defects": {kind: {"rate": rates.as_dict().get(kind), "description": text}
                    for kind, text in DESCRIPTIONS.items()},
        "sources": {name: r.as_dict() for name, r in report.items()},
        "ground_truth": GROUND_TRUTH.as_posix(),
    }
