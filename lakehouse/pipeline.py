"""Pipeline stages and their order. Each stage: (spark, config, context) -> summary lines."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pyspark.sql import SparkSession

from lakehouse.config import Config
from lakehouse.errors import LakehouseError

STAGE_ORDER = ("bronze", "silver", "gold", "segment", "attribute", "audit")


@dataclass
class RunContext:
    """What one pipeline run shares between its stages."""

    run_id: str
    as_of: date | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


StageFn = Callable[[SparkSession, Config, RunContext], list[str]]


def _bronze(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.bronze import run_bronze
    from lakehouse.sources import load_sources

    results = run_bronze(spark, config, load_sources(config), ctx.run_id)
    lines = [
        f"  bronze.{r.source:<14} skipped: {r.skipped_reason}"
        if r.skipped_reason
        else f"  bronze.{r.source:<14} +{r.rows_added:>10,} rows  {r.malformed_added:>6,} malformed"
        f" kept  total {r.rows_total:>11,}  {r.seconds:6.1f}s"
        for r in results
    ]
    total = sum(r.rows_added for r in results)
    bad = sum(r.malformed_added for r in results)
    return [*lines, f"bronze: {total:,} rows landed, {bad:,} malformed rows kept"]


def _silver(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.silver import run_silver

    return run_silver(spark, config, ctx.run_id)


def _gold(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from lakehouse.gold import gold_options, run_gold

    return run_gold(spark, config, ctx.run_id, ctx.as_of, **gold_options(config))


def _attribute(spark: SparkSession, config: Config, ctx: RunContext) -> list[str]:
    from ml.attribution.job import run_attribute

    options = config.get("attribution")
    return run_attribute(
        spark, config, ctx.run_id, ctx.as_of,
        order=options["order"] or None,
        bootstrap=options["bootstrap"],
        seed=options["seed"],
        ci_level=options["ci_level"],
        half_life_days=options["half_life_days"],
        half_life_touches=options["half_life_touches"],
        position_weights=tuple(options["position_weights"]),
    )


def registered_stages() -> dict[str, StageFn]:
    """Stages this version implements, by name (later stages register here as they land)."""
    return {"bronze": _bronze, "silver": _silver, "gold": _gold, "attribute": _attribute}


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
            f"(available: {', '.join([s for s in STAGE_ORDER if s in stages] + ['all'])})"
        )
    echo(f"run {ctx.run_id}: {' -> '.join(chosen)} (env {config.env}, data {config.data_dir})")
    for name in chosen:
        started = time.monotonic()
        for line in stages[name](spark, config, ctx):
            echo(line)
        echo(f"[{name}] done in {time.monotonic() - started:.1f}s")
