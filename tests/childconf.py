"""The lighter model search of the runs that tests start: child `lakehouse` processes (fault
suite, privacy canary, cluster submission) and the shared full xs lake.

The shipped config with a smaller model search: fewer K-means candidates and one start each, the
row solver (faster than block on a few hundred customers) and one Markov order. What a crash, a
hostile file or a planted secret does does not depend on how many k are tried, and these runs
are most of the time those tests take.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import yaml

from lakehouse.config import CONF_DIR_ENV, DEFAULT_CONF_DIR

# Dotted config keys, as Config.with_overrides takes them (in-process runs use them directly).
LIGHT_SEGMENT = {"segment.k_max": 5, "segment.kmeans.solver": "row", "segment.kmeans.starts": 1}
LIGHT_ATTRIBUTION = {"attribution.order": 2}


def _as_yaml(overrides: dict[str, object]) -> str:
    """Dotted keys as the nested YAML mapping an env file holds."""
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return "\n" + yaml.safe_dump(nested, sort_keys=False)


@functools.cache
def light_conf_dir(env: str = "local", attribution: bool = True) -> str:
    """A copy of conf/ whose ``env``.yaml lightens segmentation and, with ``attribution``, the
    Markov order choice (keep it off when the attribution is compared with a default run)."""
    parent = tempfile.mkdtemp(prefix="lakehouse-child-conf-")
    # Removed when the test process ends (every test of the run may use the copy until then).
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    folder = Path(parent) / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, folder)
    with (folder / f"{env}.yaml").open("a", encoding="utf-8") as env_file:
        env_file.write(_as_yaml({**LIGHT_SEGMENT, **(LIGHT_ATTRIBUTION if attribution else {})}))
    return str(folder)


def light_conf_env(env: str = "local", attribution: bool = True) -> dict[str, str]:
    """Environment entries that point a child process at light_conf_dir(env, attribution)."""
    return {CONF_DIR_ENV: light_conf_dir(env, attribution)}
