"""Rebuild a recorded pipeline run's output from the exact input versions it read.

For each stage of the run in audit.lineage: the recorded input versions are read again (time
travel), the stage's builder runs with the config the run used (saved per digest by lineage.py;
the current one, with a note, if that snapshot is missing) and writes under
``<data_dir>/<audit.scratch_dir>/<run_id>/``, never over the real tables. Each output is then
compared with the version the run wrote: identical, or how many rows differ each way.

Supported: gold (silver -> gold, a pure snapshot of its inputs), attribute (gold.journeys
-> gold.channel_attribution, without a new MLflow run) and segment, a model run: the K-means
candidates are trained again from the recorded gold.customer_360 version with the run's config
(nothing logged, nothing registered), and the rebuilt model's segment of every customer of the
snapshot is compared with what the model the run logged in MLflow assigns. bronze and silver
are not rebuilt:
bronze ingests raw files with exactly-once checkpoints and silver MERGEs into its own previous
state, so their output is not a function of the recorded input versions alone; their recorded
inputs and outputs are listed instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.audit import LINEAGE_TABLE
from lakehouse.audit.diff import comparable
from lakehouse.audit.lineage import load_config_snapshot
from lakehouse.audit.timetravel import check_version
from lakehouse.catalog import Catalog
from lakehouse.config import Config, local_path
from lakehouse.errors import LakehouseError, TableNotFoundError

REPRODUCIBLE_STAGES = ("gold", "attribute", "segment")


@dataclass(frozen=True)
class TableCheck:
    stage: str
    table: str
    recorded_version: int | str
    rows: int
    only_recorded: int
    only_rebuilt: int
    note: str = ""

    @property
    def identical(self) -> bool:
        return self.only_recorded == 0 and self.only_rebuilt == 0 and not self.note

    def line(self) -> str:
        v = self.recorded_version
        where = f"version {v}" if isinstance(v, int) else v
        if self.identical:
            return f"  {self.table} ({where}): identical, {self.rows:,} rows"
        return (
            f"  {self.table} ({where}): DIFFERENT: "
            f"{self.only_recorded:,} rows only in the recorded version, {self.only_rebuilt:,} "
            f"only in the rebuild{f' ({self.note})' if self.note else ''}"
        )


def run_lineage(spark: SparkSession, catalog: Catalog, run_id: str) -> list[dict[str, Any]]:
    """audit.lineage rows of one run (bounded: one row per dataset and stage)."""
    if not catalog.exists(spark, LINEAGE_TABLE):
        raise TableNotFoundError(
            f"{LINEAGE_TABLE} does not exist: no pipeline run has been recorded in this lake yet"
        )
    lineage = catalog.read(spark, LINEAGE_TABLE)
    rows = [r.asDict() for r in lineage.where(F.col("run_id") == run_id).collect()]
    if not rows:
        recent = [
            r["run_id"]
            for r in lineage.groupBy("run_id").agg(F.max("record_seq").alias("s"))
            .orderBy(F.col("s").desc()).limit(5).collect()
        ]
        raise LakehouseError(
            f"run {run_id} is not recorded in {LINEAGE_TABLE}; most recent runs: "
            f"{', '.join(recent) or 'none'}"
        )
    return sorted(rows, key=lambda r: r["record_seq"])


def run_config(config: Config, digest: str | None) -> tuple[Config, str]:
    """The config a run used (its saved snapshot, on this data root), and a note if not."""
    values = load_config_snapshot(config, digest) if digest else None
    if values is None:
        note = "" if digest == config.digest() else (
            f"config snapshot {str(digest)[:12]} not found: rebuilt with the current config"
        )
        return config, note
    merged = dict(values)
    merged["data_dir"] = config.data_dir
    return Config(config.env, merged, config.conf_dir, config.files, config.set_in), ""


def compare_outputs(recorded_df: DataFrame, rebuilt_df: DataFrame) -> tuple[int, int, str]:
    """(rows only in recorded, rows only in rebuilt, note) as multisets of whole rows."""
    if sorted(recorded_df.columns) != sorted(rebuilt_df.columns):
        return 0, 0, f"columns differ: {recorded_df.columns} vs {rebuilt_df.columns}"
    columns = recorded_df.columns
    recorded = comparable(recorded_df.select(columns))
    rebuilt = comparable(rebuilt_df.select(columns))
    return recorded.exceptAll(rebuilt).count(), rebuilt.exceptAll(recorded).count(), ""


def _rebuild(
    spark: SparkSession, stage: str, config: Config, scratch: Config, run_id: str,
    as_of: Any, inputs: dict[str, int],
) -> None:
    if stage == "gold":
        from lakehouse.gold import gold_options, run_gold

        run_gold(
            spark, config, run_id, as_of, input_versions=inputs, output_config=scratch,
            **gold_options(config),
        )
    else:
        from lakehouse.pipeline import STAGE_INPUTS, attribute_options
        from ml.attribution.job import attribute_journeys

        attribute_journeys(
            spark, config, run_id, as_of, **attribute_options(config), log_to_mlflow=False,
            input_versions={n: inputs.get(n) for n in STAGE_INPUTS["attribute"](config)},
            output_config=scratch,
        )


def reproduce_segment(
    spark: SparkSession, config: Config, run_id: str, as_of: Any, inputs: dict[str, int]
) -> TableCheck:
    """Train the run's segmentation again and compare its assignments with the logged model's."""
    import mlflow

    from ml.features import INPUT_TABLE, KEY
    from ml.segment_job import MODEL_ARTIFACT, segment_inputs, segment_options, train_segmentation
    from ml.tracking import use_experiment

    options = segment_options(config)
    use_experiment(config, options.experiment)
    runs = [
        r for r in mlflow.search_runs(
            experiment_names=[options.experiment],
            filter_string=f"tags.`lakehouse.run_id` = '{run_id}'", output_format="list",
        )
        if "chosen_k" in r.data.params
    ]
    if not runs:
        raise LakehouseError(
            f"run {run_id}: no segmentation run tagged lakehouse.run_id={run_id} in MLflow "
            f"experiment {options.experiment}; check mlflow.tracking_uri"
        )
    recorded_run = runs[0]
    _, feature_set, ks = segment_inputs(
        spark, Catalog(config), options, as_of, {INPUT_TABLE: inputs.get(INPUT_TABLE)}
    )
    features_df = feature_set.features_df.cache()
    try:
        rebuilt = train_segmentation(features_df, ks, options)
        recorded_model = mlflow.spark.load_model(f"runs:/{recorded_run.info.run_id}/{MODEL_ARTIFACT}")
        columns = [KEY, "segment_id", "segment_name"]
        recorded_df = recorded_model.transform(features_df).select(*columns)
        rebuilt_df = rebuilt.model.transform(features_df).select(*columns)
        only_recorded, only_rebuilt, note = compare_outputs(recorded_df, rebuilt_df)
    finally:
        features_df.unpersist()
    chosen_k = int(recorded_run.data.params["chosen_k"])
    if rebuilt.best.k != chosen_k:
        note = f"k {rebuilt.best.k} chosen, the run chose {chosen_k}"
    return TableCheck(
        "segment", f"{options.model_name} model (MLflow run {recorded_run.info.run_id})",
        f"k={chosen_k}", feature_set.rows, only_recorded, only_rebuilt, note,
    )


def reproduce_scratch_dir(config: Config) -> str:
    """Where reproduce rebuilds runs: one folder per run id under it."""
    return "/".join([config.data_dir.rstrip("/"), config.get("audit.scratch_dir").strip("/")])


def reproduce_run(
    spark: SparkSession, config: Config, run_id: str, echo: Callable[[str], None] = print,
    stages: tuple[str, ...] | None = None,
) -> list[TableCheck]:
    """Rebuild the reproducible stages of `run_id` (``stages``: only those); one TableCheck per
    output table (per model for segment)."""
    catalog = Catalog(config)
    rows = run_lineage(spark, catalog, run_id)
    stages = [s for s in dict.fromkeys(r["stage"] for r in rows) if stages is None or s in stages]
    scratch_root = f"{reproduce_scratch_dir(config)}/{run_id}"
    if config.is_local_data_dir:
        shutil.rmtree(local_path(scratch_root), ignore_errors=True)
    scratch = config.with_overrides({"data_dir": scratch_root})
    checks: list[TableCheck] = []
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage]
        head = next(r for r in mine if r["direction"] == "run")
        inputs = {
            r["dataset"]: int(r["version"]) for r in mine
            if r["direction"] == "input" and r["version"] is not None
        }
        outputs = {r["dataset"]: int(r["version"]) for r in mine if r["direction"] == "output"}
        if head["status"] != "COMPLETE":
            echo(f"stage {stage}: not reproduced, the run recorded it as {head['status']}")
            continue
        if stage not in REPRODUCIBLE_STAGES:
            echo(
                f"stage {stage}: not rebuilt (reproduce supports {', '.join(REPRODUCIBLE_STAGES)}"
                f"; {stage} depends on state beyond its input versions). Recorded inputs: "
                f"{_versions_text(inputs) or 'raw files'}; outputs: {_versions_text(outputs) or '-'}"
            )
            continue
        for name, version in inputs.items():
            check_version(spark, catalog, name, version)
        stage_config, note = run_config(config, head["config_digest"])
        # A segment run is retrained in memory (nothing is logged or written); the others are
        # rebuilt into the scratch root.
        target = "in memory" if stage == "segment" else f"into {scratch_root}"
        echo(
            f"stage {stage}: rebuilding from {_versions_text(inputs)} (as_of "
            f"{head['as_of'] or 'from the data'}) {target}"
            + (f" [{note}]" if note else "")
        )
        if stage == "segment":
            check = reproduce_segment(spark, stage_config, run_id, head["as_of"], inputs)
            echo(check.line())
            checks.append(check)
            continue
        _rebuild(spark, stage, stage_config, scratch, run_id, head["as_of"], inputs)
        scratch_catalog = Catalog(scratch)
        for name, version in outputs.items():
            if not scratch_catalog.exists(spark, name):
                continue  # written by the stage's bookkeeping, not by its builder
            rebuilt = scratch_catalog.read(spark, name)
            recorded = catalog.read(spark, name, version=check_version(spark, catalog, name, version))
            if "as_of" in rebuilt.columns:
                # channel_attribution keeps other dates' rows: compare the dates rebuilt.
                dates = [r["as_of"] for r in rebuilt.select("as_of").distinct().collect()]
                recorded = recorded.where(F.col("as_of").isin(dates))
            only_recorded, only_rebuilt, diff_note = compare_outputs(recorded, rebuilt)
            check = TableCheck(
                stage, name, version, rebuilt.count(), only_recorded, only_rebuilt, diff_note
            )
            echo(check.line())
            checks.append(check)
    return checks


def _versions_text(versions: dict[str, int]) -> str:
    return ", ".join(f"{n}@{v}" for n, v in sorted(versions.items()))
