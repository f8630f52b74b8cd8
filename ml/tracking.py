"""MLflow helpers shared by the model jobs (attribution, segmentation): where runs are stored,
which experiment they go to, and which table versions they read.

Local default: a SQLite tracking store at ``<data_dir>/mlflow/mlflow.db`` and artifacts under
``<data_dir>/mlflow/artifacts/<experiment>``. Every experiment is created with an explicit
artifact location, so nothing ever lands in a ``./mlruns`` folder of whatever directory the job
was started from. A non-empty ``mlflow.tracking_uri`` (a server, Databricks) is used as it is,
with that server's own artifact store.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.catalog import Catalog
from lakehouse.config import Config, local_path
from lakehouse.errors import ConfigError, MlflowStoreError

# A tracking server that does not answer its health page in this time is taken as down.
PROBE_TIMEOUT_S = 5.0


def _configured_uri(config: Config) -> str:
    try:
        return str(config.get("mlflow.tracking_uri") or "").strip()
    except KeyError:
        return ""


def local_store(config: Config) -> tuple[Path, Path] | None:
    """(SQLite file, artifact root) of the default local store; None when a URI is configured."""
    if _configured_uri(config):
        return None
    if not config.is_local_data_dir:
        raise ConfigError(
            f"data_dir {config.data_dir} is not a local folder, so MLflow's SQLite store cannot "
            f"live under it: set mlflow.tracking_uri"
        )
    root = local_path(config.data_dir) / "mlflow"
    return root / "mlflow.db", root / "artifacts"


def tracking_uri(config: Config) -> str:
    """The tracking URI a run of this config uses (without touching MLflow's global state)."""
    store = local_store(config)
    return _configured_uri(config) if store is None else f"sqlite:///{store[0]}"


# The table whose rows name model versions of the registry (segment_job writes it).
SCORED_TABLE = "gold.customer_segments"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (query string dropped), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def check_store_not_lost(config: Config) -> None:
    """Refuse to start a new SQLite registry under segments scored by an earlier one.

    MLflow creates a missing SQLite store silently: after a moved, deleted or mistyped store,
    model versions would start again at 1 while gold.customer_segments names versions of the
    lost registry, and the gate would promote the first new model unchecked. Checked wherever
    MLflow is pointed at the store (segment, attribute, reproduce, notebooks), so no entry
    point creates the empty file that would let the next one through. Local lakes only: an
    object-store table cannot be looked at without Spark.
    """
    db = sqlite_file(tracking_uri(config))
    if db is None or db.exists() or not config.is_local_data_dir:
        return
    if (local_path(Catalog(config).path(SCORED_TABLE)) / "_delta_log").is_dir():
        raise MlflowStoreError(
            f"MLflow store {db} is missing but {SCORED_TABLE} names model versions of an "
            f"earlier one: point mlflow.tracking_uri at it, or, if it is lost, delete "
            f"{SCORED_TABLE}'s folder and run again; nothing was changed"
        )


def configure_mlflow(config: Config) -> str:
    """Point MLflow at this config's tracking store (creating the local folders); returns its URI."""
    import mlflow

    check_store_not_lost(config)
    store = local_store(config)
    if store is not None:
        db, artifacts = store
        db.parent.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    # INFO lines of a normal run that tell a user nothing (the store's first-use table
    # creation, where the Spark model's files are copied): warnings and errors still show.
    for name in ("mlflow.store.db.utils", "mlflow.spark"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return uri


def use_experiment(config: Config, name: str) -> str:
    """Make ``name`` the active experiment (created on first use); returns its id.

    With the local store its artifacts go to ``<data_dir>/mlflow/artifacts/<name>``.
    """
    import mlflow

    configure_mlflow(config)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        store = local_store(config)
        location = (store[1] / name).as_uri() if store is not None else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def check_mlflow_store(config: Config, experiment: str, nothing_done: str) -> str:
    """Reach the tracking store and open the experiment, or raise one MlflowStoreError line.

    A job calls it before it reads or writes anything, so an unreachable store stops it with
    every table as it was; ``nothing_done`` ends the message (what the job left undone).
    """
    uri = tracking_uri(config)
    if uri.startswith(("http://", "https://")):
        # MLflow's own client retries for minutes; a plain probe answers in seconds.
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
                pass
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MlflowStoreError(
                f"MLflow tracking server {uri} cannot be reached ({reason}): start it or fix "
                f"mlflow.tracking_uri; {nothing_done}"
            ) from None
    try:
        return use_experiment(config, experiment)
    except MlflowStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlflowStoreError(
            f"MLflow store {uri} cannot be used ({first[:200]}): fix mlflow.tracking_uri or "
            f"the store's folder; {nothing_done}"
        ) from None


def delta_versions(
    spark: SparkSession, catalog: Catalog, names: Iterable[str]
) -> dict[str, int | None]:
    """Latest Delta version of each table (None for a table that does not exist yet)."""
    return {name: catalog.current_version(spark, name) for name in names}


def version_params(versions: dict[str, int | None]) -> dict[str, str]:
    """MLflow params ``input_version.<table>`` for the table versions a run read."""
    return {
        f"input_version.{name}": "missing" if version is None else str(version)
        for name, version in versions.items()
    }
