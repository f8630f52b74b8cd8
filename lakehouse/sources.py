"""Source declarations (conf/sources.yaml) loaded into typed, validated specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.catalog import IDENTIFIER
from lakehouse.config import Config, load_yaml_file, shown, string_list, string_value
from lakehouse.errors import ConfigError

SOURCES_FILE = "sources.yaml"
# File name endings bronze takes per format (case-sensitive, as Spark's file source matches).
FILE_SUFFIXES = {"csv": ("csv", "csv.gz"), "json": ("jsonl", "json", "jsonl.gz", "json.gz")}
FORMATS = {fmt: "*.{" + ",".join(ends) + "}" for fmt, ends in FILE_SUFFIXES.items()}
COLUMN_TYPES = ("string", "int", "long", "double", "boolean", "date", "timestamp")
_REQUIRED = ("format", "raw_dir", "natural_key", "event_time", "columns")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    format: str
    raw_dir: str
    natural_key: tuple[str, ...]
    event_time: str
    pii: tuple[str, ...]
    columns: dict[str, str]

    @property
    def bronze_table(self) -> str:
        return f"bronze.{self.name}"

    @property
    def file_glob(self) -> str:
        return FORMATS[self.format]

    def takes_file(self, name: str) -> bool:
        """Whether bronze's file source reads a file of this name (hidden names are skipped)."""
        return not name.startswith((".", "_")) and name.endswith(
            tuple(f".{end}" for end in FILE_SUFFIXES[self.format])
        )


def load_sources(config: Config) -> dict[str, SourceSpec]:
    """All declared sources, in declaration order; a bad declaration names source and key."""
    path = Path(config.conf_dir) / SOURCES_FILE
    doc = load_yaml_file(path, "source declarations")
    declared = doc.get("sources")
    if not isinstance(declared, dict) or not declared:
        raise ConfigError(f"{path} must declare a non-empty mapping 'sources'")
    return {name: _parse_source(name, spec, path) for name, spec in declared.items()}


def _parse_source(name: str, spec: Any, path: Path) -> SourceSpec:
    where = f"source '{name}' in {path}"
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigError(f"{where}: name must be lower-case letters, digits and underscores")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping")
    missing = [key for key in _REQUIRED if key not in spec]
    if missing:
        raise ConfigError(f"{where} is missing {', '.join(missing)}")
    unknown = set(spec) - set(_REQUIRED) - {"pii"}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(spec["format"], str) or spec["format"] not in FORMATS:
        raise ConfigError(
            f"{where}: format must be one of {', '.join(FORMATS)}, got {shown(spec['format'])}"
        )
    columns = spec["columns"]
    if not isinstance(columns, dict) or not columns:
        raise ConfigError(f"{where}: columns must be a non-empty mapping of name: type")
    for column, col_type in columns.items():
        if not isinstance(column, str) or not IDENTIFIER.match(column):
            raise ConfigError(f"{where}: column name {column!r} is not a plain identifier")
        if col_type not in COLUMN_TYPES:
            raise ConfigError(
                f"{where}: column '{column}' has type {col_type!r}; "
                f"use one of {', '.join(COLUMN_TYPES)}"
            )
    key = string_list(spec["natural_key"], f"{where}: natural_key", "column name")
    pii = () if spec.get("pii") is None else string_list(
        spec["pii"], f"{where}: pii", "column name"
    )
    event_time = string_value(spec["event_time"], f"{where}: event_time", "column name")
    for role, names in (("natural_key", key), ("pii", pii), ("event_time", (event_time,))):
        undeclared = [c for c in names if c not in columns]
        if undeclared:
            raise ConfigError(f"{where}: {role} names undeclared column(s) {', '.join(undeclared)}")
    if not key:
        raise ConfigError(f"{where}: natural_key must name at least one column")
    # Keys are compared as the strings they arrived as (quarantine rows, reconciliation with
    # bronze): a typed key would merge ' 7', '007' and '+7' into one row while reconciliation
    # still counted three, and a key that fails its cast could never be matched again.
    typed_keys = [c for c in key if columns[c] != "string"]
    if typed_keys:
        raise ConfigError(
            f"{where}: natural_key column(s) {', '.join(typed_keys)} must be declared string "
            f"(identifiers are kept as they arrived)"
        )
    raw_dir = spec["raw_dir"]
    if not isinstance(raw_dir, str) or not IDENTIFIER.match(raw_dir):
        raise ConfigError(f"{where}: raw_dir must be a plain folder name")
    return SourceSpec(name, spec["format"], raw_dir, key, event_time, pii, dict(columns))
