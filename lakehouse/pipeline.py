"""Pipeline stages and their order. Each stage: (spark, config, context) -> summary lines."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import SparkSession

from lakehouse.config import Config
from lakehouse.errors import ConfigError, LakehouseError

STAGE_ORDER = ("bronze", "silver", "gold", "segment", "attribute", "audit")
# Stages run on their own, never as part of `all` (retention deletes data: a deliberate act).
ON_DEMAND_STAGES = ("retention",)


@dataclass
class RunContext:
    """What one pipeline run shares between its stages.

    ``as_of_versions`` / ``as_of_timestamps`` pin input tables (TABLE -> version / instant),
    ``as_of_timestamp`` pins every input of the run to the instant given; stages that only read
    their inputs (gold, attribute) then read those versions. ``input_versions`` is set by
    run_stages before each stage: the exact version of each declared input the stage reads
    (the same numbers go to audit.lineage).
    """

    run_id: str
    as_of: date | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    as_of_versions: dict[str, int] = field(default_factory=dict)
    as_of_timestamps: dict[str, datetime] = field(default_factory=dict)
    as_of_timestamp: datetime | None = None
    input_versions: dict[str, int] = field(default_factory=dict)

    @property
    def has_pins(self) -> bool:
        return bool(self.as_of_versions or self.as_of_timestamps or self.as_of_timestamp)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


StageFn = Callable[[SparkSession, Config, RunContext], list[str]]


def _bronze(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.bronze import run_bronze
    from lakehouse.sources import load_sources

    sources = load_sources(config)
    results = run_bronze(spark, config, sources, ctx.run_id)
    lines = []
    for r in results:
        lines.append(
            f"  bronze.{r.source:<14} skipped: {r.skipped_reason}"
            if r.skipped_reason
            else f"  bronze.{r.source:<14} +{r.rows_added:>10,} rows  {r.malformed_added:>6,} "
            f"malformed kept  total {r.rows_total:>11,}  {r.seconds:6.1f}s"
        )
        if r.ignored_files:
            lines.append(
                f"  bronze.{r.source:<14} ignored {len(r.ignored_files)} file(s) not named "
                f"{sources[r.source].file_glob}: {_first_names(r.ignored_files)} (rename to "
                f"deliver them)"
            )
        if r.unreadable_files:
            lines.append(
                f"  bronze.{r.source:<14} could not read {len(r.unreadable_files)} file(s): "
                f"{', '.join(r.unreadable_files)} (a link to a file that is not there: deliver "
                f"the file itself)"
            )
        if r.unparsed_files:
            lines.append(
                f"  bronze.{r.source:<14} warning: no line of {len(r.unparsed_files)} file(s) "
                f"parsed: {_first_names(r.unparsed_files)} (another format or other columns "
                f"than sources.yaml declares? every line is kept and silver quarantines it)"
            )
        if r.suppressed_rows:
            lines.append(
                f"  bronze.{r.source:<14} {r.suppressed_rows:,} row(s) of erased people not "
                f"landed (audit.erasure_suppression)"
                + (f"; still in raw file(s) {', '.join(r.suppressed_left_in)}: run "
                   f"`lakehouse erase` for them again to remove the lines"
                   if r.suppressed_left_in else "; their lines removed from the raw files")
            )
    total = sum(r.rows_added for r in results)
    bad = sum(r.malformed_added for r in results)
    return [*lines, f"bronze: {total:,} rows landed, {bad:,} malformed rows kept"]


def _first_names(names: tuple[str, ...], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _silver(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.silver import run_silver

    return run_silver(spark, config, ctx.run_id)


def _gold(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.gold import gold_options, run_gold

    return run_gold(
        spark, config, ctx.run_id, ctx.as_of, input_versions=ctx.input_versions,
        **gold_options(config),
    )


def attribute_options(config: Config) -> dict[str, Any]:
    """run_attribute's keyword arguments from the `attribution.*` config keys, checked.

    Raises ConfigError naming the key, so a `run all` stops before bronze, not after gold.
    """
    from ml.attribution.heuristics import check_half_life, check_position_weights

    options = config.get("attribution")
    checks: dict[str, Callable[[Any], object]] = {
        "order": _check_order_or_auto,
        "ci_level": _check_ci_level,
        "half_life_days": check_half_life,
        "half_life_touches": check_half_life,
        "position_weights": check_position_weights,
    }
    for key, check in checks.items():
        try:
            check(options[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'attribution.{key}': {exc}") from None
    return {
        "order": options["order"] or None,
        "bootstrap": options["bootstrap"],
        "seed": options["seed"],
        "ci_level": options["ci_level"],
        "half_life_days": options["half_life_days"],
        "half_life_touches": options["half_life_touches"],
        "position_weights": tuple(options["position_weights"]),
    }


def _check_order_or_auto(order: int | None) -> None:
    from ml.attribution.markov import check_order

    if order not in (0, None):  # 0 or empty: chosen automatically
        try:
            check_order(order)
        except ValueError as exc:
            raise ValueError(f"{exc} (or 0: chosen automatically)") from None


def _check_ci_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, int | float):
        raise TypeError(f"confidence level must be a number, got {level!r}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be between 0 and 1 (exclusive), got {level!r}")


def _check_segment_options(config: Config) -> None:
    from ml.segment_job import segment_options

    segment_options(config)


def _check_silver_config(config: Config) -> None:
    from lakehouse.silver.job import check_silver_config

    check_silver_config(config)


def _check_gold_options(config: Config) -> None:
    from lakehouse.gold import gold_options

    gold_options(config)


# Each stage's config keys, checked for every chosen stage before the first one runs.
STAGE_OPTION_CHECKS: dict[str, Callable[[Config], object]] = {
    "silver": _check_silver_config,
    "gold": _check_gold_options,
    "segment": _check_segment_options,
    "attribute": attribute_options,
}


def _attribute(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from ml.attribution.job import run_attribute

    return run_attribute(
        spark, config, ctx.run_id, ctx.as_of,
        **attribute_options(config),
        # Explicit None for a table that did not exist: the stage must not read a newer one.
        input_versions={
            name: ctx.input_versions.get(name) for name in STAGE_INPUTS["attribute"](config)
        },
    )


def _segment(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from ml.segment_job import run_segment

    return run_segment(
        spark, config, ctx.run_id, ctx.as_of,
        input_versions={
            name: ctx.input_versions.get(name) for name in STAGE_INPUTS["segment"](config)
        },
    )


def _retention(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.privacy.retention import run_retention

    return run_retention(spark, config, ctx)


def _audit(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.audit.job import run_audit

    return run_audit(spark, config, ctx)


def _silver_inputs(config: Config) -> list[str]:
    from lakehouse.sources import load_sources

    return [s.bronze_table for s in load_sources(config).values()] + ["audit.stage_progress"]


def _gold_inputs(config: Config) -> list[str]:
    from lakehouse.gold import SILVER_INPUTS

    return [f"silver.{name}" for name in SILVER_INPUTS]


def _audit_inputs(config: Config) -> list[str]:
    from lakehouse.audit.job import audit_inputs

    return audit_inputs(config)


def _raw_folders(config: Config, stage: str) -> list[str]:
    if stage != "bronze":
        return []
    from lakehouse.catalog import Catalog
    from lakehouse.sources import load_sources

    catalog = Catalog(config)
    return [catalog.raw_dir(s.raw_dir) for s in load_sources(config).values()]


# Tables each stage reads (for lineage and --as-of-version pins); a stage that is not listed
# is recorded with its outputs only. Bronze reads raw folders (see _raw_folders).
STAGE_INPUTS: dict[str, Callable[[Config], list[str]]] = {
    "bronze": lambda config: [],
    "silver": _silver_inputs,
    "gold": _gold_inputs,
    "segment": lambda config: ["gold.customer_360"],
    "attribute": lambda config: ["gold.journeys", "gold.customer_segments"],
    "audit": _audit_inputs,
}
# Stages that only read their inputs, so reading them at a pinned version makes sense.
PINNABLE_STAGES = ("gold", "segment", "attribute")


def registered_stages() -> dict[str, StageFn]:
    """Stages this version implements, by name (later stages register here as they land)."""
    return {
        "bronze": _bronze, "silver": _silver, "gold": _gold, "segment": _segment,
        "attribute": _attribute, "audit": _audit, "retention": _retention,
    }


def check_pins(config: Config, chosen: list[str], ctx: RunContext) -> None:
    """Pins only for stages that just read; every pinned table must be read by one of them."""
    if not ctx.has_pins:
        return
    unpinnable = [s for s in chosen if s not in PINNABLE_STAGES]
    if unpinnable:
        raise LakehouseError(
            f"--as-of-version / --as-of-timestamp apply to stages that only read their inputs "
            f"({', '.join(PINNABLE_STAGES)}), not to {', '.join(unpinnable)}: run those stages "
            f"without pins"
        )
    readable = {t for s in chosen for t in STAGE_INPUTS.get(s, lambda c: [])(config)}
    stray = sorted((set(ctx.as_of_versions) | set(ctx.as_of_timestamps)) - readable)
    if stray:
        raise LakehouseError(
            f"pinned table(s) {', '.join(stray)} are not read by stage(s) {', '.join(chosen)} "
            f"(they read: {', '.join(sorted(readable))})"
        )


def run_stages(
    spark: SparkSession, config: Config, stage: str, ctx: RunContext, echo: Callable[[str], None]
) -> None:
    stages = registered_stages()
    if stage == "all":
        chosen = [s for s in STAGE_ORDER if s in stages]
    elif stage in stages:
        chosen = [stage]
    else:
        raise LakehouseError(
            f"stage '{stage}' is not implemented in this version yet "
            f"(available: {', '.join([s for s in (*STAGE_ORDER, *ON_DEMAND_STAGES) if s in stages] + ['all'])})"
        )
    check_pins(config, chosen, ctx)
    for name in chosen:
        STAGE_OPTION_CHECKS.get(name, lambda c: None)(config)
    from lakehouse.locks import pipeline_lock

    with pipeline_lock(config, ctx.run_id):
        echo(f"run {ctx.run_id}: {' -> '.join(chosen)} (env {config.env}, "
             f"data {config.data_dir})")
        if chosen == ["gold"] and not ctx.has_pins:
            from lakehouse.silver.job import sources_with_unread_bronze

            unread = sources_with_unread_bronze(spark, config)
            if unread:
                # Not refused: gold over the silver there is is still a consistent snapshot.
                echo(f"warning: bronze holds rows silver has not read yet ({', '.join(unread)}): "
                     f"gold leaves them out; run `lakehouse run silver` first to count them")
        for name in chosen:
            started = time.monotonic()
            for line in _run_recorded(spark, config, name, stages[name], ctx):
                echo(line)
            echo(f"[{name}] done in {time.monotonic() - started:.1f}s")


def _run_recorded(
    spark: SparkSession, config: Config, name: str, stage: StageFn, ctx: RunContext
) -> list[str]:
    """Run one stage inside its lineage record (audit.lineage + OpenLineage events); every
    Delta commit it makes carries the run id in its userMetadata."""
    from lakehouse.audit.lineage import record_stage
    from lakehouse.audit.timetravel import pinned_versions
    from lakehouse.catalog import Catalog

    declared = STAGE_INPUTS.get(name, lambda c: [])(config)
    pins = {}
    if name in PINNABLE_STAGES and ctx.has_pins:
        pins = pinned_versions(
            spark, Catalog(config), declared, ctx.as_of_versions, ctx.as_of_timestamps,
            ctx.as_of_timestamp,
        )
    inputs = {table: pins.get(table) for table in declared}
    with record_stage(
        spark, config, ctx.run_id, name, inputs, _raw_folders(config, name), ctx.as_of
    ) as record:
        ctx.input_versions = dict(record.inputs)
        try:
            return stage(spark, config, ctx)
        finally:
            ctx.input_versions = {}
