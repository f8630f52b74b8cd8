"""Configuration: conf/base.yaml merged with one environment overlay, validated once.

base.yaml is the schema: it declares every key with its default. An overlay may only set keys
that exist in base.yaml, with a value of the same type. Maps listed in FREE_FORM_KEYS (extra
Spark settings) accept any key. Secrets are never read from these files; only the *names* of
the environment variables that hold them are configured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from lakehouse.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONF_DIR = REPO_ROOT / "conf"
DATA_DIR_ENV = "LAKEHOUSE_DATA_DIR"
CONF_DIR_ENV = "LAKEHOUSE_CONF_DIR"
DEFAULT_ENV = "local"

# Maps whose keys are not known in advance (passed through to Spark as they are).
FREE_FORM_KEYS = frozenset({"spark.conf"})

# An int is acceptable where base declares a float (e.g. a threshold written as 1).
_COMPATIBLE = {float: (int, float)}


@dataclass(frozen=True)
class Config:
    """The merged, validated configuration of one run."""

    env: str
    values: Mapping[str, Any]
    conf_dir: Path
    files: tuple[Path, ...] = field(default_factory=tuple)
    # Dotted key -> the overlay file or override that set its value (base.yaml set the others),
    # so that a message about one value names the one file to edit.
    set_in: Mapping[str, str] = field(default_factory=dict)

    def origin(self, dotted_key: str) -> str:
        """Where a key's value was set: the environment overlay or an override that set it,
        else base.yaml. A Spark setting of spark.conf is ``spark.conf.<its name>``."""
        if dotted_key in self.set_in:
            return self.set_in[dotted_key]
        return str(self.files[0]) if self.files else "the configuration"

    def get(self, dotted_key: str) -> Any:
        """Value of a dotted key such as 'spark.master'; a KeyError names the key."""
        node: Any = self.values
        for part in dotted_key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"config key '{dotted_key}' is not defined in conf/base.yaml")
            node = node[part]
        return node

    @property
    def data_dir(self) -> str:
        """Root of everything a run writes: an absolute local path or an object-store URI."""
        return self.values["data_dir"]

    @property
    def is_local_data_dir(self) -> bool:
        return is_local_location(self.data_dir)

    def digest(self) -> str:
        """Stable SHA-256 of the merged values (for lineage: which config made this)."""
        blob = json.dumps(self.values, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (validated like an overlay)."""
        merged = copy.deepcopy(dict(self.values))
        for dotted, value in overrides.items():
            _set_dotted(merged, dotted, value, self.values, "<override>")
        if "data_dir" in overrides:
            merged["data_dir"] = _absolute_data_dir(str(overrides["data_dir"]))
        set_in = {**self.set_in, **{dotted: "an override" for dotted in overrides}}
        return Config(self.env, merged, self.conf_dir, self.files, set_in)


def load_config(
    env: str = DEFAULT_ENV,
    conf_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load base.yaml, merge conf/<env>.yaml over it, validate, resolve the data root."""
    if not env or not env.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"environment name '{env}' is invalid: use letters, digits, - or _")
    directory = Path(conf_dir or os.environ.get(CONF_DIR_ENV) or DEFAULT_CONF_DIR)
    base_file = directory / "base.yaml"
    env_file = directory / f"{env}.yaml"
    base = _read_yaml(base_file, required_for="the base configuration")
    if "data_dir" not in base:
        state = "is empty" if not base else "does not declare data_dir"
        raise ConfigError(f"config file {base_file} {state}: base.yaml must declare every config "
                          f"key with its default (restore it from the repository's conf/base.yaml)")
    if not env_file.is_file():
        known = ", ".join(environments(directory, base)) or "none"
        raise ConfigError(
            f"config file {env_file} not found (needed for environment '{env}'; environments "
            f"in {directory}: {known})"
        )
    overlay = _read_yaml(env_file, required_for=f"environment '{env}'")
    merged = copy.deepcopy(base)
    _merge_checked(merged, overlay, base, env_file, prefix="")
    # base.yaml is the schema of the overlays, so nothing checked its own value's type.
    _check_type("data_dir", merged["data_dir"], "", env_file if "data_dir" in overlay else base_file)
    merged["data_dir"] = _resolve_data_dir(merged["data_dir"])
    set_in = {dotted: str(env_file) for dotted in _dotted_keys(overlay)}
    config = Config(env, merged, directory, (base_file, env_file), set_in)
    return config.with_overrides(overrides) if overrides else config


def is_local_location(location: str) -> bool:
    """A plain path or a ``file:`` URI (not an object store)."""
    return "://" not in location or location.startswith("file:")


def local_path(location: str) -> Path:
    """A location under a local data root (a plain path or a ``file:`` URI) as a Path."""
    return Path(location.removeprefix("file:"))


def file_uri_path(uri: str) -> Path | None:
    """A file as Spark and Delta name it (``file:///a%20b/x.csv``, percent-decoded, or a plain
    path, taken as it is) as a local Path; None for another scheme (an object store)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None


def environments(directory: Path, base: Mapping[str, Any]) -> list[str]:
    """Names of the environment overlays in ``directory``, sorted.

    conf/ also holds sources, rules and the access matrix, so an overlay is told by its
    content: a mapping (or an empty file) whose top-level keys are all keys of base.yaml.
    """
    found = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if loaded is None or isinstance(loaded, dict) and set(loaded) <= set(base):
            found.append(path.stem)
    return found


def load_yaml_file(path: Path, what: str) -> dict[str, Any]:
    """Read another YAML file of conf/ (sources, rules, access matrix) with clear errors."""
    return _read_yaml(path, required_for=what)


def shown(value: Any) -> str:
    """A value as a mistake message quotes it: its YAML type and its text ('got int 5')."""
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def string_value(value: Any, what: str, kind: str = "string") -> str:
    """A non-blank string of a conf file; one line naming ``what`` (file and key) otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a {kind}, got {shown(value)}")
    return value


def string_list(value: Any, what: str, kind: str = "string") -> tuple[str, ...]:
    """A list of non-blank strings of a conf file (one string is a list of one: ``key: id`` was
    read letter by letter); one line naming ``what`` otherwise."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"{what} must be a {kind} or a list of {kind}s, got {shown(value)}")
    return tuple(items)


def _read_yaml(path: Path, required_for: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (needed for {required_for})")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at the top level")
    return loaded


def _dotted_keys(overlay: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values a (checked) overlay sets; a free-form map's entries are
    ``<map>.<entry name>``, as with_overrides names them."""
    keys = []
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            nested = (f"{dotted}.{k}" for k in value) if dotted in FREE_FORM_KEYS else (
                _dotted_keys(value, f"{dotted}."))
            keys.extend(nested)
        else:
            keys.append(dotted)
    return keys


def _merge_checked(
    target: dict[str, Any], overlay: Mapping[str, Any], schema: Mapping[str, Any],
    source: Path, prefix: str,
) -> None:
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if dotted in FREE_FORM_KEYS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' in {source} must be a mapping")
            target.setdefault(key, {}).update({str(k): str(v) for k, v in value.items()})
            continue
        if not isinstance(schema, Mapping) or key not in schema:
            raise ConfigError(
                f"unknown config key '{dotted}' in {source} (known keys are declared in base.yaml)"
            )
        if isinstance(schema[key], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' in {source} must be a mapping")
            _merge_checked(target[key], value, schema[key], source, prefix=f"{dotted}.")
        else:
            _check_type(dotted, value, schema[key], source)
            target[key] = value


# Smallest value of numeric keys for which less is meaningless, refused when the config is read
# (a negative look-back window was refused only by the gold stage, after bronze and silver had
# run); ranges that depend on other keys are checked where used.
_MINIMUMS = {
    "spark.shuffle_partitions": 1,
    "spark.delta_log_partitions": 1,
    "bronze.max_files_per_trigger": 1,
    "bronze.parallel_sources": 1,
    "bronze.max_line_bytes": 1024,
    "silver.parallel_tables": 1,
    "gold.lookback_days": 1,
    "gold.top_keywords": 1,
    "attribution.order": 0,
    "attribution.bootstrap": 0,
    "privacy.max_rows_per_customer": 1,
    "privacy.max_value_per_conversion_eur": 1,
    "privacy.erasure_vacuum_retention_hours": 0,
    "audit.diff_sample": 0,
    "audit.time_travel_days": 7,
    "segment.k_min": 2,
    "segment.recency_cap_days": 1,
}


# Numbers that must be finite and above zero (a YAML .nan or .inf is a float too).
_POSITIVE = frozenset({"privacy.epsilon_per_report", "privacy.epsilon_total"})


def _check_type(dotted: str, value: Any, default: Any, source: Path | str) -> None:
    if default is None or value is None:
        return
    expected = type(default)
    accepted = _COMPATIBLE.get(expected, (expected,))
    # bool is a subclass of int: a 'true' where a number is expected is still a mistake.
    if isinstance(value, bool) and expected is not bool or not isinstance(value, accepted):
        raise ConfigError(
            f"config key '{dotted}' in {source} must be {expected.__name__}, got {shown(value)}"
        )
    if dotted in _POSITIVE and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"config key '{dotted}' in {source} must be a positive number, "
                          f"got {value!r}")
    minimum = _MINIMUMS.get(dotted)
    if minimum is not None and value < minimum:
        raise ConfigError(f"config key '{dotted}' in {source} must be at least {minimum}, "
                          f"got {value!r}")


def _set_dotted(
    target: dict[str, Any], dotted: str, value: Any, schema: Mapping[str, Any], source: str
) -> None:
    parts = dotted.split(".")
    node, spec = target, schema
    for i, part in enumerate(parts[:-1]):
        if ".".join(parts[: i + 1]) in FREE_FORM_KEYS:
            node.setdefault(part, {})[".".join(parts[i + 1 :])] = str(value)
            return
        if not isinstance(spec, Mapping) or part not in spec:
            raise ConfigError(f"unknown config key '{dotted}' in {source}")
        node, spec = node[part], spec[part]
    leaf = parts[-1]
    if not isinstance(spec, Mapping) or leaf not in spec:
        raise ConfigError(f"unknown config key '{dotted}' in {source}")
    _check_type(dotted, value, spec[leaf], source)
    node[leaf] = value


def _resolve_data_dir(configured: str) -> str:
    return _absolute_data_dir(os.environ.get(DATA_DIR_ENV) or configured)


def _absolute_data_dir(raw: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"data_dir is empty: set it in conf/ or with {DATA_DIR_ENV}")
    if "://" in raw:
        return raw.rstrip("/")
    if raw.startswith("file:"):
        # 'file:/data/lake' (one slash, as Hadoop prints local paths) is that local path; it
        # was taken as a folder named 'file:' under the repository.
        raw = raw.removeprefix("file:")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    return str(path.resolve())
