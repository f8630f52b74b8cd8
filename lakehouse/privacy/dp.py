"""Differential privacy: vetted integer noise (OpenDP) and the privacy-budget ledger.

Why OpenDP's discrete Laplace and not ``numpy.random.laplace``: a floating-point Laplace
sample ``x + noise`` does not reach every double with the probability the maths assumes;
Mironov (2012) showed that many outputs are possible for one true value and impossible for its
neighbour, so one release can reveal which was true. OpenDP's ``make_laplace`` over integers
samples the discrete Laplace distribution exactly (``P(k) ~ exp(-|k| / scale)``) from a
cryptographically secure source, so every integer output is possible for every input.

A count histogram in which one customer changes at most ``l1_sensitivity`` in total (after
their contribution is bounded in Spark) is ``epsilon``-DP with ``scale = l1_sensitivity /
epsilon``; OpenDP's own privacy map confirms the epsilon before anything is sampled.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse.catalog import Catalog
from lakehouse.errors import PrivacyBudgetError

LEDGER = "audit.privacy_ledger"
LEDGER_SCHEMA = T.StructType(
    [
        T.StructField("release_id", T.StringType()),
        T.StructField("report", T.StringType()),
        T.StructField("epsilon", T.DoubleType()),
        T.StructField("delta", T.DoubleType()),
        T.StructField("mechanism", T.StringType()),
        T.StructField("l1_sensitivity", T.DoubleType()),
        T.StructField("released_at", T.TimestampType()),
    ]
)
MECHANISM = "opendp.discrete_laplace"
# Budgets compare sums of floats: allow for their rounding, never for a real overspend.
_TOLERANCE = 1e-9


def _opendp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def count_measurement(size: int, epsilon: float, l1_sensitivity: float):
    """OpenDP measurement adding discrete Laplace noise to a vector of ``size`` counts."""
    if epsilon <= 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a positive number, got {epsilon}")
    if l1_sensitivity <= 0:
        raise ValueError(f"l1_sensitivity must be positive, got {l1_sensitivity}")
    dp = _opendp()
    # 64-bit integers: a 32-bit count saturated under a small epsilon, and a cell beyond 2^31
    # (a week's revenue in EUR) was refused by OpenDP with its true value in the message.
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64"), size=size),
        dp.l1_distance(T="i64"),
        scale=float(l1_sensitivity) / float(epsilon),
    )
    spent = measurement.map(int(math.ceil(l1_sensitivity)))
    if spent > epsilon * (1 + 1e-6):
        raise ValueError(f"OpenDP accounts epsilon {spent} > {epsilon} for this release")
    return measurement


def noisy_counts(counts: Sequence[int], epsilon: float, l1_sensitivity: float) -> list[int]:
    """Counts with discrete Laplace noise: an ``epsilon``-DP release of the whole vector."""
    if not counts:
        return []
    return list(count_measurement(len(counts), epsilon, l1_sensitivity)([int(c) for c in counts]))


def discrete_laplace_cdf(k: float, scale: float) -> float:
    """CDF of the discrete Laplace distribution ``P(k) = (1-a)/(1+a) a^|k|``, ``a = e^-1/scale``.

    Written from the formula, independently of OpenDP, so the KS test checks the sampler.
    """
    a = math.exp(-1.0 / scale)
    k = math.floor(k)
    if k < 0:
        return a ** (-k) / (1 + a)
    return 1.0 - a ** (k + 1) / (1 + a)


# -- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    report: str
    epsilon: float
    l1_sensitivity: float
    delta: float = 0.0


def spent_epsilon(spark: SparkSession, catalog: Catalog) -> float:
    if not catalog.exists(spark, LEDGER):
        return 0.0
    return _ledger_sum(catalog.read(spark, LEDGER))


def _ledger_sum(ledger: DataFrame) -> float:
    """Epsilon the ledger's rows spent. A row whose epsilon is not a positive finite number was
    recorded by an older publish that then released nothing (OpenDP refused the value): it
    spent nothing, and summed as it is, -1 gave budget back and NaN or infinity made every
    later budget check pass or fail alike."""
    epsilon = F.col("epsilon")
    spent = F.when(~F.isnan(epsilon) & (epsilon > 0) & (epsilon < F.lit(float("inf"))), epsilon)
    return float(ledger.agg(F.sum(spent)).first()[0] or 0.0)


# Largest noise scale (l1_sensitivity / epsilon) released: OpenDP adds the noise to 64-bit
# integers and saturates, so a tiny epsilon (1e-300) would publish 2^63 - 1 in every cell;
# at this scale noise reaches that range with probability below e^-100.
MAX_NOISE_SCALE = 2**63 / 100


def check_budget(
    releases: Sequence[Release], spent: float, per_report: float, total: float
) -> None:
    """Raises PrivacyBudgetError (before anything is sampled or written) when over budget, or
    when an epsilon is so small that its noise would not fit the released integers."""
    for what, value in (("privacy.epsilon_per_report", per_report),
                        ("privacy.epsilon_total", total),
                        *((f"the epsilon of report {r.report}", r.epsilon) for r in releases)):
        # A negative epsilon was recorded before OpenDP refused it and gave budget back; a NaN
        # made every later comparison false, so no budget was ever exceeded again.
        if not (math.isfinite(value) and value > 0):
            raise PrivacyBudgetError(f"{what} must be a positive number, got {value!r}; "
                                     f"nothing was published")
    for r in releases:
        if r.l1_sensitivity / r.epsilon > MAX_NOISE_SCALE:
            raise PrivacyBudgetError(
                f"report {r.report}: epsilon {r.epsilon:g} gives noise of scale "
                f"{r.l1_sensitivity / r.epsilon:.3g}, beyond what a 64-bit count holds; use an "
                f"epsilon of at least {r.l1_sensitivity / MAX_NOISE_SCALE:.3g}; nothing was "
                f"published"
            )
        if r.epsilon > per_report + _TOLERANCE:
            raise PrivacyBudgetError(
                f"report {r.report} asks for epsilon {r.epsilon:g}, above the per-report budget "
                f"{per_report:g} (privacy.epsilon_per_report); nothing was published"
            )
    asked = sum(r.epsilon for r in releases)
    if spent + asked > total + _TOLERANCE:
        raise PrivacyBudgetError(
            f"releasing {', '.join(r.report for r in releases)} needs epsilon {asked:g} but only "
            f"{max(total - spent, 0.0):g} of the total budget {total:g} is left "
            f"(privacy.epsilon_total, spent {spent:g} per {LEDGER}); nothing was published"
        )


def record_releases(
    spark: SparkSession, catalog: Catalog, releases: Sequence[Release], release_id: str | None = None
) -> tuple[str, int]:
    """Append the releases to the ledger (one commit); returns the release id and the ledger
    version that commit made."""
    from delta.tables import DeltaTable

    from lakehouse.silver.io import ensure_table

    release_id = release_id or uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        (release_id, r.report, float(r.epsilon), float(r.delta), MECHANISM,
         float(r.l1_sensitivity), now)
        for r in releases
    ]
    ensure_table(spark, catalog, LEDGER, LEDGER_SCHEMA)
    tag = f"privacy ledger: release {release_id}"
    (spark.createDataFrame(rows, LEDGER_SCHEMA).write.format("delta").mode("append")
     .option("userMetadata", tag).save(catalog.path(LEDGER)))
    history = DeltaTable.forPath(spark, catalog.path(LEDGER)).history()
    version = history.where(F.col("userMetadata") == tag).agg(F.max("version")).first()[0]
    return release_id, int(version)


def confirm_within_budget(
    spark: SparkSession, catalog: Catalog, release_id: str, version: int, total: float
) -> None:
    """Raises PrivacyBudgetError when the ledger, up to and including the commit that recorded
    ``release_id`` (``version``), holds more than ``total``.

    check_budget read the ledger before this release was recorded; a publish on another machine
    (an object-store data root has no lock) may have recorded its own in between, and both
    would release. Commits are ordered: the releases whose ledger prefix fits the budget are
    released, a later one is not (its epsilon stays recorded: spending is never given back).
    """
    ledger = catalog.read(spark, LEDGER, version=version)
    spent = _ledger_sum(ledger)
    if spent > total + _TOLERANCE:
        raise PrivacyBudgetError(
            f"another publish recorded its spending at the same time: {LEDGER} holds epsilon "
            f"{spent:g} of the total budget {total:g} up to release {release_id}, which stays "
            f"recorded as spent; nothing was published"
        )


def unrecorded_releases(
    spark: SparkSession, catalog: Catalog, tables: Sequence[str]
) -> list[tuple[str, str]]:
    """(table, release id) of every release a published table holds that the ledger does not:
    the ledger is written before the reports, so any is a ledger deleted, replaced or put
    back by hand, and the budget it recorded as spent is unknown."""
    recorded: set[str] = set()
    if catalog.exists(spark, LEDGER):
        recorded = {r[0] for r in catalog.read(spark, LEDGER).select("release_id").distinct()
                    .collect()}
    missing = []
    for table in tables:
        if catalog.exists(spark, table):
            held = catalog.read(spark, table).select("release_id").distinct().collect()
            missing += [(table, r[0]) for r in held if r[0] not in recorded]
    return missing
