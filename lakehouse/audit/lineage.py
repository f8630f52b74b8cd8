"""Lineage of every pipeline stage: the exact Delta versions it read and wrote.

`record_stage` wraps one stage of `run_stages`:

* inputs: the tables the stage declares it reads (pipeline.stage_inputs), at the version it
  reads them (a version pinned with --as-of-version / --as-of-timestamp, else the newest at
  the stage's start); bronze's inputs are its raw folders (with their file count);
* outputs: every table whose newest version moved while the stage ran, with the first and
  last version it wrote (the local data root is listed, so a stage writing a table nobody
  declared is still caught);
* the run id, the stage's own UUID (OpenLineage runId), the git commit of the code (when the
  code runs from a git checkout, or LAKEHOUSE_GIT_COMMIT) and the config digest; the merged
  config itself is saved once per digest under ``<data_dir>/lineage/configs/`` so a run can be
  reproduced with the settings it used.

Records go to audit.lineage (hash-chained, see chain.py) and, as OpenLineage RunEvents (START,
then COMPLETE or FAIL), to ``<data_dir>/<audit.openlineage_dir>/`` as one JSON file per event,
where Marquez, DataHub or any OpenLineage consumer can pick them up.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DateType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.audit import LINEAGE_TABLE
from lakehouse.audit.chain import append_chained
from lakehouse.audit.timetravel import list_tables, table_versions
from lakehouse.catalog import Catalog
from lakehouse.config import REPO_ROOT, Config, local_path
from lakehouse.errors import (
    ConfigError,
    InputDataError,
    InvalidTableNameError,
    SchemaChangeError,
    TableNotFoundError,
    VersionNotAvailableError,
)

# A user's mistake, refused in one line: a bad setting or argument, input the lake cannot take,
# a table or version that is not there, a declared type the table cannot take. Not a broken
# quality rule, a lost race with another writer or a storage failure: those stages are recorded.
REFUSALS = (ConfigError, InputDataError, InvalidTableNameError, SchemaChangeError,
            TableNotFoundError, VersionNotAvailableError)

PRODUCER = "https://github.com/lakehouse-job-suite/lakehouse"
OL_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
OL_FACETS = "https://openlineage.io/spec/facets"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# The OpenLineage runId of the whole pipeline run (the parent of each stage's run).
_RUN_NAMESPACE = uuid.UUID("6f1c3c52-3b0e-4e55-9a40-6c8c0b8f2a11")

LINEAGE_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("stage", StringType(), False),
        StructField("stage_run_uuid", StringType(), False),
        StructField("status", StringType(), False),
        StructField("direction", StringType(), False),  # run, input, output
        StructField("dataset", StringType(), True),  # logical table, or raw folder path
        StructField("first_version", LongType(), True),
        StructField("version", LongType(), True),
        StructField("detail", StringType(), True),
        StructField("as_of", DateType(), True),
        StructField("started_at", TimestampType(), True),
        StructField("ended_at", TimestampType(), True),
        StructField("git_commit", StringType(), True),
        StructField("config_digest", StringType(), True),
        StructField("error", StringType(), True),
    ]
)


def stage_run_uuid(run_id: str, stage: str) -> str:
    """A stable UUID per (run, stage): START and COMPLETE events of a stage share it."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{run_id}/{stage}"))


@cache
def git_commit() -> str | None:
    """Commit of the code that runs (with '+dirty' for uncommitted changes), or None."""
    if os.environ.get("LAKEHOUSE_GIT_COMMIT"):
        return os.environ["LAKEHOUSE_GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def _local_root(config: Config) -> Path | None:
    return local_path(config.data_dir) if config.is_local_data_dir else None


def save_config_snapshot(config: Config) -> str:
    """Write the merged config once per digest (local data roots); returns the digest."""
    digest = config.digest()
    root = _local_root(config)
    if root is not None:
        target = root / "lineage" / "configs" / f"{digest}.json"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(config.values, sort_keys=True, indent=1, default=str))
    return digest


def load_config_snapshot(config: Config, digest: str) -> Mapping[str, Any] | None:
    root = _local_root(config)
    target = root / "lineage" / "configs" / f"{digest}.json" if root is not None else None
    if target is None or not target.exists():
        return None
    return json.loads(target.read_text())


@dataclass
class StageRecord:
    """What one stage read and wrote (filled in by record_stage)."""

    run_id: str
    stage: str
    as_of: Any = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    status: str = "RUNNING"
    inputs: dict[str, int] = field(default_factory=dict)
    raw_inputs: dict[str, int] = field(default_factory=dict)  # folder -> files
    outputs: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (first, last)
    error: str | None = None
    schemas: dict[tuple[str, int], list[dict[str, str]]] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return stage_run_uuid(self.run_id, self.stage)


def _raw_files(config: Config, folders: Iterable[str]) -> dict[str, int]:
    counts = {}
    for folder in folders:
        local = local_path(folder)
        counts[folder] = (
            sum(1 for p in local.iterdir() if p.is_file()) if local.is_dir() else 0
        ) if config.is_local_data_dir else -1
    return counts


@contextmanager
def record_stage(
    spark: SparkSession,
    config: Config,
    run_id: str,
    stage: str,
    inputs: Mapping[str, int | None],
    raw_folders: Iterable[str] = (),
    as_of: Any = None,
):
    """Wrap one stage: tag its Delta commits with the run id, record what it read and wrote.

    `inputs` maps each declared input table to the version the stage reads (None: newest now).
    Yields the StageRecord; a failing stage is recorded as FAIL and its error re-raised.
    """
    catalog = Catalog(config)
    extra = tuple(config.get("audit.extra_tables"))
    before = table_versions(spark, catalog, list_tables(spark, catalog, extra))
    record = StageRecord(run_id, stage, as_of=as_of)
    record.inputs = {
        name: version if version is not None else before[name]
        for name, version in inputs.items()
        if version is not None or name in before
    }
    record.raw_inputs = _raw_files(config, raw_folders)
    enabled = bool(config.get("audit.record_lineage"))
    if enabled:
        write_openlineage_event(spark, config, record, "START")
    previous = spark.conf.get(USER_METADATA_CONF, None)
    spark.conf.set(USER_METADATA_CONF, f"run_id={run_id} stage={stage}")
    failure: BaseException | None = None
    try:
        yield record
        record.status = "COMPLETE"
    except BaseException as exc:
        failure = exc
        record.status = "FAIL"
        record.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:1000]
        raise
    finally:
        record.ended_at = datetime.now(UTC)
        after = table_versions(spark, catalog, list_tables(spark, catalog, extra))
        record.outputs = {
            name: (before[name] + 1 if name in before else 0, version)
            for name, version in after.items()
            if before.get(name) != version
        }
        try:
            if enabled:
                # A refusal (REFUSALS) that changed no table leaves every table as it was,
                # audit.lineage too; its OpenLineage FAIL event is a file.
                refused = isinstance(failure, REFUSALS) and not record.outputs
                if not refused:
                    # The lineage write itself carries the run id too (it is part of the run).
                    write_lineage_rows(spark, config, record)
                write_openlineage_event(spark, config, record, record.status)
        except Exception:
            # A failed stage's own error matters more than a failure to record it.
            if record.status != "FAIL":
                raise
        finally:
            if previous is None:
                spark.conf.unset(USER_METADATA_CONF)
            else:
                spark.conf.set(USER_METADATA_CONF, previous)


def lineage_rows(record: StageRecord, git: str | None, digest: str) -> list[tuple]:
    common = (record.as_of, record.started_at, record.ended_at, git, digest, record.error)
    head = (record.run_id, record.stage, record.uuid, record.status)
    rows = [(*head, "run", None, None, None, None, *common)]
    rows += [(*head, "input", name, v, v, None, *common) for name, v in sorted(record.inputs.items())]
    rows += [
        (*head, "input", folder, None, None, f"files={n}" if n >= 0 else None, *common)
        for folder, n in sorted(record.raw_inputs.items())
    ]
    rows += [
        (*head, "output", name, first, last, None, *common)
        for name, (first, last) in sorted(record.outputs.items())
    ]
    return rows


def write_lineage_rows(spark: SparkSession, config: Config, record: StageRecord) -> int:
    digest = save_config_snapshot(config)
    rows_df = spark.createDataFrame(lineage_rows(record, git_commit(), digest), LINEAGE_SCHEMA)
    return append_chained(
        spark, Catalog(config), LINEAGE_TABLE, rows_df, ["direction", "dataset"]
    )


# --------------------------------------------------------------------------- OpenLineage


def _facet(name: str, version: str, **fields: Any) -> dict[str, Any]:
    return {
        "_producer": PRODUCER,
        "_schemaURL": f"{OL_FACETS}/{version}/{name}.json#/$defs/{name}",
        **fields,
    }


def _dataset_id(config: Config, location: str) -> tuple[str, str]:
    """(namespace, name) by OpenLineage's naming rules: file / s3://bucket + path."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return "file", parsed.path if parsed.scheme else location
    return f"{parsed.scheme}://{parsed.netloc}", parsed.path


def _schema_fields(
    spark: SparkSession, catalog: Catalog, record: StageRecord, name: str, version: int
) -> list[dict[str, str]]:
    if (name, version) not in record.schemas:
        try:
            fields = [
                {"name": f.name, "type": f.dataType.simpleString()}
                for f in catalog.read(spark, name, version=version).schema.fields
            ]
        except Exception:  # noqa: BLE001 - the schema facet is optional; lineage must not fail
            fields = []
        record.schemas[(name, version)] = fields
    return record.schemas[(name, version)]


def _table_dataset(
    spark: SparkSession, config: Config, record: StageRecord, name: str, version: int,
    with_schema: bool,
) -> dict[str, Any]:
    """A Delta table as an OpenLineage dataset. Only outputs get the schema facet: reading a
    table's schema costs a log replay, and every input is some earlier stage's output."""
    catalog = Catalog(config)
    namespace, path = _dataset_id(config, catalog.path(name))
    fields = _schema_fields(spark, catalog, record, name, version) if with_schema else []
    facets: dict[str, Any] = {
        "version": _facet("DatasetVersionDatasetFacet", "1-0-1", datasetVersion=str(version)),
        "symlinks": _facet(
            "SymlinksDatasetFacet", "1-0-1",
            identifiers=[{"namespace": "lakehouse", "name": name, "type": "TABLE"}],
        ),
    }
    if fields:
        facets["schema"] = _facet("SchemaDatasetFacet", "1-1-1", fields=fields)
    return {"namespace": namespace, "name": path, "facets": facets}


def openlineage_event(
    spark: SparkSession, config: Config, record: StageRecord, event_type: str
) -> dict[str, Any]:
    """One OpenLineage RunEvent (spec 2-0-2) for a stage of a pipeline run."""
    namespace = config.get("audit.openlineage_namespace")
    inputs = [
        _table_dataset(spark, config, record, name, v, with_schema=False)
        for name, v in sorted(record.inputs.items())
    ]
    for folder, files in sorted(record.raw_inputs.items()):
        ns, path = _dataset_id(config, folder)
        inputs.append({"namespace": ns, "name": path, "facets": {}} | (
            {"inputFacets": {"lakehouse_files": _custom_facet(files=files)}} if files >= 0 else {}
        ))
    outputs = [
        _table_dataset(spark, config, record, name, last, with_schema=True)
        for name, (_first, last) in sorted(record.outputs.items())
    ] if event_type != "START" else []
    run_facets: dict[str, Any] = {
        "parent": _facet(
            "ParentRunFacet", "1-1-0",
            run={"runId": str(uuid.uuid5(_RUN_NAMESPACE, record.run_id))},
            job={"namespace": namespace, "name": "pipeline"},
        ),
        "lakehouse_run": _custom_facet(
            pipeline_run_id=record.run_id,
            stage=record.stage,
            git_commit=git_commit(),
            config_digest=config.digest(),
            as_of=str(record.as_of) if record.as_of else None,
        ),
    }
    if event_type == "FAIL" and record.error:
        run_facets["errorMessage"] = _facet(
            "ErrorMessageRunFacet", "1-0-1", message=record.error, programmingLanguage="python"
        )
    when = record.started_at if event_type == "START" else (record.ended_at or record.started_at)
    return {
        "eventType": event_type,
        "eventTime": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "run": {"runId": record.uuid, "facets": run_facets},
        "job": {
            "namespace": namespace,
            "name": f"pipeline.{record.stage}",
            "facets": {
                "jobType": _facet(
                    "JobTypeJobFacet", "2-0-3",
                    processingType="BATCH", integration="SPARK", jobType="JOB",
                ),
            },
        },
        "inputs": inputs,
        "outputs": outputs,
        "producer": PRODUCER,
        "schemaURL": OL_SCHEMA,
    }


def _custom_facet(**fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{PRODUCER}/facets/lakehouse.json", **fields}


def openlineage_dir(config: Config) -> str:
    return "/".join([config.data_dir.rstrip("/"), config.get("audit.openlineage_dir").strip("/")])


def write_openlineage_event(
    spark: SparkSession, config: Config, record: StageRecord, event_type: str
) -> str:
    """One JSON file per event, named so a directory listing is in time order."""
    event = openlineage_event(spark, config, record, event_type)
    stamp = event["eventTime"].replace(":", "").replace("-", "").replace(".", "")
    name = f"{stamp}_{record.run_id}_{record.stage}_{event_type}.json"
    text = json.dumps(event, sort_keys=True, default=str)
    folder = openlineage_dir(config)
    if config.is_local_data_dir:
        target = local_path(folder) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
        return str(target)
    # Object stores: Spark writes the event as one text part in a folder of that name.
    spark.createDataFrame([(text,)], "value string").coalesce(1).write.mode("overwrite").text(
        f"{folder}/{name}"
    )
    return f"{folder}/{name}"

