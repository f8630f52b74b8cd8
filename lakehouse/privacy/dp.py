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

from pyspark.sql import SparkSession
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
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int), size=size),
        dp.l1_distance(T=int),
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
    total = catalog.read(spark, LEDGER).agg(F.sum("epsilon").alias("e")).first()["e"]
    return float(total or 0.0)


# Largest noise scale (l1_sensitivity / epsilon) released: OpenDP adds the noise to 32-bit
# integers and saturates, so a tiny epsilon (1e-300) published 2147483647 in every cell;
# at this scale noise reaches that range with probability below e^-100.
MAX_NOISE_SCALE = 2**31 / 100


def check_budget(
    releases: Sequence[Release], spent: float, per_report: float, total: float
) -> None:
    """Raises PrivacyBudgetError (before anything is sampled or written) when over budget, or
    when an epsilon is so small that its noise would not fit the released integers."""
    for r in releases:
        if r.l1_sensitivity / r.epsilon > MAX_NOISE_SCALE:
            raise PrivacyBudgetError(
                f"report {r.report}: epsilon {r.epsilon:g} gives noise of scale "
                f"{r.l1_sensitivity / r.epsilon:.3g}, beyond what a 32-bit count holds; use an "
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
) -> str:
    """Append the releases to the ledger (one commit); returns the release id."""
    from lakehouse.silver.io import append

    release_id = release_id or uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        (release_id, r.report, float(r.epsilon), float(r.delta), MECHANISM,
         float(r.l1_sensitivity), now)
        for r in releases
    ]
    append(spark, catalog, LEDGER, spark.createDataFrame(rows, LEDGER_SCHEMA))
    return release_id
